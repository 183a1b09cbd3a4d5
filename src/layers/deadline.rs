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
    task::{Context, Poll, ready},
    time::Duration,
};

use http::{Request, Response};
use meshwork_rpc::Deadline;
use tokio::time::Timeout;
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

impl<S, ReqBody> Service<Request<ReqBody>> for Deadlines<S>
where
    S: Service<Request<ReqBody>, Response = Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let deadline = Deadline::after(self.cap).min(Deadline::from_headers(request.headers()));
        request.extensions_mut().insert(deadline);
        DeadlineFuture {
            call: tokio::time::timeout_at(deadline.0, self.inner.call(request)),
            deadline,
        }
    }
}

pin_project_lite::pin_project! {
    /// A call raced against its deadline. (The timer is registered only if the call is not
    /// done on its first poll.)
    pub struct DeadlineFuture<F> {
        #[pin]
        call: Timeout<F>,
        deadline: Deadline,
    }
}

impl<F, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<Response<tonic::body::Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let exceeded = || Ok(Status::deadline_exceeded("the call's deadline passed").into_http());
        Poll::Ready(match ready!(this.call.poll(cx)) {
            Ok(_late) if this.deadline.has_passed() => exceeded(),
            Ok(result) => result,
            Err(_elapsed) => exceeded(),
        })
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

    /// A handler that takes `delay` to answer OK, behind a deadline layer capped at `cap`.
    async fn call_taking(delay: Duration, cap: Duration, blocking: bool) -> Code {
        let handler = tower::service_fn(move |_: Request<()>| async move {
            if blocking {
                // Finishes without ever yielding: only the late check can catch it.
                std::thread::sleep(delay);
            } else {
                tokio::time::sleep(delay).await;
            }
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
        let response = DeadlineLayer::new(cap)
            .layer(handler)
            .oneshot(Request::new(()))
            .await
            .unwrap();
        code_of(&response)
    }

    #[tokio::test]
    async fn a_call_within_its_deadline_is_answered() {
        assert_eq!(
            call_taking(Duration::ZERO, Duration::from_secs(5), false).await,
            Code::Ok
        );
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_is_deadline_exceeded() {
        let (delay, cap) = (Duration::from_secs(5), Duration::from_millis(20));
        assert_eq!(call_taking(delay, cap, false).await, Code::DeadlineExceeded);
    }

    #[tokio::test]
    async fn a_call_that_finishes_late_is_deadline_exceeded() {
        let (delay, cap) = (Duration::from_millis(5), Duration::from_micros(100));
        assert_eq!(call_taking(delay, cap, true).await, Code::DeadlineExceeded);
    }
}
