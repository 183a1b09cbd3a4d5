//! Does a user exist? The Order service asks the User service over gRPC.

use async_trait::async_trait;
use meshwork::error::ApiError;
use meshwork_clients::{Deadline, MeshChannel, UserServiceClient};
use meshwork_proto::user::v1::GetUserRequest;
use tonic::codegen::http::HeaderValue;
use tonic::{Code, metadata::MetadataValue};

/// The question CreateOrder asks before it stores anything.
#[async_trait]
pub trait UserDirectory: Send + Sync + 'static {
    /// Whether `user_id` exists, asked within `deadline` (the deadline of the call being
    /// served; the channel caps it by `USER_SERVICE_TIMEOUT`) on behalf of the caller whose
    /// `credential` (its `authorization` header) is passed on, so that User applies the
    /// same policy to the same caller.
    async fn user_exists(
        &self,
        user_id: &str,
        deadline: Option<Deadline>,
        credential: Option<&HeaderValue>,
    ) -> Result<bool, ApiError>;
}

/// [`UserDirectory`] backed by `user.v1.UserService/GetUser`.
pub struct GrpcUserDirectory {
    client: UserServiceClient<MeshChannel>,
}

impl GrpcUserDirectory {
    /// `channel` caps each call by `USER_SERVICE_TIMEOUT` ([`meshwork_clients::ChannelOptions::timeout`]).
    pub fn new(channel: MeshChannel) -> Self {
        Self {
            client: UserServiceClient::new(channel),
        }
    }
}

#[async_trait]
impl UserDirectory for GrpcUserDirectory {
    async fn user_exists(
        &self,
        user_id: &str,
        deadline: Option<Deadline>,
        credential: Option<&HeaderValue>,
    ) -> Result<bool, ApiError> {
        if deadline.is_some_and(|deadline| deadline.has_passed()) {
            return Err(ApiError::DeadlineExceeded);
        }
        let mut request = tonic::Request::new(GetUserRequest {
            id: user_id.to_owned(),
        });
        if let Some(deadline) = deadline {
            request.extensions_mut().insert(deadline);
        }
        if let Some(credential) = credential.and_then(|value| MetadataValue::try_from(value.as_bytes()).ok())
        {
            request.metadata_mut().insert("authorization", credential);
        }
        let status = match self.client.clone().get_user(request).await {
            Ok(_) => return Ok(true),
            Err(status) if status.code() == Code::NotFound => return Ok(false),
            Err(status) => status,
        };
        // User refused the caller Order passed on: the caller's problem, not an outage.
        match status.code() {
            Code::PermissionDenied => {
                return Err(ApiError::PermissionDenied {
                    reason: "PERMISSION_DENIED",
                    message: "the user service does not allow this caller to see that user".into(),
                });
            }
            Code::Unauthenticated => {
                return Err(ApiError::Unauthenticated {
                    reason: "CREDENTIALS_INVALID",
                    message: "the user service did not accept the caller's credentials",
                });
            }
            _ => {}
        }
        // Out of time: the caller's deadline is DEADLINE_EXCEEDED; if it has not passed, the
        // channel's own cap did, which means the User service was too slow: UNAVAILABLE.
        if status.code() == Code::DeadlineExceeded {
            return Err(match deadline.is_some_and(|deadline| deadline.has_passed()) {
                true => ApiError::DeadlineExceeded,
                false => unavailable("no answer in time".into()),
            });
        }
        tracing::warn!(code = ?status.code(), message = status.message(), "GetUser failed");
        Err(unavailable(format!("{:?}", status.code())))
    }
}

/// The User service could not answer; `why` is for the caller, so it holds no internals.
fn unavailable(why: String) -> ApiError {
    ApiError::Unavailable {
        reason: "USER_SERVICE_UNAVAILABLE",
        message: format!("cannot reach the user service: {why}"),
    }
}
