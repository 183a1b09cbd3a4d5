//! Rust clients of the Meshwork services: the generated typed clients, and [`connect`], the
//! channel every caller should give them. The Order service calls User through it.
//!
//! ```no_run
//! use meshwork_clients::{ChannelOptions, UserServiceClient, connect, proto::user::v1::GetUserRequest};
//! use std::time::Duration;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let options = ChannelOptions::default().timeout(Duration::from_secs(2));
//! let mut users = UserServiceClient::new(connect(&"http://127.0.0.1:50052".parse()?, &options));
//! let user = users.get_user(GetUserRequest { id: "u1".into() }).await?.into_inner().user;
//! # Ok(()) }
//! ```
//!
//! What is here:
//! - the generated clients, re-exported: [`HelloServiceClient`], [`UserServiceClient`],
//!   [`OrderServiceClient`]; their messages are in [`proto`] (`proto::user::v1::User`, ...);
//! - [`Target`]: where a service is (`http://host:port`, a comma-separated list of them, or
//!   `dns:///name:port`);
//! - [`connect`] and [`ChannelOptions`] (see [`channel`] for the stack it builds): a
//!   channel that traces and measures each call, retries the idempotent methods on
//!   `UNAVAILABLE` under a budget and within the deadline, balances over the endpoints and
//!   ejects those that keep failing;
//! - [`ClientTls`] ([`tls`]): TLS and mutual TLS for a channel (`https://` targets);
//! - [`Deadline`]: the deadline of one call, put in its request's extensions (a handler
//!   passes on the one of the call it serves);
//! - [`field_violations`] and [`error_info`]: the `google.rpc` details of a failed call.
//!
//! Runnable examples against `make run` are in `clients/examples/` (`create_user`,
//! `place_order`, `watch_orders`): `cargo run -p meshwork-clients --example place_order`.
//!
//! Compatibility: the protos follow the versioning policy of the repository's README (new
//! fields and methods only; breaking changes go to a `v2` package), checked by `buf breaking`.

pub mod channel;
mod errors;
pub mod target;
pub mod tls;

// The layers of the stack: their docs explain each choice; callers need only `connect`.
mod breaker;
mod discovery;
mod observe;
mod retry;

pub use channel::{ChannelOptions, MeshChannel, connect};
pub use errors::{error_info, field_violations};
pub use meshwork_proto as proto;
pub use meshwork_proto::{
    hello::v1::hello_service_client::HelloServiceClient, order::v1::order_service_client::OrderServiceClient,
    user::v1::user_service_client::UserServiceClient,
};
pub use meshwork_rpc::Deadline;
pub use target::Target;
pub use tls::ClientTls;
/// The `google.rpc.ErrorInfo` that [`error_info`] returns (from tonic-types).
pub use tonic_types::ErrorInfo;
