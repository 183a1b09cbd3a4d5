//! TLS for a client channel: [`ClientTls`] says whom to trust and which certificate to
//! present; [`TlsConnector`] is the connector tonic's endpoint uses with it (TCP, then a
//! rustls handshake that must agree on HTTP/2 by ALPN `h2`).
//!
//! The name checked against the server's certificate is, in order: the one given
//! (`USER_SERVICE_TLS_NAME`), the host of a `dns:///name:port` target (its endpoints are pod
//! IPs, but the certificate names the Service), or the endpoint URL's own host.
//!
//! Loading the files (the CA bundle, a watched client certificate) is the caller's: this
//! crate takes rustls values and reads no file.

use std::{
    fmt, io,
    pin::Pin,
    sync::Arc,
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

/// How a channel speaks TLS. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    /// The name the server's certificate must carry; `None`: the target's host.
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .field(
                "client_certificate",
                &self.config.client_auth_cert_resolver.has_certs(),
            )
            .finish()
    }
}

impl ClientTls {
    /// Trusts `roots`; presents `identity` as the client certificate when there is one
    /// (mutual TLS); checks `server_name` instead of the target's host when given.
    pub fn new(
        provider: Arc<CryptoProvider>,
        roots: RootCertStore,
        identity: Option<Arc<dyn ResolvesClientCert>>,
        server_name: Option<&str>,
    ) -> Result<Self, rustls::Error> {
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let mut config = match identity {
            Some(identity) => builder.with_client_cert_resolver(identity),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let server_name = server_name
            .map(|name| ServerName::try_from(name.to_owned()))
            .transpose()
            .map_err(|_| rustls::Error::General("not a valid TLS server name".into()))?;
        Ok(Self {
            config: Arc::new(config),
            server_name,
        })
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
            tls: tokio_rustls::TlsConnector::from(self.config.clone()),
            server_name,
        }
    }
}

/// Connects to an endpoint over TLS; see the module documentation.
#[derive(Clone)]
pub struct TlsConnector {
    tls: tokio_rustls::TlsConnector,
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
        let tls = self.tls.clone();
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
