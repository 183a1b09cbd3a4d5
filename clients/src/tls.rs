//! TLS for a client channel: [`ClientTls`] says whom to trust and which certificate to
//! present; [`TlsConnector`] is the connector tonic's endpoint uses with it (TCP, then a
//! rustls handshake that must agree on HTTP/2 by ALPN `h2`).
//!
//! The name checked against the server's certificate is, in order: the one given
//! (`USER_SERVICE_TLS_NAME`), the host of a `dns:///name:port` target (its endpoints are pod
//! IPs, but the certificate names the Service), or the endpoint URL's own host.
//!
//! Loading the files (the CA bundle, a watched client certificate) is the caller's: this
//! crate takes rustls values and reads no file. The roots are asked for at each new
//! connection, so a caller that re-reads its CA bundle gets new connections checked
//! against the new one; open connections stay.

use std::{
    fmt, io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::{
    ClientConfig, RootCertStore, client::ResolvesClientCert, crypto::CryptoProvider, pki_types::ServerName,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::target::Target;

/// Where the trusted roots come from, asked at each new connection: a fixed set, or one the
/// caller keeps current (a CA bundle file re-read when it changes). A new `Arc` means new
/// roots.
pub type RootsSource = Arc<dyn Fn() -> Arc<RootCertStore> + Send + Sync>;

/// How a channel speaks TLS. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    settings: Arc<Settings>,
    /// The name the server's certificate must carry; `None`: the target's host.
    server_name: Option<ServerName<'static>>,
}

struct Settings {
    provider: Arc<CryptoProvider>,
    roots: RootsSource,
    identity: Option<Arc<dyn ResolvesClientCert>>,
    /// The configuration, and the roots it was made with: made again when they change.
    built: Mutex<(Arc<RootCertStore>, Arc<ClientConfig>)>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .field("client_certificate", &self.settings.identity.is_some())
            .finish()
    }
}

impl ClientTls {
    /// Trusts the roots `roots` gives; presents `identity` as the client certificate when
    /// there is one (mutual TLS); checks `server_name` instead of the target's host when given.
    pub fn new(
        provider: Arc<CryptoProvider>,
        roots: RootsSource,
        identity: Option<Arc<dyn ResolvesClientCert>>,
        server_name: Option<&str>,
    ) -> Result<Self, rustls::Error> {
        let server_name = server_name
            .map(|name| ServerName::try_from(name.to_owned()))
            .transpose()
            .map_err(|_| rustls::Error::General("not a valid TLS server name".into()))?;
        let current = roots();
        let config = client_config(&provider, current.clone(), identity.clone())?;
        Ok(Self {
            settings: Arc::new(Settings {
                provider,
                roots,
                identity,
                built: Mutex::new((current, config)),
            }),
            server_name,
        })
    }

    /// Trusts the fixed `roots`.
    pub fn with_roots(
        provider: Arc<CryptoProvider>,
        roots: RootCertStore,
        identity: Option<Arc<dyn ResolvesClientCert>>,
        server_name: Option<&str>,
    ) -> Result<Self, rustls::Error> {
        let roots = Arc::new(roots);
        Self::new(provider, Arc::new(move || roots.clone()), identity, server_name)
    }

    /// For the endpoints of `target`: a `dns:///` target's endpoints are checked against
    /// its host name unless a name was given.
    pub fn for_target(&self, target: &Target) -> Self {
        let mut tls = self.clone();
        if let (None, Target::Dns { host, .. }) = (&tls.server_name, target) {
            tls.server_name = ServerName::try_from(host.clone()).ok();
        }
        tls
    }

    /// The connector for the endpoint at `uri`.
    pub fn connector(&self, uri: &Uri) -> TlsConnector {
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let server_name = self
            .server_name
            .clone()
            .or_else(|| ServerName::try_from(host.to_owned()).ok());
        TlsConnector {
            settings: self.settings.clone(),
            server_name,
        }
    }
}

impl Settings {
    /// The configuration for the next connection, made again if the roots changed.
    fn config(&self) -> Arc<ClientConfig> {
        let roots = (self.roots)();
        let mut built = self.built.lock().expect("never poisoned");
        if !Arc::ptr_eq(&built.0, &roots) {
            match client_config(&self.provider, roots.clone(), self.identity.clone()) {
                Ok(config) => *built = (roots, config),
                Err(error) => tracing::warn!(%error, "cannot use the new CA roots; keeping the current ones"),
            }
        }
        built.1.clone()
    }
}

fn client_config(
    provider: &Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    identity: Option<Arc<dyn ResolvesClientCert>>,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => builder.with_client_cert_resolver(identity),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Connects to an endpoint over TLS; see the module documentation.
#[derive(Clone)]
pub struct TlsConnector {
    settings: Arc<Settings>,
    server_name: Option<ServerName<'static>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = BoxFuture<Result<Self::Response, io::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = tokio_rustls::TlsConnector::from(self.settings.config());
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let server_name = server_name
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no TLS server name"))?;
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(server_name, tcp).await?;
            if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the server did not agree to HTTP/2 (ALPN h2)",
                ));
            }
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_roots_make_a_new_configuration_for_the_next_connections() {
        let current = Arc::new(Mutex::new(Arc::new(RootCertStore::empty())));
        let source: RootsSource = {
            let current = current.clone();
            Arc::new(move || current.lock().unwrap().clone())
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = ClientTls::new(provider, source, None, None).unwrap();
        let first = tls.settings.config();
        assert!(
            Arc::ptr_eq(&first, &tls.settings.config()),
            "the same roots: the same configuration"
        );

        *current.lock().unwrap() = Arc::new(RootCertStore::empty());
        assert!(
            !Arc::ptr_eq(&first, &tls.settings.config()),
            "new roots: a new configuration"
        );
    }

    #[test]
    fn a_dns_target_is_checked_for_its_name_unless_one_is_given() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let target: Target = "dns:///user-headless.meshwork.svc.cluster.local:50052"
            .parse()
            .unwrap();
        let uri: Uri = "http://10.0.0.7:50052".parse().unwrap();
        let resolved = ClientTls::with_roots(provider.clone(), RootCertStore::empty(), None, None).unwrap();
        let connector = resolved.for_target(&target).connector(&uri);
        assert_eq!(
            connector.server_name,
            Some(ServerName::try_from("user-headless.meshwork.svc.cluster.local").unwrap())
        );
        let named =
            ClientTls::with_roots(provider, RootCertStore::empty(), None, Some("user.example")).unwrap();
        let connector = named.for_target(&target).connector(&uri);
        assert_eq!(
            connector.server_name,
            Some(ServerName::try_from("user.example").unwrap())
        );
    }
}
