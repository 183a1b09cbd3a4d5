//! A stand-in User service whose GetUser takes as long as a test says, for the tests that
//! need a slow dependency (deadlines, overload). Everything under test stays real: this
//! is only the far end of order-service's calls. It records calls that were cancelled
//! before they finished (their handler dropped), which is how a callee sees a caller give up.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use meshwork_proto::user::v1::{
    CreateUserRequest, CreateUserResponse, DeleteUserRequest, DeleteUserResponse, GetUserRequest,
    GetUserResponse, ListUsersRequest, ListUsersResponse, UpdateUserRequest, UpdateUserResponse, User,
    user_service_server::{UserService, UserServiceServer},
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// Counts of what the stand-in saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub started: AtomicUsize,
    pub finished: AtomicUsize,
    pub cancelled: AtomicUsize,
}

#[derive(Clone)]
struct SlowUsers {
    delay: Duration,
    seen: Arc<Seen>,
}

/// Starts the stand-in on a loopback port; returns its URL and what it sees.
pub async fn start(delay: Duration) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let addr: SocketAddr = listener.local_addr().expect("a bound address");
    let seen = Arc::new(Seen::default());
    let service = UserServiceServer::new(SlowUsers {
        delay,
        seen: seen.clone(),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (format!("http://{addr}"), seen)
}

/// Counts a cancellation when dropped before `done`.
struct CancelGuard {
    seen: Arc<Seen>,
    done: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.done {
            self.seen.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tonic::async_trait]
impl UserService for SlowUsers {
    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<GetUserResponse>, Status> {
        self.seen.started.fetch_add(1, Ordering::SeqCst);
        let mut guard = CancelGuard {
            seen: self.seen.clone(),
            done: false,
        };
        tokio::time::sleep(self.delay).await;
        guard.done = true;
        self.seen.finished.fetch_add(1, Ordering::SeqCst);
        let user = User {
            id: request.into_inner().id,
            name: "Slow".into(),
            email: "slow@example.com".into(),
            ..Default::default()
        };
        Ok(Response::new(GetUserResponse { user: Some(user) }))
    }

    async fn create_user(
        &self,
        _: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    async fn list_users(&self, _: Request<ListUsersRequest>) -> Result<Response<ListUsersResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    async fn update_user(
        &self,
        _: Request<UpdateUserRequest>,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    async fn delete_user(
        &self,
        _: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
}
