//! Observing a call this process makes, once per call (retries included): the outermost
//! layer of the client stack resolves the method (into the request's extensions, for the
//! retry layer below), opens a client span, injects its W3C trace context into the
//! outgoing metadata so the callee's span joins the trace, and hands one end-of-call hook,
//! [`MadeCall`], to the response: it closes the span and counts the call in the
//! `grpc_client_*` metrics.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use http::{Request, Response};
use meshwork_rpc::{
    CallEnd, CallGuard, ObservedBody, RpcMethod,
    metrics::{CLIENT, CallTimer},
    observe_response,
};
use opentelemetry_http::HeaderInjector;
use tonic::Code;
use tower::{Layer, Service};
use tracing::{Instrument, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObserveLayer;

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe { inner }
    }
}

/// The service made by [`ObserveLayer`].
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Observe<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>, Error = Infallible>,
    S::Future: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ObservedBody<ResBody, MadeCall>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let method = RpcMethod::from_path(request.uri().path());
        request.extensions_mut().insert(method);
        let authority = request.uri().authority().cloned();
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = method.full_name,
            otel.kind = "client",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = method.service,
            rpc.method = method.method,
            rpc.grpc.status_code = Empty,
            server.address = authority.as_ref().map(|a| a.host().to_owned()),
            server.port = authority.as_ref().and_then(|a| a.port_u16()),
        );
        let context = span.context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(request.headers_mut()));
        });
        let guard = CallGuard::new(MadeCall {
            span: span.clone(),
            timer: CLIENT.start(method),
        });

        let call = self.inner.call(request).instrument(span);
        Box::pin(async move {
            let Ok(response) = call.await;
            Ok(observe_response(response, guard))
        })
    }
}

/// Everything that learns how one outgoing call ended.
pub struct MadeCall {
    span: Span,
    timer: CallTimer,
}

impl CallEnd for MadeCall {
    fn ended(self, code: Code) {
        self.span.record("rpc.grpc.status_code", code as i32);
        // On the client, every code but OK is an error (OpenTelemetry's gRPC conventions).
        if code != Code::Ok {
            self.span.record("otel.status_code", "ERROR");
        }
        self.timer.finish(code);
    }
}
