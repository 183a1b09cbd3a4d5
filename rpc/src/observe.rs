//! The outermost layer of either stack: it resolves the call's method once (into the
//! request's extensions, for every layer and handler below), lets the side's [`Observer`]
//! open the call's span and make its end-of-call hook, runs the call inside that span, and
//! hands the hook to the response, where it hears the final status (see [`crate::call`]).
//!
//! The server's observer feeds span, metrics, access log and connection activity; the
//! client's feeds its span and metrics. The layer itself is written once, here.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower::{Layer, Service};
use tracing::{Instrument, Span};

use crate::{CallEnd, CallGuard, ObservedBody, RpcMethod, observe_response};

/// What one side does when a call begins.
pub trait Observer: Clone + Send + 'static {
    /// Hears how the call ended.
    type End: CallEnd;

    /// Opens the span the call runs in, and makes the hook for its end. `request` carries
    /// `method` in its extensions already, and may be changed (headers injected).
    fn begin<B>(&self, method: RpcMethod, request: &mut Request<B>) -> (Span, Self::End);
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
    S::Future: Send + 'static,
    O: Observer,
    ResBody: Send + 'static,
{
    type Response = Response<ObservedBody<ResBody, O::End>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let method = RpcMethod::from_path(request.uri().path());
        request.extensions_mut().insert(method);
        let (span, on_end) = self.observer.begin(method, &mut request);
        let guard = CallGuard::new(on_end);
        let call = self.inner.call(request).instrument(span);
        Box::pin(async move {
            let Ok(response) = call.await;
            Ok(observe_response(response, guard))
        })
    }
}
