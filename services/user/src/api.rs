//! The gRPC handlers of `user.v1.UserService`. Each one parses its request into a domain
//! type, asks the store, and answers; every failure goes through `ApiError`. The admin-only
//! methods are refused by the runtime's authentication layer; the rules that need the id
//! (GetUser, UpdateUser: the caller's own user, or an admin) are checked here.

use std::sync::Arc;

use meshwork::{
    Caller,
    error::{ApiError, FieldViolations, respond},
    pagination::PageRequest,
    time::now_micros,
};
use meshwork_proto::user::v1::{
    self as pb,
    user_service_server::{SERVICE_NAME, UserService},
};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::{
    domain::{NewUser, User, UserChanges, UserId},
    store::UserStore,
};

/// `user.v1.UserService` over a [`UserStore`].
pub struct UserApi {
    store: Arc<UserStore>,
    /// The largest response (`MAX_MESSAGE_BYTES`): a ListUsers page is cut to fit it.
    max_message_bytes: usize,
}

impl UserApi {
    pub fn new(store: Arc<UserStore>, max_message_bytes: usize) -> Self {
        Self {
            store,
            max_message_bytes,
        }
    }

    async fn create(&self, request: pb::CreateUserRequest) -> Result<pb::CreateUserResponse, ApiError> {
        let new = NewUser::try_from(request)?;
        let now = now_micros();
        let user = User {
            id: UserId::generate(),
            name: new.name,
            email: new.email,
            create_time: now,
            update_time: now,
        };
        let created = self.store.create(&user).await;
        created.map_err(|e| e.into_api(user.id.as_str()))?;
        Ok(pb::CreateUserResponse {
            user: Some(user.into()),
        })
    }

    async fn get(
        &self,
        caller: &Caller,
        request: pb::GetUserRequest,
    ) -> Result<pb::GetUserResponse, ApiError> {
        let id = parse_id(request.id)?;
        caller.may_act_for(id.as_str())?;
        let user = self.store.get(&id).await.map_err(|e| e.into_api(id.as_str()))?;
        Ok(pb::GetUserResponse {
            user: Some(user.into()),
        })
    }

    async fn list(&self, request: pb::ListUsersRequest) -> Result<pb::ListUsersResponse, ApiError> {
        let mut violations = FieldViolations::new();
        let page = PageRequest::parse(request.page_size, &request.page_token, "", &mut violations);
        let page = violations.finish(page)?;
        let users = self
            .store
            .list(page.after.as_deref(), page.fetch_limit())
            .await
            .map_err(|e| e.into_api(""))?;
        let users: Vec<pb::User> = users.into_iter().map(Into::into).collect();
        let (users, next_page_token) = page.finish(
            users,
            "",
            |user| user.id.as_str(),
            Message::encoded_len,
            self.max_message_bytes,
        );
        Ok(pb::ListUsersResponse {
            users,
            next_page_token,
        })
    }

    async fn update(
        &self,
        caller: &Caller,
        request: pb::UpdateUserRequest,
    ) -> Result<pb::UpdateUserResponse, ApiError> {
        let changes = UserChanges::try_from(request)?;
        caller.may_act_for(changes.id.as_str())?;
        let user = self
            .store
            .update(&changes, now_micros())
            .await
            .map_err(|e| e.into_api(changes.id.as_str()))?;
        Ok(pb::UpdateUserResponse {
            user: Some(user.into()),
        })
    }

    async fn delete(&self, request: pb::DeleteUserRequest) -> Result<pb::DeleteUserResponse, ApiError> {
        let id = parse_id(request.id)?;
        self.store
            .delete(&id, now_micros())
            .await
            .map_err(|e| e.into_api(id.as_str()))?;
        Ok(pb::DeleteUserResponse {})
    }
}

fn parse_id(id: String) -> Result<UserId, ApiError> {
    UserId::parse(id).map_err(|why| ApiError::invalid_field("id", why))
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        respond(SERVICE_NAME, self.create(request.into_inner()).await)
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let (_, extensions, request) = request.into_parts();
        respond(SERVICE_NAME, self.get(Caller::of(&extensions), request).await)
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        respond(SERVICE_NAME, self.list(request.into_inner()).await)
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let (_, extensions, request) = request.into_parts();
        respond(SERVICE_NAME, self.update(Caller::of(&extensions), request).await)
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        respond(SERVICE_NAME, self.delete(request.into_inner()).await)
    }
}
