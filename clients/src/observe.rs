//! How the client stack observes a call it makes (retries included), for
//! [`meshwork_rpc::ObserveLayer`]: a client span (exported when spans are; otherwise only its
//! ids, see [`meshwork_rpc::trace`]) whose W3C trace context goes into the outgoing metadata,
//! so the callee joins the trace, and one end-of-call hook, [`MadeCall`], that closes the span
//! and counts the call in the `grpc_client_*` metrics.

use http::Request;
use meshwork_rpc::{
    CallEnd, Observer, RpcMethod,
    metrics::{CLIENT, CallTimer},
    trace::{self, CALL_SPANS, CallTrace},
};
use opentelemetry_http::HeaderInjector;
use tonic::Code;
use tracing::{Span, field::Empty};

/// The client side's [`Observer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientObserver;

impl Observer for ClientObserver {
    type End = MadeCall;

    fn begin<B>(&self, method: RpcMethod, request: &mut Request<B>) -> (CallTrace, MadeCall) {
        let authority = request.uri().authority().cloned();
        let span = tracing::info_span!(
            target: CALL_SPANS,
            "grpc.client",
            otel.name = method.full_name,
            otel.kind = "client",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = method.service,
            rpc.method = method.method,
            rpc.grpc.status_code = Empty,
            server.address = authority.as_ref().map(|a| a.host()),
            server.port = authority.as_ref().and_then(|a| a.port_u16()),
        );
        // A child of the call this one is made for (when made inside one).
        let trace = trace::continue_trace(span, trace::current());
        let context = trace.context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(request.headers_mut()));
        });
        let made = MadeCall {
            span: trace.span().clone(),
            timer: CLIENT.start(method),
        };
        (trace, made)
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
