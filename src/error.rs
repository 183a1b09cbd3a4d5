//! The one mapping from a failed call to a `tonic::Status`.
//!
//! Handlers return [`ApiError`]; [`ApiError::into_status`] turns it into the status code of
//! CONTRACT.md with the `google.rpc` details AIP-193 asks for: an `ErrorInfo` on every error
//! and a `BadRequest` naming each bad field. Internal causes are logged (with the trace id of
//! the call) and never sent: a caller sees "internal error", not SQL or a panic message.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Why a call failed, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// One or more request fields are missing or malformed.
    #[error("invalid request: {0}")]
    InvalidArgument(FieldViolations),
    /// The named resource does not exist.
    #[error("{resource} {id:?} not found")]
    NotFound { resource: &'static str, id: String },
    /// The resource (or a unique field of it) exists already.
    #[error("{message}")]
    AlreadyExists { reason: &'static str, message: String },
    /// The system is not in the state the call needs (AIP-193 `FAILED_PRECONDITION`).
    #[error("{message}")]
    FailedPrecondition { reason: &'static str, message: String },
    /// A dependency cannot be reached; the caller may retry with backoff.
    #[error("{message}")]
    Unavailable { reason: &'static str, message: String },
    /// The caller's deadline passed before the work was done.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// A bug or an unexpected failure below us; the cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// An unexpected failure, e.g. a database error the domain has no name for.
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(cause.into())
    }

    /// The `tonic::Status` a caller receives. `domain` is the full name of the service that
    /// answers (`user.v1.UserService`), the `ErrorInfo.domain` of AIP-193.
    pub fn into_status(self, domain: &str) -> Status {
        let message = self.to_string();
        let mut details = ErrorDetails::new();
        let (code, reason) = match self {
            Self::InvalidArgument(violations) => {
                for (field, description) in violations.0 {
                    details.add_bad_request_violation(field, description);
                }
                (Code::InvalidArgument, "INVALID_ARGUMENT")
            }
            Self::NotFound { resource, id } => {
                details.set_resource_info(resource, id, "", "not found");
                (Code::NotFound, "NOT_FOUND")
            }
            Self::AlreadyExists { reason, .. } => (Code::AlreadyExists, reason),
            Self::FailedPrecondition { reason, .. } => (Code::FailedPrecondition, reason),
            Self::Unavailable { reason, .. } => (Code::Unavailable, reason),
            Self::DeadlineExceeded => (Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
            Self::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                (Code::Internal, "INTERNAL")
            }
        };
        details.set_error_info(reason, domain, HashMap::new());
        Status::with_error_details(code, message, details)
    }
}

/// A handler's answer: the response, or the error as the `Status` of service `domain`.
pub fn respond<T>(domain: &str, result: Result<T, ApiError>) -> Result<tonic::Response<T>, Status> {
    result
        .map(tonic::Response::new)
        .map_err(|error| error.into_status(domain))
}

/// Every bad field of one request, by its path in the request (`email`, `user.email`,
/// `items[0].quantity`). Validation collects all of them so a caller fixes a request once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldViolations(Vec<(String, String)>);

impl FieldViolations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` is wrong, and why.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push((field.into(), description.into()));
    }

    /// Keeps the value of `result`, or records its error against `field`.
    pub fn check<T>(&mut self, field: impl Into<String>, result: Result<T, String>) -> Option<T> {
        result.map_err(|why| self.add(field, why)).ok()
    }

    /// `Ok(value)` when nothing was recorded, else the violations as an [`ApiError`].
    /// Call it with the fully parsed value once every field has been looked at.
    pub fn into_result<T>(self, value: impl FnOnce() -> T) -> Result<T, ApiError> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(ApiError::InvalidArgument(self))
        }
    }

    /// The paths of the bad fields, in the order found.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(field, _)| field.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for FieldViolations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (field, description)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{field}: {description}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_every_field_in_bad_request_and_error_info() {
        let mut violations = FieldViolations::new();
        violations.add("name", "must not be empty");
        violations.add("email", "must be an email address");
        let status = ApiError::InvalidArgument(violations).into_status("user.v1.UserService");

        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid request: name: must not be empty; email: must be an email address"
        );
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .expect("a BadRequest detail")
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["name", "email"]);
        let info = details.error_info().expect("an ErrorInfo detail");
        assert_eq!(info.domain, "user.v1.UserService");
        assert_eq!(info.reason, "INVALID_ARGUMENT");
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let status =
            ApiError::internal("UNIQUE constraint failed: users.email").into_status("user.v1.UserService");
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }
}
