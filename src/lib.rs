//! The shared runtime of the Meshwork services. Each service binary is its domain (handlers
//! and storage) plus one call into this crate; everything cross-cutting is written here once.
//!
//! - [`proto`]: the generated messages, servers and clients of `proto/`, and the descriptor
//!   set that reflection serves.
//! - [`config`]: settings from the environment and command-line flags, parsed before any port
//!   is bound; a bad value exits with status 2 and a one-line error naming the setting.
//! - [`telemetry`]: logs (`RUST_LOG`, `LOG_FORMAT=json`, trace ids on every line) and
//!   OpenTelemetry traces exported over OTLP/gRPC, configured by the `OTEL_*` settings.
//! - [`metrics`]: Prometheus metrics with the grpc-ecosystem names, served at `/metrics`.
//! - [`rpc`]: what a gRPC call is, seen from HTTP/2 (method, call type, final status).
//! - [`server`]: bootstrap of one gRPC server: health, reflection, the tower layer stack, and
//!   a graceful drain on SIGTERM/SIGINT.
//! - [`connection`]: one HTTP/2 connection's life: drained on shutdown, closed when idle.
//! - [`shutdown`]: the signal that starts the drain, shared with long-lived streams.
//! - [`layers`]: the cross-cutting concerns, one tower layer each: tracing, metrics,
//!   deadlines, status codes.
//! - [`error`]: [`error::ApiError`], the one mapping from domain failures to `tonic::Status`
//!   with `google.rpc` error details.
//! - [`pagination`]: AIP-158 page sizes and opaque page tokens.
//! - [`database`]: opening the configured database and running embedded migrations.
//! - [`time`]: conversion between stored times and `google.protobuf.Timestamp`.

pub mod config;
pub mod connection;
pub mod database;
pub mod error;
pub mod layers;
pub mod metrics;
pub mod pagination;
pub mod proto;
pub mod rpc;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod time;
