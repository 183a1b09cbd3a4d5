//! The server runtime of the Meshwork services. Each service binary is its domain (handlers
//! and storage) plus one call into this crate; everything cross-cutting on the server side is
//! written here once. (The generated code is `meshwork-proto`'s, what a call is
//! `meshwork-rpc`'s, databases `meshwork-database`'s.)
//!
//! What services use:
//! - [`config`]: [`ServerConfig`], the settings every server has, parsed from the environment
//!   and flags before any port is bound; a bad value exits with status 2 and one line.
//! - [`server`]: [`run`] binds, serves [`GrpcServices`] (with health, `liveness`,
//!   reflection and the layer stack) until SIGTERM/SIGINT, drains, flushes telemetry; a
//!   [`Readiness`] check makes health follow a database.
//! - [`telemetry`]: logs and OpenTelemetry traces (`RUST_LOG`, `LOG_FORMAT`, `OTEL_*`).
//! - [`shutdown`]: the signal that starts the drain, shared with long-lived streams.
//! - [`error`]: [`ApiError`], the one mapping from domain failures to `tonic::Status` with
//!   `google.rpc` details, and [`FieldViolations`], the collector that parses a request.
//! - [`pagination`]: AIP-158 page sizes, opaque page tokens, pages cut to fit a message.
//! - [`time`]: stored times and `google.protobuf.Timestamp`.
//! - [`tls`]: rustls for the gRPC port; certificate files re-read when they change.
//! - [`auth`]: JWT authentication, the caller's identity ([`Caller`]) and the policy checks
//!   handlers make with it.
//!
//! Internal: `layers` (observe, load shedding, authentication, deadline, status codes, panics: one tower
//! layer each, composed in `server.rs`), `connection` (one HTTP/2 connection's life: preface
//! timeout, drain, idle close), `metrics_endpoint` (the `/metrics` HTTP server), `reload`
//! (files polled for changes).

pub mod auth;
pub mod config;
mod connection;
pub mod error;
mod layers;
mod metrics_endpoint;
pub mod pagination;
mod reload;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod time;
pub mod tls;

pub use auth::Caller;
pub use config::{Defaults, ServerConfig};
pub use error::{ApiError, FieldViolations, respond};
pub use server::{GrpcServices, Readiness, run};
