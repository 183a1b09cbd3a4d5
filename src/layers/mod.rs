//! The server's cross-cutting concerns, one tower `Layer` each. They are composed, in
//! order, in one place: [`crate::server::serve`].

pub mod deadline;
pub mod status_codes;

pub use deadline::DeadlineLayer;
pub use status_codes::SpecStatusCodesLayer;
