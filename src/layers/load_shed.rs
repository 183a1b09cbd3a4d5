//! Overload protection: at most `limit` calls are handled at once; a call beyond that is
//! answered `RESOURCE_EXHAUSTED` at once instead of queueing without bound (a queue only
//! turns overload into timeouts for everyone). Health checks are never shed: a kubelet
//! that cannot get an answer under load would restart a pod that is merely busy.
//!
//! A call holds its slot until its response headers are ready; a stream (WatchOrders)
//! then runs without one, so long-lived watches do not starve short calls.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use meshwork_rpc::RpcMethod;
use tokio::sync::Semaphore;
use tonic::Status;
use tower::{Layer, Service};

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    slots: Arc<Semaphore>,
}

impl LoadShedLayer {
    pub fn new(limit: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit)),
        }
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            slots: self.slots.clone(),
        }
    }
}

/// The service made by [`LoadShedLayer`].
#[derive(Debug, Clone)]
pub struct LoadShed<S> {
    inner: S,
    slots: Arc<Semaphore>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody> Service<Request<ReqBody>> for LoadShed<S>
where
    S: Service<Request<ReqBody>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if RpcMethod::of(&request).is_health() {
            return Box::pin(self.inner.call(request));
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            let status =
                Status::resource_exhausted("server overloaded: too many calls in flight; retry with backoff");
            return Box::pin(std::future::ready(Ok(status.into_http())));
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await;
            drop(slot);
            response
        })
    }
}
