//! Does a user exist? The Order service asks the User service over gRPC.

use std::time::Duration;

use async_trait::async_trait;
use meshwork::{error::ApiError, proto::user::v1::GetUserRequest};
use meshwork_clients::{UserServiceClient, deadline};
use tonic::{Code, metadata::MetadataMap, transport::Channel};

/// The question CreateOrder asks before it stores anything.
#[async_trait]
pub trait UserDirectory: Send + Sync + 'static {
    /// Whether `user_id` exists, asked within the deadline the caller's `incoming`
    /// metadata carries (capped by the directory's own limit).
    async fn user_exists(&self, user_id: &str, incoming: &MetadataMap) -> Result<bool, ApiError>;
}

/// [`UserDirectory`] backed by `user.v1.UserService/GetUser`.
pub struct GrpcUserDirectory {
    client: UserServiceClient<Channel>,
    timeout_cap: Duration,
}

impl GrpcUserDirectory {
    pub fn new(channel: Channel, timeout_cap: Duration) -> Self {
        Self {
            client: UserServiceClient::new(channel),
            timeout_cap,
        }
    }
}

#[async_trait]
impl UserDirectory for GrpcUserDirectory {
    async fn user_exists(&self, user_id: &str, incoming: &MetadataMap) -> Result<bool, ApiError> {
        let budget = deadline::budget(incoming, self.timeout_cap);
        if budget.timeout.is_zero() {
            return Err(ApiError::DeadlineExceeded);
        }
        let mut request = tonic::Request::new(GetUserRequest {
            id: user_id.to_owned(),
        });
        // The header tells the User service when to give up; the local timer covers a
        // connection that never answers at all.
        request.set_timeout(budget.timeout);
        let mut client = self.client.clone();
        let answer = tokio::time::timeout(budget.timeout, client.get_user(request)).await;
        let unavailable = |why: String| ApiError::Unavailable {
            reason: "USER_SERVICE_UNAVAILABLE",
            message: format!("the user service is unavailable: {why}"),
        };
        match answer {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(status)) if status.code() == Code::NotFound => Ok(false),
            Ok(Err(status)) if status.code() == Code::DeadlineExceeded && budget.caller_bound => {
                Err(ApiError::DeadlineExceeded)
            }
            Ok(Err(status)) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "GetUser failed");
                Err(unavailable(format!("{:?}", status.code())))
            }
            Err(_elapsed) if budget.caller_bound => Err(ApiError::DeadlineExceeded),
            Err(_elapsed) => Err(unavailable(format!("no answer within {:?}", budget.timeout))),
        }
    }
}
