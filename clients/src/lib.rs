//! Clients of the Meshwork services, for any Rust caller (the Order service uses it to
//! call User).
//!
//! - the generated typed clients, re-exported: [`HelloServiceClient`], [`UserServiceClient`],
//!   [`OrderServiceClient`];
//! - [`target`]: where a service is (`http://host:port`, a comma-separated list, or
//!   `dns:///name:port`);
//! - [`channel`]: [`connect`], the one place a client channel is built: tracing, metrics,
//!   retries under a budget, balancing, outlier ejection, timeouts, keepalive;
//! - [`observe`], [`retry`], [`breaker`], [`discovery`]: the layers of that stack with
//!   their reasons;
//! - [`tls`]: [`ClientTls`], TLS and mutual TLS for a channel (`https://` targets);
//! - [`Deadline`]: the deadline of a call, put in its extensions; a handler passes on the
//!   one of the call it serves, and each attempt sends what is left of it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use meshwork_clients::{connect, ChannelOptions, UserServiceClient};
//! let channel = connect(&"http://127.0.0.1:50052".parse()?, &ChannelOptions::default());
//! let mut users = UserServiceClient::new(channel);
//! # Ok(()) }
//! ```

pub mod breaker;
pub mod channel;
pub mod discovery;
pub mod observe;
pub mod retry;
pub mod target;
pub mod tls;

pub use channel::{ChannelOptions, MeshChannel, connect};
pub use meshwork_proto as proto;
pub use meshwork_proto::{
    hello::v1::hello_service_client::HelloServiceClient, order::v1::order_service_client::OrderServiceClient,
    user::v1::user_service_client::UserServiceClient,
};
pub use meshwork_rpc::Deadline;
pub use target::Target;
pub use tls::ClientTls;
