//! Settings, from the environment or from command-line flags of the same name
//! (`LISTEN_ADDR` / `--listen-addr`); a flag wins over the environment.
//!
//! Parsing happens before any port is bound or file is opened: a malformed value stops the
//! process with exit status 2 and one line that names the setting.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, ValueEnum};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

/// Settings every server has. Flattened into each service's own settings struct.
#[derive(Args, Debug, Clone)]
pub struct ServerConfig {
    /// gRPC listen address (the default depends on the service).
    #[arg(long, env = "LISTEN_ADDR")]
    pub listen_addr: SocketAddr,

    /// HTTP address serving Prometheus text at /metrics (the default depends on the service).
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: SocketAddr,

    /// How long calls in flight may run after SIGTERM/SIGINT before the process exits anyway.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_positive_duration)]
    pub shutdown_grace: Duration,

    /// Largest request or response message, in bytes.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Calls handled at once; more are answered RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "MAX_CONCURRENT_CALLS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_calls: u32,

    /// HTTP/2 streams (calls) one connection may have open (Envoy's edge default: 100).
    #[arg(long, env = "MAX_CONCURRENT_STREAMS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,

    /// HTTP/2 flow-control window of each stream, in bytes: what one call may have in
    /// flight unread (Envoy's edge guidance: 64 KiB), so memory per stream stays bounded.
    #[arg(long, env = "HTTP2_STREAM_WINDOW", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u32).range(65_535..=2_147_483_647))]
    pub http2_stream_window: u32,

    /// HTTP/2 flow-control window of each connection, in bytes (Envoy's edge guidance: 1 MiB).
    #[arg(long, env = "HTTP2_CONNECTION_WINDOW", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u32).range(65_535..=2_147_483_647))]
    pub http2_connection_window: u32,

    /// Longest any call may run, whatever deadline the caller sends (streams excepted).
    #[arg(long, env = "MAX_CALL_DURATION", default_value = "30s", value_parser = parse_positive_duration)]
    pub max_call_duration: Duration,

    /// How often an HTTP/2 ping checks each connection.
    #[arg(long, env = "HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_positive_duration)]
    pub http2_keepalive_interval: Duration,

    /// How long a ping may go unanswered before the connection is closed.
    #[arg(long, env = "HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub http2_keepalive_timeout: Duration,

    /// A connection that carries no call for this long is closed (GOAWAY).
    #[arg(long, env = "MAX_CONNECTION_IDLE", default_value = "5m", value_parser = parse_positive_duration)]
    pub max_connection_idle: Duration,

    /// Threads that run calls; unset: one per CPU the process may use (its CPU affinity and
    /// cgroup quota, rounded down, at least one). With one, calls run on a single-threaded
    /// scheduler (see `server::runtime`); the "listening" line says which.
    #[arg(long, env = "WORKER_THREADS")]
    pub worker_threads: Option<std::num::NonZeroUsize>,

    /// Log filter, in `tracing_subscriber::EnvFilter` syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info", value_parser = parse_log_filter)]
    pub rust_log: String,

    /// `text` for people, `json` for one JSON object per line.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// OTLP/gRPC collector, `http://host:port`; unset means no span export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_parser = parse_otlp_endpoint)]
    pub otel_exporter_otlp_endpoint: Option<String>,

    /// Metadata sent with every span export, `key=value,key=value` with values
    /// percent-encoded. Never printed: it may hold a collector's API key.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_HEADERS", hide_env_values = true, default_value = "", value_parser = OtlpHeadersParser("OTEL_EXPORTER_OTLP_HEADERS"))]
    pub otel_exporter_otlp_headers: OtlpHeaders,

    /// The same for traces: wins over `OTEL_EXPORTER_OTLP_HEADERS` when set.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_HEADERS", hide_env_values = true, value_parser = OtlpHeadersParser("OTEL_EXPORTER_OTLP_TRACES_HEADERS"))]
    pub otel_exporter_otlp_traces_headers: Option<OtlpHeaders>,

    /// How long one span export may take, connecting and retries included, in milliseconds.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TIMEOUT", default_value = "10000", value_parser = parse_millis)]
    pub otel_exporter_otlp_timeout: Duration,

    /// The same for traces: wins over `OTEL_EXPORTER_OTLP_TIMEOUT` when set.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", value_parser = parse_millis)]
    pub otel_exporter_otlp_traces_timeout: Option<Duration>,

    /// `service.name` of the exported telemetry; defaults to the binary name.
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub otel_service_name: String,

    /// Which spans are recorded, as the OpenTelemetry specification names samplers.
    #[arg(long, env = "OTEL_TRACES_SAMPLER", value_enum, default_value_t = SamplerName::ParentbasedAlwaysOn)]
    pub otel_traces_sampler: SamplerName,

    /// The ratio of the `*traceidratio` samplers, 0.0 to 1.0.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", default_value_t = 1.0, value_parser = parse_ratio)]
    pub otel_traces_sampler_arg: f64,

    /// More resource attributes of the exported telemetry: `key=value,key=value`.
    #[arg(long, env = "OTEL_RESOURCE_ATTRIBUTES", default_value = "", value_parser = parse_resource_attributes)]
    pub otel_resource_attributes: ResourceAttributes,

    #[command(flatten)]
    pub security: SecurityConfig,
}

/// TLS, mutual TLS and authentication (CONTRACT *Security*): all off unless set. Each file
/// is read and parsed here, so a missing or unreadable one stops the process at start.
#[derive(Args, Debug, Clone, Default)]
pub struct SecurityConfig {
    /// PEM certificate chain: the gRPC port speaks TLS only (ALPN h2). Re-read when it changes.
    #[arg(long, env = "TLS_CERT", requires = "tls_key", value_parser = certificates_file)]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of TLS_CERT. Re-read when it changes.
    #[arg(long, env = "TLS_KEY", requires = "tls_cert", value_parser = private_key_file)]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle: every client must present a certificate signed by it (mutual TLS).
    #[arg(long, env = "TLS_CLIENT_CA", requires = "tls_cert", value_parser = certificates_file)]
    pub tls_client_ca: Option<PathBuf>,

    /// A second, plaintext address serving only grpc.health.v1.Health, for probes that
    /// cannot speak TLS (kubelet's gRPC probes); unset: none.
    #[arg(long, env = "HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,

    /// File holding an HS256 secret: tokens signed with it are accepted (authentication on).
    #[arg(long, env = "AUTH_JWT_SECRET_FILE", requires_all = ["auth_issuer", "auth_audience"], value_parser = secret_file)]
    pub auth_jwt_secret_file: Option<PathBuf>,

    /// JWKS file of RS256/ES256 public keys, chosen by `kid`; re-read when it changes
    /// (authentication on).
    #[arg(long, env = "AUTH_JWKS_FILE", requires_all = ["auth_issuer", "auth_audience"], value_parser = jwks_file)]
    pub auth_jwks_file: Option<PathBuf>,

    /// The `iss` every token must carry (required when authentication is on).
    #[arg(long, env = "AUTH_ISSUER")]
    pub auth_issuer: Option<String>,

    /// The `aud` every token must carry (required when authentication is on).
    #[arg(long, env = "AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
}

impl SecurityConfig {
    /// Whether calls need a token.
    pub fn authentication_on(&self) -> bool {
        self.auth_jwt_secret_file.is_some() || self.auth_jwks_file.is_some()
    }
}

/// The standard sampler names of `OTEL_TRACES_SAMPLER`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerName {
    #[value(name = "always_on")]
    AlwaysOn,
    #[value(name = "always_off")]
    AlwaysOff,
    #[value(name = "traceidratio")]
    TraceIdRatio,
    #[value(name = "parentbased_always_on")]
    ParentbasedAlwaysOn,
    #[value(name = "parentbased_always_off")]
    ParentbasedAlwaysOff,
    #[value(name = "parentbased_traceidratio")]
    ParentbasedTraceIdRatio,
}

/// `OTEL_RESOURCE_ATTRIBUTES`, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceAttributes(pub Vec<(String, String)>);

impl ServerConfig {
    /// The span exporter's metadata: the `_TRACES_` setting if there is one.
    pub fn otlp_traces_headers(&self) -> &MetadataMap {
        let headers = self.otel_exporter_otlp_traces_headers.as_ref();
        &headers.unwrap_or(&self.otel_exporter_otlp_headers).0
    }

    /// The span exporter's timeout: the `_TRACES_` setting if there is one.
    pub fn otlp_traces_timeout(&self) -> Duration {
        self.otel_exporter_otlp_traces_timeout
            .unwrap_or(self.otel_exporter_otlp_timeout)
    }
}

/// `OTEL_EXPORTER_OTLP_HEADERS`, parsed: gRPC metadata for the exporter's requests.
#[derive(Clone, Default)]
pub struct OtlpHeaders(pub MetadataMap);

impl std::fmt::Debug for OtlpHeaders {
    /// Names only: a value may be a collector's API key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// How log lines are written.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Per-binary defaults of the settings whose default differs between services.
pub struct Defaults {
    /// The binary's name: the default `OTEL_SERVICE_NAME`.
    pub name: &'static str,
    pub listen_addr: &'static str,
    pub metrics_addr: &'static str,
}

/// Parses the settings of a binary, or exits with status 2 and one line naming the bad one.
///
/// `--help` and `--version` print and exit 0, as usual.
pub fn parse_or_exit<T: Parser>(defaults: Defaults) -> T {
    let command = T::command()
        .mut_arg("listen_addr", |arg| {
            arg.required(false).default_value(defaults.listen_addr)
        })
        .mut_arg("metrics_addr", |arg| {
            arg.required(false).default_value(defaults.metrics_addr)
        })
        .mut_arg("otel_service_name", |arg| {
            arg.required(false).default_value(defaults.name)
        });
    let parsed = command
        .try_get_matches()
        .and_then(|mut matches| T::from_arg_matches_mut(&mut matches));
    match parsed {
        Ok(config) => config,
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => {
            eprintln!("{}", one_line(&error.render().to_string()));
            std::process::exit(2);
        }
    }
}

/// clap's message without its usage hints, on one line.
fn one_line(rendered: &str) -> String {
    rendered
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `10s`, `500ms`, `1m`: durations as people write them.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

/// A duration where zero makes no sense (a grace period, a refresh interval).
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("must be longer than zero".into()),
        duration => Ok(duration),
    }
}

fn parse_log_filter(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(text)
        .map(|_| text.to_owned())
        .map_err(|e| e.to_string())
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err("expected a number from 0.0 to 1.0".into()),
    }
}

fn parse_resource_attributes(text: &str) -> Result<ResourceAttributes, String> {
    key_value_pairs(text).map(ResourceAttributes)
}

/// `key=value,key=value`, spaces around each part ignored.
fn key_value_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_owned(), value.trim().to_owned()))
            }
            _ => Err(format!("expected key=value, got {pair:?}")),
        })
        .collect()
}

/// Parses the OTLP headers settings. A `TypedValueParser` of its own, not a function: clap
/// puts the whole value into a function's error, and this value may hold an API key.
#[derive(Clone)]
struct OtlpHeadersParser(&'static str);

impl clap::builder::TypedValueParser for OtlpHeadersParser {
    type Value = OtlpHeaders;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<OtlpHeaders, clap::Error> {
        let invalid = |why: String| {
            let message = format!("invalid value for {}: {why}\n", self.0);
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, message).with_cmd(cmd)
        };
        let text = value.to_str().ok_or_else(|| invalid("not UTF-8".into()))?;
        parse_otlp_headers(text).map_err(invalid)
    }
}

/// The W3C baggage form the OpenTelemetry specification gives `OTEL_EXPORTER_OTLP_HEADERS`:
/// `key=value` pairs, values percent-encoded. A key or value gRPC cannot carry stops the
/// process at start, rather than being left out of every export. Errors name the key, never
/// the value.
fn parse_otlp_headers(text: &str) -> Result<OtlpHeaders, String> {
    let pairs = key_value_pairs(text).map_err(|_| "expected key=value pairs".to_string())?;
    let mut metadata = MetadataMap::new();
    for (key, value) in pairs {
        if key.ends_with("-bin") {
            return Err(format!("{key:?}: binary (-bin) metadata is not supported here"));
        }
        let name = MetadataKey::from_bytes(key.as_bytes())
            .map_err(|_| format!("{key:?} is not a gRPC metadata key"))?;
        let decoded = percent_encoding::percent_decode_str(&value)
            .decode_utf8()
            .map_err(|_| format!("the value of {key:?} is not UTF-8 once percent-decoded"))?;
        let value = MetadataValue::try_from(decoded.as_ref())
            .map_err(|_| format!("the value of {key:?} is not a gRPC metadata value"))?;
        metadata.append(name, value);
    }
    Ok(OtlpHeaders(metadata))
}

/// A whole number of milliseconds, more than zero (the OpenTelemetry specification's unit
/// for its timeouts).
fn parse_millis(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(millis) if millis > 0 => Ok(Duration::from_millis(millis)),
        _ => Err("expected a whole number of milliseconds, more than 0".into()),
    }
}

/// A PEM file with at least one certificate (a chain, a CA bundle), read and parsed.
pub fn certificates_file(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    crate::tls::read_certificates(&path).map_err(|e| e.to_string())?;
    Ok(path)
}

fn private_key_file(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    crate::tls::read_private_key(&path).map_err(|e| e.to_string())?;
    Ok(path)
}

fn secret_file(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    crate::auth::read_secret(&path).map_err(|e| e.to_string())?;
    Ok(path)
}

fn jwks_file(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    crate::auth::read_jwks(&path).map_err(|e| e.to_string())?;
    Ok(path)
}

/// The exporter speaks plaintext HTTP/2 only (a collector or agent beside the service, in its
/// cluster): an `https://` collector would get nothing, so it stops the process at start.
fn parse_otlp_endpoint(text: &str) -> Result<String, String> {
    let url = parse_http_url(text)?;
    if url.starts_with("https:") {
        return Err("https:// needs TLS, which the span exporter does not have: use http://".into());
    }
    Ok(url)
}

fn parse_http_url(text: &str) -> Result<String, String> {
    let uri: http::Uri = text.parse().map_err(|e: http::uri::InvalidUri| e.to_string())?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(text.to_owned()),
        _ => Err("expected http://host:port or https://host:port".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_urls_parse_as_people_write_them() {
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(parse_positive_duration("5s"), Ok(Duration::from_secs(5)));
        assert!(parse_http_url("http://collector:4317").is_ok());
        assert!(parse_http_url("collector:4317").is_err());
    }

    #[test]
    fn sampler_ratio_and_resource_attributes_are_checked() {
        assert_eq!(parse_ratio("0.25"), Ok(0.25));
        assert!(parse_ratio("1.5").is_err());
        let attributes = parse_resource_attributes("deployment.environment=dev, team=platform").unwrap();
        assert_eq!(attributes.0[1], ("team".to_string(), "platform".to_string()));
        assert!(parse_resource_attributes("novalue").is_err());
    }

    #[test]
    fn otlp_headers_and_timeout_are_checked() {
        let headers = parse_otlp_headers("api-key=s3cr%3Dt, X-Team=platform").unwrap().0;
        assert_eq!(headers.get("api-key").unwrap(), "s3cr=t");
        assert_eq!(headers.get("x-team").unwrap(), "platform");
        assert!(parse_otlp_headers("bad key=1").is_err());
        assert!(parse_otlp_headers("key=line%0Abreak").is_err());
        assert!(parse_otlp_headers("").unwrap().0.is_empty());
        assert!(parse_otlp_headers("token-bin=AAEC").is_err());
        let refused = parse_otlp_headers("api-key=s3cret%0A").unwrap_err();
        assert!(!refused.contains("s3cret"), "{refused}");
        assert!(parse_otlp_endpoint("https://collector:4317").is_err());
        assert!(parse_otlp_endpoint("http://collector:4317").is_ok());
        assert_eq!(parse_millis("2500"), Ok(Duration::from_millis(2500)));
        assert!(parse_millis("0").is_err());
        assert!(parse_millis("10s").is_err());
    }
}
