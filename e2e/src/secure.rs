//! A secured mesh for the tests: a CA and certificates written to a temporary directory, the
//! settings that switch TLS, mutual TLS and authentication on, and TLS clients.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use meshwork_clients::ClientTls;
use rustls::client::ResolvesClientCert;
use serde_json::Value;
use tempfile::TempDir;
use tonic::{
    Request,
    transport::{Channel, Endpoint},
};

use crate::{
    Spawn,
    pki::{self, Ca, Identity, LOCAL_NAMES},
};

/// The issuer and audience every test token carries.
pub const ISSUER: &str = "https://issuer.meshwork.test";
pub const AUDIENCE: &str = "meshwork";

/// A CA, a server and a client certificate it signed, and an HS256 secret, as files.
pub struct Pki {
    pub dir: TempDir,
    pub ca: Ca,
    pub ca_path: PathBuf,
    /// The servers' certificate (localhost, 127.0.0.1), and its key.
    pub server: (PathBuf, PathBuf),
    /// A client certificate signed by the CA.
    pub client: (PathBuf, PathBuf),
    pub secret: Vec<u8>,
    pub secret_path: PathBuf,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir can be made");
        let ca = Ca::new("Meshwork test CA");
        let ca_path = ca.write(&dir.path().join("ca.pem"));
        let server = ca.issue("server", &LOCAL_NAMES).write(dir.path(), "server");
        let client = ca.issue("client", &[]).write(dir.path(), "client");
        let secret = b"a test secret of at least thirty-two bytes".to_vec();
        let secret_path = dir.path().join("jwt-secret");
        std::fs::write(&secret_path, &secret).expect("the secret can be written");
        Self {
            dir,
            ca,
            ca_path,
            server,
            client,
            secret,
            secret_path,
        }
    }

    /// Another certificate of this CA, written as `<name>.pem`.
    pub fn issue(&self, name: &str) -> Identity {
        let identity = self.ca.issue(name, &LOCAL_NAMES);
        identity.write(self.dir.path(), name);
        identity
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `spawn` with TLS on its gRPC port.
    pub fn tls(&self, spawn: Spawn) -> Spawn {
        spawn
            .env("TLS_CERT", path_text(&self.server.0))
            .env("TLS_KEY", path_text(&self.server.1))
    }

    /// `spawn` with mutual TLS: TLS, and a client certificate of this CA required.
    pub fn mutual_tls(&self, spawn: Spawn) -> Spawn {
        self.tls(spawn).env("TLS_CLIENT_CA", path_text(&self.ca_path))
    }

    /// `spawn` with HS256 authentication on.
    pub fn auth(&self, spawn: Spawn) -> Spawn {
        spawn
            .env("AUTH_JWT_SECRET_FILE", path_text(&self.secret_path))
            .env("AUTH_ISSUER", ISSUER)
            .env("AUTH_AUDIENCE", AUDIENCE)
    }

    /// A valid token for `subject` with `roles`.
    pub fn token(&self, subject: &str, roles: &[&str]) -> String {
        pki::hs256(&self.secret, &pki::claims(subject, roles, ISSUER, AUDIENCE))
    }

    /// A token with these claims, signed with the secret.
    pub fn sign(&self, claims: &Value) -> String {
        pki::hs256(&self.secret, claims)
    }

    /// A channel over TLS trusting this CA, presenting the client certificate.
    pub async fn channel(&self, addr: SocketAddr) -> Channel {
        tls_channel(addr, &self.ca_path, Some(&self.client))
            .await
            .expect("a TLS connection with the right CA and a client certificate")
    }
}

pub fn path_text(path: &Path) -> String {
    path.to_str().expect("temp paths are UTF-8").to_owned()
}

/// The TLS settings of a client: trust `ca`, present `client` (certificate, key) if given.
pub fn client_tls(ca: &Path, client: Option<&(PathBuf, PathBuf)>) -> ClientTls {
    let roots = meshwork::tls::read_roots(ca).expect("a CA bundle");
    let identity = client.map(|(cert, key)| {
        meshwork::tls::WatchedIdentity::load(cert, key).expect("a client certificate")
            as Arc<dyn ResolvesClientCert>
    });
    ClientTls::with_roots(meshwork::tls::provider(), roots, identity, None).expect("valid TLS settings")
}

/// Connects over TLS to `addr` (checked as 127.0.0.1).
pub async fn tls_channel(
    addr: SocketAddr,
    ca: &Path,
    client: Option<&(PathBuf, PathBuf)>,
) -> Result<Channel, tonic::transport::Error> {
    let uri: http::Uri = format!("https://{addr}").parse().expect("a URL");
    let connector = client_tls(ca, client).connector(&uri);
    Endpoint::from(uri).connect_with_connector(connector).await
}

/// A TLS channel that counts the connections it opens: whether one stayed open.
pub fn counting_tls_channel(addr: SocketAddr, tls: &ClientTls, opened: Arc<AtomicUsize>) -> Channel {
    let uri: http::Uri = format!("https://{addr}").parse().expect("a URL");
    let mut connector = tls.connector(&uri);
    let connect = tower::service_fn(move |uri: http::Uri| {
        opened.fetch_add(1, Ordering::SeqCst);
        tower::Service::call(&mut connector, uri)
    });
    Endpoint::from(uri).connect_with_connector_lazy(connect)
}

/// `message` with `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}").parse().expect("a token is header text");
    request.metadata_mut().insert("authorization", value);
    request
}
