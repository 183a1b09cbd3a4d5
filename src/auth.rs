//! Who is calling, and what they may do (CONTRACT *Security*).
//!
//! - [`Authenticator`]: turns an `authorization: Bearer <JWT>` header into a [`Caller`], or
//!   into a [`Refusal`]: HS256 with the secret of `AUTH_JWT_SECRET_FILE`, RS256/ES256 with
//!   the key of `AUTH_JWKS_FILE` named by the token's `kid` (the file is re-read when it
//!   changes). The algorithm is the key's, never the token's choice: `alg: none` does not
//!   parse, and an HS256 token cannot be checked against an RSA key.
//! - [`access`]: the method-level half of the policy table, applied by the authentication
//!   layer (`layers/auth.rs`): health and reflection open, admin-only methods.
//! - [`Caller`]: the identity handlers read from the request's extensions, with the checks of
//!   the rules that need a request field or a stored row ([`Caller::may_act_for`]).
//!
//! Refusals are counted in `meshwork_auth_failures_total{reason}` and logged with their
//! reason; the token itself is never logged or sent back, and the caller learns only
//! "missing" or "invalid", not which check failed.

use std::{
    collections::HashMap,
    fmt, fs, io,
    path::{Path, PathBuf},
    sync::{Arc, LazyLock, RwLock},
};

use http::HeaderValue;
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm},
};
use meshwork_rpc::RpcMethod;
use prometheus::{IntCounterVec, Opts};
use tokio_util::sync::CancellationToken;

use crate::{config::SecurityConfig, error::ApiError};

/// The longest `authorization` header that is looked at; a longer one is refused before any
/// decoding, so refusing stays cheap whatever a caller sends. Real tokens are under 2 KiB.
pub const MAX_AUTHORIZATION_BYTES: usize = 4096;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 60;

/// The shortest HS256 secret accepted: 256 bits, as RFC 7518 §3.2 requires.
const MIN_SECRET_BYTES: usize = 32;

/// Why a setting's file cannot be used; the message names the file, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: the secret must be at least {MIN_SECRET_BYTES} bytes")]
    ShortSecret { path: PathBuf },
    #[error("{path} is not a JWKS document: {message}")]
    NotJwks { path: PathBuf, message: String },
    #[error("{path} holds no RS256 or ES256 key with a kid")]
    NoKeys { path: PathBuf },
}

/// Who is calling. Handlers find it with [`Caller::of`]; with authentication off it is
/// [`Caller::Anyone`] and every check passes.
#[derive(Clone)]
pub enum Caller {
    /// Authentication is off: the open playground, everyone may do everything.
    Anyone,
    /// The subject of a verified token.
    Authenticated {
        /// The token's `sub`: the caller's user id.
        subject: String,
        /// Whether `roles` holds `admin`.
        admin: bool,
        /// The `authorization` header it came with, passed on to the services this call
        /// calls (Order → User), so they apply the same policy to the same caller.
        credential: HeaderValue,
    },
}

static ANYONE: Caller = Caller::Anyone;

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anyone => f.write_str("Anyone"),
            // Never the credential: it would be a replayable secret in a log line.
            Self::Authenticated { subject, admin, .. } => f
                .debug_struct("Authenticated")
                .field("subject", subject)
                .field("admin", admin)
                .finish_non_exhaustive(),
        }
    }
}

impl Caller {
    /// The caller of a request, as the authentication layer put it in the extensions; none
    /// there means authentication is off.
    pub fn of(extensions: &http::Extensions) -> &Caller {
        extensions.get::<Caller>().unwrap_or(&ANYONE)
    }

    pub fn is_admin(&self) -> bool {
        match self {
            Self::Anyone => true,
            Self::Authenticated { admin, .. } => *admin,
        }
    }

    /// `PERMISSION_DENIED` unless the caller is `user_id` or an admin (GetUser, UpdateUser,
    /// CreateOrder, and the stored order's user for GetOrder and CancelOrder).
    pub fn may_act_for(&self, user_id: &str) -> Result<(), ApiError> {
        match self {
            Self::Authenticated { subject, admin, .. } if !admin && subject != user_id => {
                Err(permission_denied("the caller may only act for its own user"))
            }
            _ => Ok(()),
        }
    }

    /// [`Self::may_act_for`] for a filter where `None` means every user (ListOrders,
    /// WatchOrders with an empty `user_id`): all users is for admins only.
    pub fn may_see(&self, user_id: Option<&str>) -> Result<(), ApiError> {
        match user_id {
            Some(user_id) => self.may_act_for(user_id),
            None if self.is_admin() => Ok(()),
            None => Err(permission_denied("only an admin may see every user's orders")),
        }
    }

    /// The `authorization` header to pass on to the calls this call makes.
    pub fn credential(&self) -> Option<&HeaderValue> {
        match self {
            Self::Anyone => None,
            Self::Authenticated { credential, .. } => Some(credential),
        }
    }
}

/// A valid caller that the policy does not allow; counted and logged by reason.
pub fn permission_denied(message: &'static str) -> ApiError {
    count_failure("permission_denied");
    tracing::info!(reason = "permission_denied", "call refused: {message}");
    ApiError::PermissionDenied {
        reason: "PERMISSION_DENIED",
        message: message.to_owned(),
    }
}

/// What the authentication layer does with a method, per CONTRACT's policy table. The rules
/// that need the request (a user id in it, a stored order's user) are the handlers', with
/// [`Caller::may_act_for`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Health and reflection: probes and grpcurl work without a token.
    Open,
    /// Any authenticated caller (and the handler's own checks).
    Authenticated,
    /// Admins only.
    Admin,
}

pub fn access(method: &RpcMethod) -> Access {
    match (method.service, method.method) {
        (
            "grpc.health.v1.Health"
            | "grpc.reflection.v1.ServerReflection"
            | "grpc.reflection.v1alpha.ServerReflection",
            _,
        ) => Access::Open,
        ("user.v1.UserService", "CreateUser" | "ListUsers" | "DeleteUser") => Access::Admin,
        // Unknown paths too: a caller without a token learns nothing, not even UNIMPLEMENTED.
        _ => Access::Authenticated,
    }
}

/// Why a call was refused `UNAUTHENTICATED`: the metric's label and the log's reason. The
/// caller is told only [`Refusal::is_missing`] or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    TooLong,
    Malformed,
    UnknownKey,
    DisallowedAlgorithm,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    BadClaims,
}

impl Refusal {
    pub const ALL: [Refusal; 11] = [
        Self::Missing,
        Self::TooLong,
        Self::Malformed,
        Self::UnknownKey,
        Self::DisallowedAlgorithm,
        Self::BadSignature,
        Self::Expired,
        Self::NotYetValid,
        Self::WrongIssuer,
        Self::WrongAudience,
        Self::BadClaims,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::TooLong => "too_long",
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::DisallowedAlgorithm => "disallowed_algorithm",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::BadClaims => "bad_claims",
        }
    }

    /// The answer a caller gets: nothing about which check failed.
    pub fn into_api_error(self) -> ApiError {
        match self {
            Self::Missing => ApiError::Unauthenticated {
                reason: "CREDENTIALS_MISSING",
                message: "authentication required: send authorization: Bearer <token>",
            },
            _ => ApiError::Unauthenticated {
                reason: "CREDENTIALS_INVALID",
                message: "invalid credentials",
            },
        }
    }
}

fn from_jwt_error(kind: &ErrorKind) -> Refusal {
    match kind {
        ErrorKind::InvalidSignature => Refusal::BadSignature,
        ErrorKind::ExpiredSignature => Refusal::Expired,
        ErrorKind::ImmatureSignature => Refusal::NotYetValid,
        ErrorKind::InvalidIssuer => Refusal::WrongIssuer,
        ErrorKind::InvalidAudience => Refusal::WrongAudience,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            Refusal::DisallowedAlgorithm
        }
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) | ErrorKind::InvalidSubject => {
            Refusal::BadClaims
        }
        _ => Refusal::Malformed,
    }
}

static AUTH_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        Opts::new(
            "meshwork_auth_failures_total",
            "Calls refused UNAUTHENTICATED or PERMISSION_DENIED, by reason."
        ),
        &["reason"]
    )
    .expect("registered once per process")
});

fn count_failure(reason: &str) {
    AUTH_FAILURES.with_label_values(&[reason]).inc();
}

/// The claims Meshwork reads; `exp`, `nbf`, `iss` and `aud` are checked by `jsonwebtoken`.
#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// Checks bearer tokens. See the module documentation.
pub struct Authenticator {
    secret: Option<DecodingKey>,
    jwks: Option<Arc<WatchedJwks>>,
    /// One per algorithm, built once: issuer, audience, leeway, required claims.
    hs256: Validation,
    rs256: Validation,
    es256: Validation,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("hs256", &self.secret.is_some())
            .field("jwks", &self.jwks.as_ref().map(|jwks| &jwks.path))
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// The authenticator the settings ask for, or `None` when authentication is off. The
    /// JWKS file is watched until `stop`.
    pub fn from_config(
        config: &SecurityConfig,
        stop: &CancellationToken,
    ) -> Result<Option<Arc<Self>>, AuthFileError> {
        if !config.authentication_on() {
            return Ok(None);
        }
        let secret = match &config.auth_jwt_secret_file {
            Some(path) => {
                Some(DecodingKey::from_secret(&read_secret(path)?).expect("an HMAC key takes any bytes"))
            }
            None => None,
        };
        let jwks = match &config.auth_jwks_file {
            Some(path) => Some(WatchedJwks::load(path)?),
            None => None,
        };
        if let Some(jwks) = &jwks {
            crate::reload::every_interval(jwks, stop.clone(), WatchedJwks::reload_if_changed);
        }
        // clap's `requires_all` makes both present whenever authentication is on.
        let issuer = config.auth_issuer.as_deref().unwrap_or_default();
        let audience = config.auth_audience.as_deref().unwrap_or_default();
        let validation = |algorithm| {
            let mut validation = Validation::new(algorithm);
            validation.leeway = LEEWAY_SECONDS;
            validation.validate_nbf = true;
            validation.set_issuer(&[issuer]);
            validation.set_audience(&[audience]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation
        };
        for refusal in Refusal::ALL {
            AUTH_FAILURES.with_label_values(&[refusal.reason()]);
        }
        AUTH_FAILURES.with_label_values(&["permission_denied"]);
        Ok(Some(Arc::new(Self {
            secret,
            jwks,
            hs256: validation(Algorithm::HS256),
            rs256: validation(Algorithm::RS256),
            es256: validation(Algorithm::ES256),
        })))
    }

    /// The caller of a call with this `authorization` header, or why it is refused (counted
    /// and logged here).
    pub fn authenticate(&self, authorization: Option<&HeaderValue>) -> Result<Caller, Refusal> {
        self.verify(authorization).inspect_err(|refusal| {
            count_failure(refusal.reason());
            tracing::info!(reason = refusal.reason(), "call refused: unauthenticated");
        })
    }

    fn verify(&self, authorization: Option<&HeaderValue>) -> Result<Caller, Refusal> {
        let header = authorization.ok_or(Refusal::Missing)?;
        if header.len() > MAX_AUTHORIZATION_BYTES {
            return Err(Refusal::TooLong);
        }
        let token = bearer_token(header).ok_or(Refusal::Malformed)?;
        let jwt_header = jsonwebtoken::decode_header(token).map_err(|e| from_jwt_error(e.kind()))?;
        let keys;
        let (key, validation) = match jwt_header.alg {
            Algorithm::HS256 => (
                self.secret.as_ref().ok_or(Refusal::DisallowedAlgorithm)?,
                &self.hs256,
            ),
            Algorithm::RS256 | Algorithm::ES256 => {
                let jwks = self.jwks.as_ref().ok_or(Refusal::DisallowedAlgorithm)?;
                let kid = jwt_header.kid.as_deref().ok_or(Refusal::UnknownKey)?;
                keys = jwks.current();
                let (algorithm, key) = keys.get(kid).ok_or(Refusal::UnknownKey)?;
                // The key decides the algorithm: a token naming another one is refused.
                let validation = match algorithm {
                    Algorithm::RS256 => &self.rs256,
                    _ => &self.es256,
                };
                (key, validation)
            }
            _ => return Err(Refusal::DisallowedAlgorithm),
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| from_jwt_error(e.kind()))?
            .claims;
        if claims.sub.is_empty() {
            return Err(Refusal::BadClaims);
        }
        Ok(Caller::Authenticated {
            admin: claims.roles.iter().any(|role| role == "admin"),
            subject: claims.sub,
            credential: header.clone(),
        })
    }
}

/// The token of `Bearer <token>` (the scheme is case-insensitive, RFC 7235).
fn bearer_token(header: &HeaderValue) -> Option<&str> {
    let text = header.to_str().ok()?;
    let (scheme, token) = text.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The HS256 secret of a file, without surrounding whitespace (a trailing newline).
pub fn read_secret(path: &Path) -> Result<Vec<u8>, AuthFileError> {
    let bytes = fs::read(path).map_err(|source| AuthFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let secret = bytes.trim_ascii();
    match secret.len() >= MIN_SECRET_BYTES {
        true => Ok(secret.to_vec()),
        false => Err(AuthFileError::ShortSecret {
            path: path.to_owned(),
        }),
    }
}

/// Usable keys by `kid`, each with the one algorithm it verifies.
type Keys = HashMap<String, (Algorithm, DecodingKey)>;

/// The keys of a JWKS file: every RS256 or ES256 (P-256) key with a `kid`; others are skipped.
pub fn read_jwks(path: &Path) -> Result<Keys, AuthFileError> {
    parse_jwks(path, &read_file(path)?)
}

fn read_file(path: &Path) -> Result<Vec<u8>, AuthFileError> {
    fs::read(path).map_err(|source| AuthFileError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse_jwks(path: &Path, bytes: &[u8]) -> Result<Keys, AuthFileError> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| AuthFileError::NotJwks {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut keys = Keys::new();
    for jwk in &set.keys {
        let algorithm = match (jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(KeyAlgorithm::RS256), AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (Some(KeyAlgorithm::ES256), AlgorithmParameters::EllipticCurve(ec))
                if ec.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (None, AlgorithmParameters::EllipticCurve(ec)) if ec.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => continue,
        };
        let (Some(kid), Ok(key)) = (&jwk.common.key_id, DecodingKey::from_jwk(jwk)) else {
            continue;
        };
        keys.insert(kid.clone(), (algorithm, key));
    }
    match keys.is_empty() {
        true => Err(AuthFileError::NoKeys {
            path: path.to_owned(),
        }),
        false => Ok(keys),
    }
}

/// A JWKS file, re-read when its contents change; a change that does not parse keeps the
/// keys in use (a half-written file must not lock everyone out).
struct WatchedJwks {
    path: PathBuf,
    current: RwLock<(Vec<u8>, Arc<Keys>)>,
}

impl WatchedJwks {
    fn load(path: &Path) -> Result<Arc<Self>, AuthFileError> {
        let bytes = read_file(path)?;
        let keys = parse_jwks(path, &bytes)?;
        Ok(Arc::new(Self {
            path: path.to_owned(),
            current: RwLock::new((bytes, Arc::new(keys))),
        }))
    }

    fn current(&self) -> Arc<Keys> {
        self.current.read().expect("never poisoned").1.clone()
    }

    fn reload_if_changed(&self) {
        let bytes = match read_file(&self.path) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(%error, "cannot read the JWKS file; keeping the current keys");
                return;
            }
        };
        if self.current.read().expect("never poisoned").0 == bytes {
            return;
        }
        match parse_jwks(&self.path, &bytes) {
            Ok(keys) => {
                tracing::info!(path = %self.path.display(), keys = keys.len(), "JWKS reloaded");
                *self.current.write().expect("never poisoned") = (bytes, Arc::new(keys));
            }
            Err(error) => {
                tracing::warn!(%error, "the changed JWKS file does not load; keeping the current keys")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).unwrap()
    }

    #[test]
    fn only_bearer_tokens_are_read() {
        assert_eq!(bearer_token(&header("Bearer abc.def.ghi")), Some("abc.def.ghi"));
        assert_eq!(bearer_token(&header("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&header("Basic dXNlcjpwYXNz")), None);
        assert_eq!(bearer_token(&header("Bearer ")), None);
        assert_eq!(bearer_token(&header("Bearer")), None);
    }

    #[test]
    fn the_policy_table_opens_only_health_and_reflection() {
        let of = |path: &str| access(&RpcMethod::from_path(path));
        assert_eq!(of("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(
            of("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            Access::Open
        );
        assert_eq!(
            of("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Access::Open
        );
        for admin in ["CreateUser", "ListUsers", "DeleteUser"] {
            assert_eq!(of(&format!("/user.v1.UserService/{admin}")), Access::Admin);
        }
        for anyone in [
            "/user.v1.UserService/GetUser",
            "/order.v1.OrderService/CancelOrder",
            "/hello.v1.HelloService/SayHello",
            "/no.such.Service/Method",
        ] {
            assert_eq!(of(anyone), Access::Authenticated, "{anyone}");
        }
    }

    /// A JWKS with one RSA key per kid (a toy modulus: parsing is what is tested here).
    fn jwks_with(kids: &[&str]) -> String {
        let keys: Vec<String> = kids
            .iter()
            .map(|kid| format!(r#"{{"kty":"RSA","kid":"{kid}","alg":"RS256","n":"AQAB","e":"AQAB"}}"#))
            .collect();
        format!(r#"{{"keys":[{}]}}"#, keys.join(","))
    }

    #[test]
    fn a_jwks_keeps_only_rs256_and_es256_keys_with_a_kid() {
        let path = Path::new("jwks.json");
        let mixed = r#"{"keys":[
            {"kty":"oct","kid":"hmac","k":"c2VjcmV0"},
            {"kty":"RSA","n":"AQAB","e":"AQAB"},
            {"kty":"RSA","kid":"rsa","n":"AQAB","e":"AQAB"}
        ]}"#;
        let keys = parse_jwks(path, mixed.as_bytes()).unwrap();
        assert_eq!(
            keys.keys().collect::<Vec<_>>(),
            ["rsa"],
            "a symmetric key is never taken from a JWKS"
        );
        assert!(matches!(keys["rsa"].0, Algorithm::RS256));
        assert!(matches!(
            parse_jwks(path, br#"{"keys":[{"kty":"oct","kid":"k","k":"c2VjcmV0"}]}"#),
            Err(AuthFileError::NoKeys { .. })
        ));
        assert!(matches!(
            parse_jwks(path, b"{}"),
            Err(AuthFileError::NotJwks { .. })
        ));
    }

    #[test]
    fn a_changed_jwks_that_does_not_parse_keeps_the_keys_in_use() {
        let dir = std::env::temp_dir().join(format!("meshwork-jwks-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jwks.json");
        fs::write(&path, jwks_with(&["one"])).unwrap();
        let jwks = WatchedJwks::load(&path).unwrap();

        fs::write(&path, "{ half written").unwrap();
        jwks.reload_if_changed();
        assert!(jwks.current().contains_key("one"), "kept");

        fs::write(&path, jwks_with(&["two"])).unwrap();
        jwks.reload_if_changed();
        assert!(jwks.current().contains_key("two") && !jwks.current().contains_key("one"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_secret_must_be_long_enough() {
        let dir = std::env::temp_dir().join(format!("meshwork-secret-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        fs::write(&path, "short\n").unwrap();
        assert!(matches!(
            read_secret(&path),
            Err(AuthFileError::ShortSecret { .. })
        ));
        fs::write(&path, format!("{}\n", "s".repeat(32))).unwrap();
        assert_eq!(
            read_secret(&path).unwrap(),
            "s".repeat(32).as_bytes(),
            "the newline is not part of it"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_caller_acts_for_itself_an_admin_for_anyone() {
        let user = |admin| Caller::Authenticated {
            subject: "u1".into(),
            admin,
            credential: header("Bearer x"),
        };
        assert!(user(false).may_act_for("u1").is_ok());
        assert!(user(false).may_act_for("u2").is_err());
        assert!(user(false).may_see(None).is_err());
        assert!(user(true).may_act_for("u2").is_ok());
        assert!(user(true).may_see(None).is_ok());
        assert!(Caller::Anyone.may_see(None).is_ok());
        assert!(
            !format!("{:?}", user(false)).contains("Bearer"),
            "the credential is never printed"
        );
    }
}
