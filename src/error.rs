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
    /// A position outside what is kept (a `WatchOrders` resume point older than the
    /// outbox keeps): the caller must start over (re-list, then watch).
    #[error("{message}")]
    OutOfRange { reason: &'static str, message: String },
    /// A limit of this server is reached (too many watches); the caller may retry later.
    #[error("{message}")]
    ResourceExhausted { reason: &'static str, message: String },
    /// A dependency cannot be reached; the caller may retry with backoff.
    #[error("{message}")]
    Unavailable { reason: &'static str, message: String },
    /// The caller's deadline passed before the work was done.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// No credentials, or ones that do not verify; `message` must not say which check
    /// failed (it would help an attacker), and never echoes the token.
    #[error("{message}")]
    Unauthenticated {
        reason: &'static str,
        message: &'static str,
    },
    /// A valid caller that the policy does not allow.
    #[error("{message}")]
    PermissionDenied { reason: &'static str, message: String },
    /// A bug or an unexpected failure below us; the cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// The service's database does not answer (`what`: "user", "order"): logged with its
    /// cause, answered `UNAVAILABLE` so that the caller retries later.
    pub fn database_unavailable(what: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "database unavailable");
        Self::Unavailable {
            reason: "DATABASE_UNAVAILABLE",
            message: format!("the {what} database is unavailable; retry later"),
        }
    }

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
                for (field, description) in violations.found {
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
            Self::OutOfRange { reason, .. } => (Code::OutOfRange, reason),
            Self::ResourceExhausted { reason, .. } => (Code::ResourceExhausted, reason),
            Self::Unavailable { reason, .. } => (Code::Unavailable, reason),
            Self::DeadlineExceeded => (Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
            Self::Unauthenticated { reason, .. } => (Code::Unauthenticated, reason),
            Self::PermissionDenied { reason, .. } => (Code::PermissionDenied, reason),
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
///
/// Parsing hands back values, not booleans: [`check`](Self::check) gives a [`Checked`] per
/// field, and [`finish`](Self::finish) turns all of them (a tuple, a `Vec`) into the parsed
/// values, or into the one `InvalidArgument` error naming every bad field:
///
/// ```
/// # use meshwork::error::{ApiError, FieldViolations};
/// fn parse(name: &str, age: &str) -> Result<(String, u8), ApiError> {
///     let mut violations = FieldViolations::new();
///     let name = violations.check("name", match name {
///         "" => Err("must not be empty".to_string()),
///         name => Ok(name.to_owned()),
///     });
///     let age = violations.check("age", age.parse::<u8>().map_err(|e| e.to_string()));
///     violations.finish((name, age))
/// }
/// assert_eq!(parse("Ada", "36").unwrap(), ("Ada".to_string(), 36));
/// assert!(parse("", "old").is_err());
/// ```
///
/// What is sent stays small whatever the request: at most [`MAX_VIOLATIONS`] are kept (the
/// rest are counted, "and N more"), and each field path and description is clipped, so an
/// error's trailers stay under 8 KiB, which every gRPC client can read (grpc-java's limit).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldViolations {
    found: Vec<(String, String)>,
    /// Violations past [`MAX_VIOLATIONS`], counted, not kept.
    more: usize,
}

/// The most field violations one error lists.
pub const MAX_VIOLATIONS: usize = 20;
/// Longest field path kept, in bytes.
const MAX_FIELD_BYTES: usize = 48;
/// Longest description kept, in bytes (a description may quote what the caller sent).
const MAX_DESCRIPTION_BYTES: usize = 96;
/// Longest list of violations in the status message (`grpc-message`, percent-encoded, so
/// up to three times this on the wire); the `BadRequest` detail has them all.
const MAX_MESSAGE_BYTES: usize = 512;

/// `text` cut to at most `max` bytes, at a character boundary, marked with `…` when cut.
fn clip(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

/// One checked field: its parsed value, or the proof that its violation was recorded.
pub type Checked<T> = Result<T, Recorded>;

/// Proof that a field violation was recorded. Only [`FieldViolations`] makes one (the field
/// is private), so an `Err` in a [`Checked`] always has its violation in the collector:
/// "no violation, yet no value" cannot be written, and no caller needs an `expect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded(());

/// Checked parts that make one value when every part parsed: a [`Checked`], a tuple of
/// them, or a `Vec` of them (each element checked already, so no violation is missed).
pub trait AllChecked {
    type Value;
    /// The parsed values, or the proof that some part's violation was recorded.
    fn all(self) -> Checked<Self::Value>;
}

impl<T> AllChecked for Checked<T> {
    type Value = T;
    fn all(self) -> Checked<T> {
        self
    }
}

impl<P: AllChecked> AllChecked for Vec<P> {
    type Value = Vec<P::Value>;
    fn all(self) -> Checked<Self::Value> {
        self.into_iter().map(AllChecked::all).collect()
    }
}

macro_rules! all_checked_tuples {
    ($(($($part:ident),+)),+) => {$(
        impl<$($part: AllChecked),+> AllChecked for ($($part,)+) {
            type Value = ($($part::Value,)+);
            #[allow(non_snake_case)]
            fn all(self) -> Checked<Self::Value> {
                let ($($part,)+) = self;
                Ok(($($part.all()?,)+))
            }
        }
    )+};
}

all_checked_tuples!(
    (A, B),
    (A, B, C),
    (A, B, C, D),
    (A, B, C, D, E),
    (A, B, C, D, E, F)
);

impl FieldViolations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` is wrong, and why (counted only, past [`MAX_VIOLATIONS`]).
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        if self.found.len() == MAX_VIOLATIONS {
            self.more += 1;
            return;
        }
        let field = clip(field.into(), MAX_FIELD_BYTES);
        let description = clip(description.into(), MAX_DESCRIPTION_BYTES);
        self.found.push((field, description));
    }

    /// Whether [`MAX_VIOLATIONS`] have been recorded: a validator looping over many
    /// elements may stop looking.
    pub fn is_full(&self) -> bool {
        self.found.len() == MAX_VIOLATIONS
    }

    /// Keeps the value of `result`, or records its error against `field`.
    pub fn check<T>(&mut self, field: impl Into<String>, result: Result<T, String>) -> Checked<T> {
        result.map_err(|why| {
            self.add(field, why);
            Recorded(())
        })
    }

    /// Checks what is made of an already checked value (an order's total, of its parsed
    /// items). When that value did not parse, its recorded violation stands for this one.
    pub fn check_with<T, U>(
        &mut self,
        field: impl Into<String>,
        from: &Checked<T>,
        parse: impl FnOnce(&T) -> Result<U, String>,
    ) -> Checked<U> {
        match from {
            Ok(value) => self.check(field, parse(value)),
            Err(recorded) => Err(*recorded),
        }
    }

    /// The parsed values of `parts` when nothing was recorded, else every violation as one
    /// [`ApiError::InvalidArgument`]. Call it once every field has been looked at.
    pub fn finish<P: AllChecked>(self, parts: P) -> Result<P::Value, ApiError> {
        match parts.all() {
            Ok(values) if self.found.is_empty() => Ok(values),
            _ => Err(ApiError::InvalidArgument(self)),
        }
    }

    /// The paths of the bad fields, in the order found.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.found.iter().map(|(field, _)| field.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }
}

impl ApiError {
    /// One bad field: `field` is wrong, and why.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        let mut violations = FieldViolations::new();
        violations.add(field, description);
        Self::InvalidArgument(violations)
    }
}

impl std::fmt::Display for FieldViolations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut written = 0;
        for (i, (field, description)) in self.found.iter().enumerate() {
            let entry = field.len() + description.len() + 4;
            if i > 0 && written + entry > MAX_MESSAGE_BYTES {
                let unlisted = self.found.len() - i + self.more;
                return write!(f, "; and {unlisted} more");
            }
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{field}: {description}")?;
            written += entry;
        }
        if self.more > 0 {
            write!(f, "; and {} more", self.more)?;
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
    fn finish_hands_back_every_parsed_value_or_every_violation() {
        let parse = |name: &str, sizes: &[i32]| {
            let mut violations = FieldViolations::new();
            let name = violations.check(
                "name",
                Some(name.to_owned())
                    .filter(|n| !n.is_empty())
                    .ok_or("must not be empty".to_string()),
            );
            let sizes: Vec<_> = sizes
                .iter()
                .enumerate()
                .map(|(i, &size)| {
                    violations.check(
                        format!("sizes[{i}]"),
                        u32::try_from(size).map_err(|e| e.to_string()),
                    )
                })
                .collect();
            let sizes = sizes.all();
            let total = violations.check_with("sizes", &sizes, |sizes| {
                sizes
                    .iter()
                    .try_fold(0u32, |sum, size| sum.checked_add(*size))
                    .ok_or("too large".to_string())
            });
            violations.finish((name, sizes, total))
        };
        assert_eq!(parse("a", &[1, 2]).unwrap(), ("a".to_string(), vec![1, 2], 3));
        let fields = |error: ApiError| match error {
            ApiError::InvalidArgument(violations) => {
                violations.fields().map(str::to_owned).collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        };
        // Every bad element is named, not only the first; a total of bad parts is not.
        assert_eq!(
            fields(parse("", &[-1, 2, -3]).unwrap_err()),
            ["name", "sizes[0]", "sizes[2]"]
        );
        assert_eq!(
            fields(parse("a", &[i32::MAX, i32::MAX, 2]).unwrap_err()),
            ["sizes"]
        );
        // A violation without a value of its own (`add`) fails the request too.
        let mut violations = FieldViolations::new();
        violations.add("items", "must have at least one item");
        assert_eq!(
            fields(violations.finish(Ok::<_, Recorded>(())).unwrap_err()),
            ["items"]
        );
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let status =
            ApiError::internal("UNIQUE constraint failed: users.email").into_status("user.v1.UserService");
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn an_error_with_thousands_of_violations_keeps_its_trailers_under_8_kib() {
        let mut violations = FieldViolations::new();
        for i in 0..100_000 {
            violations.add(format!("items[{i}].sku.{}", "x".repeat(500)), "é".repeat(1000));
        }
        assert_eq!(violations.fields().count(), MAX_VIOLATIONS);
        let status = ApiError::InvalidArgument(violations).into_status("order.v1.OrderService");
        let mut headers = http::HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        let size: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        assert!(size < 8 * 1024, "trailers of {size} bytes");
        assert!(status.message().ends_with(" more"), "{}", status.message());
        let listed = status
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations
            .len();
        assert_eq!(listed, MAX_VIOLATIONS);
    }
}
