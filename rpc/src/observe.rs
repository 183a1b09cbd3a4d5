//! The outermost layer of either stack: it resolves the call's method once (into the
//! request's extensions, for every layer and handler below), lets the side's [`Observer`]
//! place the call in its trace and make its end-of-call hook, runs the call in its trace
//! (span and ids, see [`crate::trace`]), and hands the hook to the response, where it hears
//! the final status (see [`crate::call`]).
//!
//! The server's observer feeds span, metrics, access log and connection activity; the
//! client's feeds its span and metrics. The layer itself is written once, here.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use tower::{Layer, Service};

use crate::{
    CallEnd, CallGuard, ObservedBody, RpcMethod, observe_response,
    trace::{CallTrace, InCall},
};

/// What one side does when a call begins.
pub trait Observer: Clone + Send + 'static {
    /// Hears how the call ended.
    type End: CallEnd;

    /// Places the call in its trace ([`crate::trace::continue_trace`]), and makes the hook
    /// for its end. `request` carries `method` in its extensions already, and may be changed
    /// (headers injected).
    fn begin<B>(&self, method: RpcMethod, request: &mut Request<B>) -> (CallTrace, Self::End);
}

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObserveLayer<O> {
    observer: O,
}

impl<O> ObserveLayer<O> {
    pub fn new(observer: O) -> Self {
        Self { observer }
    }
}

impl<S, O: Clone> Layer<S> for ObserveLayer<O> {
    type Service = Observe<S, O>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            observer: self.observer.clone(),
        }
    }
}

/// The service made by [`ObserveLayer`].
#[derive(Debug, Clone)]
pub struct Observe<S, O> {
    inner: S,
    observer: O,
}

impl<S, O, ReqBody, ResBody> Service<Request<ReqBody>> for Observe<S, O>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>, Error = Infallible>,
    O: Observer,
{
    type Response = Response<ObservedBody<ResBody, O::End>>;
    type Error = Infallible;
    // Boxed here, once: unboxed, the whole stack's future would sit inside hyper's stream
    // task, which then cost more to spawn and poll than the allocation (callgrind).
    type Future = Pin<Box<ObserveFuture<S::Future, O::End>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let method = RpcMethod::from_path(request.uri().path());
        request.extensions_mut().insert(method);
        let (trace, on_end) = self.observer.begin(method, &mut request);
        Box::pin(ObserveFuture {
            call: trace.run(self.inner.call(request)),
            guard: Some(CallGuard::new(on_end)),
        })
    }
}

pin_project_lite::pin_project! {
    /// The future of an observed call (a named type rather than a boxed `async` block: no
    /// allocation per call): the call, run in its trace, and then its response observed.
    pub struct ObserveFuture<F, E: CallEnd> {
        #[pin]
        call: InCall<F>,
        // Until the response is ready; dropped with the future before that, it reports
        // the call `Canceled`.
        guard: Option<CallGuard<E>>,
    }
}

impl<F, B, E> Future for ObserveFuture<F, E>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
    E: CallEnd,
{
    type Output = Result<Response<ObservedBody<B, E>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.call.poll(cx));
        let guard = this
            .guard
            .take()
            .expect("an ObserveFuture is not polled after it completes");
        Poll::Ready(Ok(observe_response(response, guard)))
    }
}
