//! A handler that panics answers `INTERNAL` ("internal error"), and the panic is logged
//! inside the call, so the line carries the call's trace id. Without this layer the panic
//! would end hyper's stream task: the caller would see a reset stream and the log a bare
//! panic message with no call to tie it to.
//!
//! Written here rather than taken from tower-http's `CatchPanicLayer`, which answers with
//! its own body type and an HTTP 500 instead of a gRPC status; what remains is ten lines.

use std::{
    any::Any,
    panic::AssertUnwindSafe,
    pin::Pin,
    task::{Context, Poll},
};

use http::{Request, Response};
use tonic::{Status, body::Body};
use tower::{Layer, Service};

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic { inner }
    }
}

/// The service made by [`CatchPanicLayer`].
#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S, ReqBody> Service<Request<ReqBody>> for CatchPanic<S>
where
    S: Service<Request<ReqBody>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = CatchPanicFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // A panic while the call is being set up is caught like one while it runs.
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(call) => CatchPanicFuture::Running { call },
            Err(panic) => CatchPanicFuture::Panicked { panic: Some(panic) },
        }
    }
}

pin_project_lite::pin_project! {
    /// A call whose panic, while it is set up or while it runs, becomes `INTERNAL`.
    #[project = CatchPanicProjection]
    pub enum CatchPanicFuture<F> {
        Running {
            #[pin]
            call: F,
        },
        Panicked {
            panic: Option<Box<dyn Any + Send>>,
        },
    }
}

impl<F, E> Future for CatchPanicFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let panic = match self.project() {
            CatchPanicProjection::Running { call } => {
                match std::panic::catch_unwind(AssertUnwindSafe(|| call.poll(cx))) {
                    Ok(poll) => return poll,
                    Err(panic) => panic,
                }
            }
            CatchPanicProjection::Panicked { panic } => panic
                .take()
                .expect("a CatchPanicFuture is not polled after it completes"),
        };
        tracing::error!(panic = panic_message(&*panic), "handler panicked");
        Poll::Ready(Ok(Status::internal("internal error").into_http()))
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => text,
        (_, Some(text)) => text,
        _ => "a panic without a message",
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_internal() {
        let handler = tower::service_fn(|_: Request<()>| async {
            if true {
                panic!("index out of bounds");
            }
            Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
        });
        let response = CatchPanic { inner: handler }
            .oneshot(Request::new(()))
            .await
            .unwrap();
        let status = Status::from_header_map(response.headers()).expect("a grpc-status");
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(
            status.message(),
            "internal error",
            "the panic message is not sent"
        );
    }
}
