//! Deadlines. On arrival, the caller's `grpc-timeout` (capped by the server's own
//! `MAX_CALL_DURATION`) becomes an absolute [`Deadline`] in the request's extensions, where
//! handlers find it to pass on to the calls they make. The call ends with
//! `DEADLINE_EXCEEDED` when that instant passes first; the handler's future is dropped
//! then, which cancels whatever it was waiting on, downstream calls included. A handler
//! that finishes after its deadline is answered `DEADLINE_EXCEEDED` too, however short the
//! deadline was (the timer's resolution is a millisecond).
//!
//! The limit covers the work up to the response headers: a server-streaming call's stream
//! (WatchOrders) is not cut by it.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use meshwork_rpc::Deadline;
use tonic::Status;
use tower::{Layer, Service};

/// See the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    /// The longest any call may take, whatever the caller asks for.
    cap: Duration,
}

impl DeadlineLayer {
    pub fn new(cap: Duration) -> Self {
        Self { cap }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadlines<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadlines { inner, cap: self.cap }
    }
}

/// The service made by [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct Deadlines<S> {
    inner: S,
    cap: Duration,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody> Service<Request<ReqBody>> for Deadlines<S>
where
    S: Service<Request<ReqBody>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let deadline = Deadline::after(self.cap).min(Deadline::from_headers(request.headers()));
        request.extensions_mut().insert(deadline);
        let call = self.inner.call(request);
        Box::pin(async move {
            let exceeded = || Ok(Status::deadline_exceeded("the call's deadline passed").into_http());
            match tokio::time::timeout_at(deadline.0, call).await {
                Ok(_late) if deadline.has_passed() => exceeded(),
                Ok(result) => result,
                Err(_elapsed) => exceeded(),
            }
        })
    }
}
