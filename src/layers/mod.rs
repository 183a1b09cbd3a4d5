//! The server's cross-cutting concerns, one tower `Layer` each (observing a call is
//! `meshwork-rpc`'s `ObserveLayer`, with this crate's [`ServerObserver`]). They are composed, in
//! order, in one place: [`crate::server::serve`].

pub mod auth;
pub mod catch_panic;
pub mod deadline;
pub mod load_shed;
pub mod observe;
pub mod status_codes;

pub use auth::AuthenticateLayer;
pub use catch_panic::CatchPanicLayer;
pub use deadline::DeadlineLayer;
pub use load_shed::LoadShedLayer;
pub use observe::{CallerBody, ServedCall, ServedConnection, ServerObserver};
pub use status_codes::SpecStatusCodesLayer;
