//! The shared runtime of the Meshwork services. Each service binary is its domain (handlers
//! and storage) plus one call into this crate; everything cross-cutting is written here once.
//!
//! - [`config`]: settings from the environment and command-line flags, parsed before any port
//!   is bound; a bad value exits with status 2 and a one-line error naming the setting.
//! - [`telemetry`]: logs (`RUST_LOG`, `LOG_FORMAT=json`, trace ids on every line) and
//!   OpenTelemetry traces exported over OTLP/gRPC, configured by the `OTEL_*` settings.
//! - [`metrics_endpoint`]: the `/metrics` HTTP server (the metrics are `meshwork-rpc`'s).
//! - [`server`]: bootstrap of one gRPC server: health, reflection, the tower layer stack, and
//!   a graceful drain on SIGTERM/SIGINT.
//! - [`connection`]: one HTTP/2 connection's life: drained on shutdown, closed when idle.
//! - [`shutdown`]: the signal that starts the drain, shared with long-lived streams.
//! - [`layers`]: the cross-cutting concerns, one tower layer each: observing a call (span,
//!   metrics, access log), load shedding, deadlines, status codes.
//! - [`error`]: [`error::ApiError`], the one mapping from domain failures to `tonic::Status`
//!   with `google.rpc` error details.
//! - [`pagination`]: AIP-158 page sizes and opaque page tokens.
//! - [`time`]: conversion between stored times and `google.protobuf.Timestamp`.

pub mod config;
pub mod connection;
pub mod error;
pub mod layers;
pub mod metrics_endpoint;
pub mod pagination;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod time;

/// The generated code, re-exported for the services while they move to `meshwork_proto`.
pub use meshwork_proto as proto;
