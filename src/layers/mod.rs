//! The server's cross-cutting concerns, one tower `Layer` each. They are composed, in
//! order, in one place: [`crate::server::serve`].

pub mod deadline;
pub mod load_shed;
pub mod metrics;
pub mod status_codes;
pub mod trace;

pub use deadline::DeadlineLayer;
pub use load_shed::LoadShedLayer;
pub use metrics::MetricsLayer;
pub use status_codes::SpecStatusCodesLayer;
pub use trace::{ClientTraceLayer, ServerTraceLayer};
