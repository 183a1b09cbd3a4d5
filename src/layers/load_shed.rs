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
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use meshwork_rpc::RpcMethod;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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

impl<S, ReqBody> Service<Request<ReqBody>> for LoadShed<S>
where
    S: Service<Request<ReqBody>, Response = Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = LoadShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let slot = if RpcMethod::of(&request).is_health() {
            None
        } else {
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                let status = Status::resource_exhausted(
                    "server overloaded: too many calls in flight; retry with backoff",
                );
                return LoadShedFuture::Shed {
                    answer: Some(status.into_http()),
                };
            };
            Some(slot)
        };
        LoadShedFuture::Admitted {
            call: self.inner.call(request),
            slot,
        }
    }
}

pin_project_lite::pin_project! {
    /// A call let in (holding its slot until its response headers are ready; health checks
    /// hold none), or the answer to one shed.
    #[project = LoadShedProjection]
    pub enum LoadShedFuture<F> {
        Admitted {
            #[pin]
            call: F,
            slot: Option<OwnedSemaphorePermit>,
        },
        Shed {
            answer: Option<Response<tonic::body::Body>>,
        },
    }
}

impl<F, E> Future for LoadShedFuture<F>
where
    F: Future<Output = Result<Response<tonic::body::Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            LoadShedProjection::Admitted { call, slot } => {
                let response = ready!(call.poll(cx));
                drop(slot.take());
                Poll::Ready(response)
            }
            LoadShedProjection::Shed { answer } => Poll::Ready(Ok(answer
                .take()
                .expect("a LoadShedFuture is not polled after it completes"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tonic::{Code, body::Body};
    use tower::ServiceExt;

    use super::*;

    fn code_of(response: &Response<Body>) -> Code {
        Status::from_header_map(response.headers()).map_or(Code::Ok, |status| status.code())
    }

    #[tokio::test]
    async fn beyond_the_limit_a_call_is_resource_exhausted_and_a_health_check_is_not() {
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let released = Arc::new(tokio::sync::Mutex::new(Some(released)));
        let handler = tower::service_fn(move |_: Request<()>| {
            let released = released.clone();
            async move {
                // The first call holds the only slot until told to finish.
                if let Some(released) = released.lock().await.take() {
                    let _ = released.await;
                }
                Ok::<_, Infallible>(Response::new(Body::empty()))
            }
        });
        let service = LoadShedLayer::new(1).layer(handler);
        let request = |path: &str| Request::builder().uri(path).body(()).unwrap();
        let first = tokio::spawn(service.clone().oneshot(request("/user.v1.UserService/GetUser")));
        tokio::task::yield_now().await;
        let shed = service
            .clone()
            .oneshot(request("/user.v1.UserService/GetUser"))
            .await
            .unwrap();
        assert_eq!(code_of(&shed), Code::ResourceExhausted);
        let health = tokio::spawn(service.clone().oneshot(request("/grpc.health.v1.Health/Check")));
        release.send(()).unwrap();
        assert_eq!(code_of(&first.await.unwrap().unwrap()), Code::Ok);
        assert_eq!(code_of(&health.await.unwrap().unwrap()), Code::Ok);
        // The slot is back.
        let after = service
            .oneshot(request("/user.v1.UserService/GetUser"))
            .await
            .unwrap();
        assert_eq!(code_of(&after), Code::Ok);
    }
}
