//! The `google.rpc` details of a failed call (AIP-193), as CONTRACT.md says every Meshwork
//! error carries them: an `ErrorInfo` always, a `BadRequest` for invalid fields. They travel
//! in the `grpc-status-details-bin` trailer; tonic-types decodes it.

use tonic::Status;
use tonic_types::{ErrorInfo, StatusExt};

/// `(field, description)` of every field a `google.rpc.BadRequest` detail names, each by
/// its path in the request (`email`, `user.email`, `items[0].quantity`); empty when the
/// error has no such detail.
///
/// ```
/// use tonic::{Code, Status};
/// use tonic_types::{ErrorDetails, StatusExt};
///
/// let status = Status::with_error_details(
///     Code::InvalidArgument,
///     "invalid request",
///     ErrorDetails::with_bad_request_violation("email", "not an email address"),
/// );
/// assert_eq!(
///     meshwork_clients::field_violations(&status),
///     [("email".to_string(), "not an email address".to_string())]
/// );
/// assert!(meshwork_clients::field_violations(&Status::not_found("no such user")).is_empty());
/// ```
pub fn field_violations(status: &Status) -> Vec<(String, String)> {
    let details = status.get_error_details();
    let Some(bad_request) = details.bad_request() else {
        return Vec::new();
    };
    bad_request
        .field_violations
        .iter()
        .map(|violation| (violation.field.clone(), violation.description.clone()))
        .collect()
}

/// The error's `google.rpc.ErrorInfo`: its `reason` (UPPER_SNAKE_CASE) and `domain` (the
/// full name of the service that answered), or `None` when it carries none.
///
/// ```
/// use std::collections::HashMap;
/// use tonic::{Code, Status};
/// use tonic_types::{ErrorDetails, StatusExt};
///
/// let status = Status::with_error_details(
///     Code::AlreadyExists,
///     "email already taken",
///     ErrorDetails::with_error_info("EMAIL_ALREADY_EXISTS", "user.v1.UserService", HashMap::new()),
/// );
/// let info = meshwork_clients::error_info(&status).expect("an ErrorInfo");
/// assert_eq!((info.reason.as_str(), info.domain.as_str()), ("EMAIL_ALREADY_EXISTS", "user.v1.UserService"));
/// ```
pub fn error_info(status: &Status) -> Option<ErrorInfo> {
    status.get_error_details().error_info().cloned()
}
