//! The gRPC handlers of `user.v1.UserService`. Each one parses its request into a domain
//! type, asks the store, and answers; every failure goes through `ApiError`.

use std::sync::Arc;

use meshwork::{
    error::{ApiError, FieldViolations, respond},
    pagination::PageRequest,
    proto::user::v1::{
        self as pb,
        user_service_server::{SERVICE_NAME, UserService},
    },
    time::now_micros,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{NewUser, User, UserChanges, UserId},
    store::UserStore,
};

/// `user.v1.UserService` over a [`UserStore`].
pub struct UserApi {
    store: Arc<dyn UserStore>,
}

impl UserApi {
    pub fn new(store: Arc<dyn UserStore>) -> Self {
        Self { store }
    }

    async fn create(&self, request: pb::CreateUserRequest) -> Result<pb::CreateUserResponse, ApiError> {
        let new = NewUser::try_from(request)?;
        let now = now_micros();
        let user = User {
            // UUIDv7: unique without coordination, and ordered by creation for pagination.
            id: Uuid::now_v7().to_string(),
            name: new.name.as_str().to_owned(),
            email: new.email.as_str().to_owned(),
            create_time: now,
            update_time: now,
        };
        self.store.create(&user).await.map_err(|e| e.into_api(&user.id))?;
        Ok(pb::CreateUserResponse {
            user: Some(user.into()),
        })
    }

    async fn get(&self, request: pb::GetUserRequest) -> Result<pb::GetUserResponse, ApiError> {
        let id = parse_id(request.id)?;
        let user = self
            .store
            .get(id.as_str())
            .await
            .map_err(|e| e.into_api(id.as_str()))?;
        Ok(pb::GetUserResponse {
            user: Some(user.into()),
        })
    }

    async fn list(&self, request: pb::ListUsersRequest) -> Result<pb::ListUsersResponse, ApiError> {
        let mut violations = FieldViolations::new();
        let page = PageRequest::parse(request.page_size, &request.page_token, "", &mut violations);
        let page = violations.into_result(|| page.expect("no violation means the page parsed"))?;
        let users = self
            .store
            .list(page.after.as_deref(), page.fetch_limit())
            .await
            .map_err(|e| e.into_api(""))?;
        let (users, next_page_token) = page.finish(users, "", |user| &user.id);
        Ok(pb::ListUsersResponse {
            users: users.into_iter().map(Into::into).collect(),
            next_page_token,
        })
    }

    async fn update(&self, request: pb::UpdateUserRequest) -> Result<pb::UpdateUserResponse, ApiError> {
        let changes = UserChanges::try_from(request)?;
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
            .delete(id.as_str())
            .await
            .map_err(|e| e.into_api(id.as_str()))?;
        Ok(pb::DeleteUserResponse {})
    }
}

fn parse_id(id: String) -> Result<UserId, ApiError> {
    let mut violations = FieldViolations::new();
    let id = violations.check("id", UserId::parse(id));
    violations.into_result(|| id.expect("no violation means the id parsed"))
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
        respond(SERVICE_NAME, self.get(request.into_inner()).await)
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
        respond(SERVICE_NAME, self.update(request.into_inner()).await)
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        respond(SERVICE_NAME, self.delete(request.into_inner()).await)
    }
}
