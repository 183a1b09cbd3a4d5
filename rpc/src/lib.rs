//! What a gRPC call is, for both ends of it. The server runtime (`meshwork`) and the client
//! stack (`meshwork-clients`) both build on this crate, and on nothing of each other.
//!
//! - [`method`]: the method a request path names, resolved once per call from the
//!   descriptor sets: its call type and whether it is safe to send again.
//! - [`deadline`]: a call's deadline as a value ([`Deadline`], an instant in the request's
//!   extensions), and the one parser and writer of the `grpc-timeout` header.
//! - [`call`]: the end of a call — the final status, from the trailers — reported once to a
//!   [`CallEnd`] hook.
//! - [`observe`]: the outermost layer of either stack, written once: the method resolved,
//!   the call run in its trace (see [`trace`]), its end reported to its side's hook.
//! - [`trace`]: the W3C trace context a call runs in, exported or not: what links a call
//!   to its caller, goes into outgoing metadata and into log lines.
//! - [`metrics`]: Prometheus metrics with the grpc-ecosystem names, for either side.

pub mod call;
pub mod deadline;
pub mod method;
pub mod metrics;
pub mod observe;
pub mod trace;

pub use call::{CallEnd, CallGuard, ObservedBody, code_name, observe_response, status_in};
pub use deadline::Deadline;
pub use method::{CallType, Idempotency, RpcMethod};
pub use observe::{ObserveLayer, Observer};
