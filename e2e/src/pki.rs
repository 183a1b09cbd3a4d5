//! Development and test security material: a CA and the certificates it signs (rcgen), and
//! JWTs (jsonwebtoken), for the security tests and for `make certs` / `make token`
//! (`src/bin/meshwork-dev.rs`).

use std::{
    fs,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use serde_json::{Value, json};

/// The names every workload certificate carries: what a client on this machine dials.
pub const LOCAL_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names to parse");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("ring makes P-256 keys");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("a CA certificate can be signed"),
        }
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses), good for servers and clients.
    pub fn issue(&self, common_name: &str, names: &[&str]) -> Identity {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("valid names");
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("ring makes P-256 keys");
        let cert = params.signed_by(&key, &self.issuer).expect("the CA signs");
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes the CA certificate to `path`.
    pub fn write(&self, path: &Path) -> PathBuf {
        fs::write(path, self.cert_pem()).expect("the CA can be written");
        path.to_owned()
    }
}

impl Identity {
    /// Writes `<dir>/<name>.pem` and `<dir>/<name>-key.pem`; returns both paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        fs::write(&cert, &self.cert_pem).expect("the certificate can be written");
        fs::write(&key, &self.key_pem).expect("the key can be written");
        (cert, key)
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

/// The claims of a token that is valid for an hour.
pub fn claims(subject: &str, roles: &[&str], issuer: &str, audience: &str) -> Value {
    json!({
        "sub": subject,
        "roles": roles,
        "iss": issuer,
        "aud": audience,
        "iat": now(),
        "nbf": now() - 5,
        "exp": now() + 3600,
    })
}

/// A token signed with an HS256 secret.
pub fn hs256(secret: &[u8], claims: &Value) -> String {
    let key = EncodingKey::from_secret(secret).expect("an HMAC key takes any bytes");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).expect("HS256 signs")
}

/// A token signed with an RSA private key (PEM), naming `kid`.
pub fn rs256(key_pem: &[u8], kid: &str, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(key_pem).expect("an RSA PEM key");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).expect("RS256 signs")
}

/// An ES256 key pair: signs tokens, and its public half as a JWK named `kid`.
pub struct EcKey {
    key: KeyPair,
    pub kid: String,
}

impl EcKey {
    pub fn new(kid: &str) -> Self {
        Self {
            key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("ring makes P-256 keys"),
            kid: kid.to_owned(),
        }
    }

    pub fn jwk(&self) -> Value {
        // An uncompressed P-256 point: 0x04, then x and y, 32 bytes each.
        let point = self.key.public_key_raw();
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        })
    }

    pub fn sign(&self, claims: &Value) -> String {
        let key = EncodingKey::from_ec_der(&self.key.serialize_der());
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &key).expect("ES256 signs")
    }
}

/// A token with `alg: none` and no signature: what a forger sends.
pub fn unsigned(claims: &Value) -> String {
    let b64 = |value: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(claims))
}

/// A JWKS document of `keys`.
pub fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}
