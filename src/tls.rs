//! TLS for the gRPC port (rustls, in the server's own accept loop) and the files it is made
//! of: a certificate chain and key that are re-read when they change, and CA bundles.
//!
//! Rotation: [`WatchedIdentity`] reads both files every second (`reload.rs` says why it
//! polls) and compares their contents. A new pair is used by the
//! handshakes after it was read; open connections keep the one they started with. A pair
//! that does not load (a key that does not match its certificate, half of a rotation seen)
//! is logged and tried again at the next look, the old one staying in use meanwhile.
//!
//! The same [`WatchedIdentity`] is a client certificate too (Order presents its own to User).
//! CA bundles ([`WatchedRoots`]: `TLS_CLIENT_CA`, `USER_SERVICE_CA`) are watched the same
//! way, so a CA renewed in the same Secret needs no restart either.

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use rustls::{
    RootCertStore,
    client::ResolvesClientCert,
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_util::sync::CancellationToken;

/// Why TLS material could not be loaded; the message names the file, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} holds no PEM {what}")]
    NoPem { path: PathBuf, what: &'static str },
    #[error("{path}: {source}")]
    Rustls { path: PathBuf, source: rustls::Error },
    #[error("client CA {path}: {message}")]
    Verifier { path: PathBuf, message: String },
}

/// The one crypto provider of every TLS connection (ring), passed explicitly: no
/// process-wide default to install or to race on.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate of a PEM file (a chain, or a CA bundle): at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certificates(path, &read(path)?)
}

fn parse_certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    match certificates.is_empty() {
        true => Err(TlsError::NoPem {
            path: path.to_owned(),
            what: "certificate",
        }),
        false => Ok(certificates),
    }
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    parse_private_key(path, &read(path)?)
}

fn parse_private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| TlsError::NoPem {
        path: path.to_owned(),
        what: "private key",
    })
}

/// A CA bundle as trust roots, read once (see [`WatchedRoots`] for one kept current).
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    parse_roots(path, &read(path)?)
}

/// A certificate chain and its key, from two PEM files that are watched for changes.
pub struct WatchedIdentity {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Loaded>,
}

/// What was last loaded, and the file contents it was loaded from.
struct Loaded {
    key: Arc<CertifiedKey>,
    files: (Vec<u8>, Vec<u8>),
}

impl fmt::Debug for WatchedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchedIdentity")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl WatchedIdentity {
    /// Loads the pair now (a failure stops the process at start); [`Self::watch`] keeps it
    /// current.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let files = (read(cert_path)?, read(key_path)?);
        let key = certified_key(cert_path, key_path, &files)?;
        Ok(Arc::new(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Loaded { key, files }),
        }))
    }

    /// Re-reads the files every second until `stop`, in a task of its own.
    pub fn watch(self: &Arc<Self>, stop: CancellationToken) {
        crate::reload::every_interval(self, stop, Self::reload_if_changed);
    }

    /// Loads the files again if their contents changed since the last load.
    pub fn reload_if_changed(&self) {
        let files = match (fs::read(&self.cert_path), fs::read(&self.key_path)) {
            (Ok(cert), Ok(key)) => (cert, key),
            // Mid-rotation or briefly missing: keep serving the pair we have.
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, cert = %self.cert_path.display(), "cannot read the TLS files; keeping the current certificate");
                return;
            }
        };
        if self.current.read().expect("never poisoned").files == files {
            return;
        }
        match certified_key(&self.cert_path, &self.key_path, &files) {
            Ok(key) => {
                *self.current.write().expect("never poisoned") = Loaded { key, files };
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
            }
            Err(error) => {
                tracing::warn!(%error, "the changed TLS files do not load; keeping the current certificate");
            }
        }
    }

    fn certified_key(&self) -> Arc<CertifiedKey> {
        self.current.read().expect("never poisoned").key.clone()
    }
}

fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    (cert, key): &(Vec<u8>, Vec<u8>),
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = parse_certificates(cert_path, cert)?;
    let key = parse_private_key(key_path, key)?;
    // Also checks that the key is the certificate's.
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Rustls {
        path: key_path.to_owned(),
        source,
    })?;
    Ok(Arc::new(certified))
}

impl ResolvesServerCert for WatchedIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }
}

impl ResolvesClientCert for WatchedIdentity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A CA bundle file as trust roots, re-read when its contents change (a CA renewed in the
/// same Secret); a change that does not parse keeps the roots in use.
pub struct WatchedRoots {
    path: PathBuf,
    current: RwLock<(Vec<u8>, Arc<RootCertStore>)>,
}

impl WatchedRoots {
    pub fn load(path: &Path) -> Result<Arc<Self>, TlsError> {
        let bytes = read(path)?;
        let roots = parse_roots(path, &bytes)?;
        Ok(Arc::new(Self {
            path: path.to_owned(),
            current: RwLock::new((bytes, Arc::new(roots))),
        }))
    }

    /// Re-reads the file every second until `stop`, in a task of its own.
    pub fn watch(self: &Arc<Self>, stop: CancellationToken) {
        crate::reload::every_interval(self, stop, Self::reload_if_changed);
    }

    /// The roots now; a new `Arc` after each change, so users can tell.
    pub fn current(&self) -> Arc<RootCertStore> {
        self.current.read().expect("never poisoned").1.clone()
    }

    pub fn reload_if_changed(&self) {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(%error, ca = %self.path.display(), "cannot read the CA bundle; keeping the current one");
                return;
            }
        };
        if self.current.read().expect("never poisoned").0 == bytes {
            return;
        }
        match parse_roots(&self.path, &bytes) {
            Ok(roots) => {
                *self.current.write().expect("never poisoned") = (bytes, Arc::new(roots));
                tracing::info!(ca = %self.path.display(), "CA bundle reloaded");
            }
            Err(error) => {
                tracing::warn!(%error, "the changed CA bundle does not load; keeping the current one")
            }
        }
    }
}

fn parse_roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in parse_certificates(path, pem)? {
        roots.add(certificate).map_err(|source| TlsError::Rustls {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

/// The TLS side of a server: HTTP/2 only (ALPN `h2`), the certificate from `identity`, and
/// with `client_ca` a client certificate signed by it required of every peer. The
/// certificate is swapped per handshake by the identity; the rustls configuration is made
/// again when the client CA changes.
pub struct ServerTls {
    identity: Arc<WatchedIdentity>,
    client_ca: Option<Arc<WatchedRoots>>,
    /// The configuration, and the roots it was made with.
    built: std::sync::Mutex<(Option<Arc<RootCertStore>>, Arc<rustls::ServerConfig>)>,
}

impl ServerTls {
    pub fn new(
        identity: Arc<WatchedIdentity>,
        client_ca: Option<Arc<WatchedRoots>>,
    ) -> Result<Self, TlsError> {
        let roots = client_ca.as_ref().map(|ca| ca.current());
        let config = build_server_config(&identity, roots.clone(), client_ca.as_deref())?;
        Ok(Self {
            identity,
            client_ca,
            built: std::sync::Mutex::new((roots, config)),
        })
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        let mut built = self.built.lock().expect("never poisoned");
        let roots = self.client_ca.as_ref().map(|ca| ca.current());
        let unchanged = match (&built.0, &roots) {
            (Some(old), Some(new)) => Arc::ptr_eq(old, new),
            (old, new) => old.is_none() && new.is_none(),
        };
        if !unchanged {
            match build_server_config(&self.identity, roots.clone(), self.client_ca.as_deref()) {
                Ok(config) => *built = (roots, config),
                Err(error) => tracing::warn!(%error, "cannot use the new client CA; keeping the current one"),
            }
        }
        built.1.clone()
    }
}

fn build_server_config(
    identity: &Arc<WatchedIdentity>,
    roots: Option<Arc<RootCertStore>>,
    client_ca: Option<&WatchedRoots>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let builder = match (roots, client_ca) {
        (Some(roots), Some(ca)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|error| TlsError::Verifier {
                    path: ca.path.clone(),
                    message: error.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(identity.clone());
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The settings of one service this one calls (Order → User), as named in its
/// configuration: `setting` is their prefix (`USER_SERVICE`), for error messages.
pub struct Upstream<'a> {
    pub setting: &'static str,
    pub target: &'a meshwork_clients::Target,
    /// `<setting>_CA`: the CA bundle the upstream's certificate must be signed by.
    pub ca: Option<&'a Path>,
    /// `<setting>_TLS_NAME`: the name its certificate must carry, instead of the URL's host.
    pub tls_name: Option<&'a str>,
}

/// TLS for calls to `upstream`: on with its CA bundle, which an `https://` URL needs and an
/// `http://` one contradicts (with `dns:///`, the CA alone switches it on). This process's
/// own certificate (`TLS_CERT`/`TLS_KEY`), when it has one, is its client certificate
/// (mutual TLS). Both files are watched until `stop`, like the server's. An error names
/// the settings that do not go together, or the file that does not load.
pub fn upstream_tls(
    upstream: &Upstream<'_>,
    security: &crate::config::SecurityConfig,
    stop: &CancellationToken,
) -> Result<Option<meshwork_clients::ClientTls>, String> {
    let Upstream { setting, .. } = *upstream;
    let flag = |suffix: &str| {
        format!(
            "{setting}_{suffix} (--{})",
            format!("{setting}_{suffix}").to_lowercase().replace('_', "-")
        )
    };
    let https = match upstream.target {
        meshwork_clients::Target::Static(uris) => {
            let tls = uris
                .iter()
                .filter(|uri| uri.scheme_str() == Some("https"))
                .count();
            if tls != 0 && tls != uris.len() {
                return Err(format!("{} mixes http:// and https://", flag("URL")));
            }
            tls != 0
        }
        meshwork_clients::Target::Dns { .. } => upstream.ca.is_some(),
    };
    let Some(ca) = upstream.ca else {
        return match https {
            true => Err(format!(
                "{} is https:// but {} is not set",
                flag("URL"),
                flag("CA")
            )),
            false => Ok(None),
        };
    };
    if !https {
        return Err(format!(
            "{} is set but {} is http://; use https://",
            flag("CA"),
            flag("URL")
        ));
    }
    let roots = WatchedRoots::load(ca).map_err(|e| format!("invalid {}: {e}", flag("CA")))?;
    roots.watch(stop.clone());
    let roots = Arc::new(move || roots.current());
    let identity = match (&security.tls_cert, &security.tls_key) {
        (Some(cert), Some(key)) => {
            let identity = WatchedIdentity::load(cert, key)
                .map_err(|e| format!("invalid TLS_CERT/TLS_KEY (--tls-cert/--tls-key): {e}"))?;
            identity.watch(stop.clone());
            Some(identity as _)
        }
        _ => None,
    };
    meshwork_clients::ClientTls::new(provider(), roots, identity, upstream.tls_name)
        .map(Some)
        .map_err(|e| format!("invalid {}: {e}", flag("TLS_NAME")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for localhost and its key, in PEM.
    fn self_signed() -> (String, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    }

    #[test]
    fn a_changed_pair_reaches_new_handshakes_and_a_mismatched_one_is_not_used() {
        let dir = std::env::temp_dir().join(format!("meshwork-identity-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
        let (first_cert, first_key) = self_signed();
        fs::write(&cert_path, &first_cert).unwrap();
        fs::write(&key_path, &first_key).unwrap();
        let identity = WatchedIdentity::load(&cert_path, &key_path).unwrap();
        let served = |identity: &WatchedIdentity| identity.certified_key().cert[0].clone();
        let first = served(&identity);

        // Half a rotation: a new certificate beside the old key does not load.
        let (second_cert, second_key) = self_signed();
        fs::write(&cert_path, &second_cert).unwrap();
        identity.reload_if_changed();
        assert_eq!(served(&identity), first, "the old pair stays in use");

        fs::write(&key_path, &second_key).unwrap();
        identity.reload_if_changed();
        assert_ne!(served(&identity), first, "the whole new pair is used");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_changed_ca_bundle_replaces_the_roots_and_a_bad_one_keeps_them() {
        let dir = std::env::temp_dir().join(format!("meshwork-roots-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        fs::write(&path, self_signed().0).unwrap();
        let roots = WatchedRoots::load(&path).unwrap();
        let first = roots.current();

        roots.reload_if_changed();
        assert!(Arc::ptr_eq(&first, &roots.current()), "unchanged: the same roots");
        fs::write(&path, "-----BEGIN CERTIFICATE-----\nhalf").unwrap();
        roots.reload_if_changed();
        assert!(Arc::ptr_eq(&first, &roots.current()), "a bad bundle is not used");
        fs::write(&path, self_signed().0).unwrap();
        roots.reload_if_changed();
        assert!(!Arc::ptr_eq(&first, &roots.current()), "a new bundle is");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = std::env::temp_dir().join(format!("meshwork-tls-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        fs::write(&empty, "not pem").unwrap();
        let missing = dir.join("missing.pem");

        let error = read_certificates(&missing).unwrap_err().to_string();
        assert!(error.contains("missing.pem"), "{error}");
        let error = read_certificates(&empty).unwrap_err().to_string();
        assert_eq!(error, format!("{} holds no PEM certificate", empty.display()));
        let error = read_private_key(&empty).unwrap_err().to_string();
        assert_eq!(error, format!("{} holds no PEM private key", empty.display()));
        fs::remove_dir_all(&dir).unwrap();
    }
}
