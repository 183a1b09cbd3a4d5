//! Observing a served call, once: the outermost layer resolves the call's method (into the
//! request's extensions, for every layer and handler below), opens its span, and hands one
//! end-of-call hook, [`ServedCall`], to the response. When the call's status is known (in
//! the trailers, after the body) that hook closes the span, counts the call in the
//! `grpc_server_*` metrics, writes the access-log line and tells the connection the call
//! is over (for `MAX_CONNECTION_IDLE`).
//!
//! The span is named `<full service>/<method>` with the OpenTelemetry RPC attributes; an
//! incoming W3C `traceparent`/`tracestate` and `baggage` makes it a child of the caller's.

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use meshwork_rpc::{
    CallEnd, CallGuard, ObservedBody, RpcMethod, code_name,
    metrics::{CallTimer, SERVER},
    observe_response,
};
use opentelemetry_http::HeaderExtractor;
use tonic::{Code, transport::server::TcpConnectInfo};
use tower::{Layer, Service};
use tracing::{Instrument, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::connection::Activity;

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
    S: Service<Request<CallerBody<ReqBody>>, Response = Response<ResBody>, Error = Infallible>,
    S::Future: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ObservedBody<ResBody, ServedCall>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let method = RpcMethod::from_path(request.uri().path());
        request.extensions_mut().insert(method);
        let connection = request.extensions().get::<TcpConnectInfo>();
        let peer = connection.and_then(TcpConnectInfo::remote_addr);
        let span = server_span(method, connection);
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        // Fails only when no OpenTelemetry layer is installed; then there is nothing to link.
        let _ = span.set_parent(parent);
        let activity = request.extensions().get::<Arc<Activity>>().cloned();
        if let Some(activity) = &activity {
            activity.call_started();
        }
        let caller_gone = Arc::new(AtomicBool::new(false));
        let guard = CallGuard::new(ServedCall {
            method,
            span: span.clone(),
            timer: SERVER.start(method),
            started: Instant::now(),
            peer,
            activity,
            caller_gone: caller_gone.clone(),
        });
        let request = request.map(|inner| CallerBody { inner, caller_gone });

        let call = self.inner.call(request).instrument(span);
        Box::pin(async move {
            let Ok(response) = call.await;
            Ok(observe_response(response, guard))
        })
    }
}

fn server_span(method: RpcMethod, connection: Option<&TcpConnectInfo>) -> Span {
    let peer = connection.and_then(TcpConnectInfo::remote_addr);
    let local = connection.and_then(TcpConnectInfo::local_addr);
    tracing::info_span!(
        "grpc.server",
        otel.name = method.full_name,
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = method.service,
        rpc.method = method.method,
        rpc.grpc.status_code = Empty,
        server.address = local.map(|a| a.ip().to_string()),
        server.port = local.map(|a| a.port()),
        network.peer.address = peer.map(|a| a.ip().to_string()),
        network.peer.port = peer.map(|a| a.port()),
    )
}

/// Everything that learns how one served call ended.
pub struct ServedCall {
    method: RpcMethod,
    span: Span,
    timer: CallTimer,
    started: Instant,
    peer: Option<SocketAddr>,
    activity: Option<Arc<Activity>>,
    /// Set when reading the request failed: the caller reset the stream or went away.
    caller_gone: Arc<AtomicBool>,
}

impl CallEnd for ServedCall {
    fn ended(self, code: Code) {
        // tonic answers a request it could not read with UNKNOWN; when the reason is that the
        // caller went away, that is a cancelled call (as grpc-go counts it), not a failure.
        let code = match code {
            Code::Unknown if self.caller_gone.load(Ordering::Relaxed) => Code::Cancelled,
            code => code,
        };
        record_status(&self.span, code, is_server_error(code));
        self.timer.finish(code);
        // Inside the call's span, so the line carries its trace and span ids.
        self.span.in_scope(|| {
            tracing::info!(
                target: "meshwork::access",
                method = self.method.full_name,
                code = code_name(code),
                // Whole microseconds, so the line reads `0.056`, not `0.056184000000000005`.
                duration_ms = self.started.elapsed().as_micros() as f64 / 1e3,
                peer = self.peer.map(|p| p.to_string()),
                "rpc"
            );
        });
        if let Some(activity) = self.activity {
            activity.call_ended();
        }
    }
}

pin_project_lite::pin_project! {
    /// A request body that notes when reading it fails (the caller reset the stream).
    pub struct CallerBody<B> {
        #[pin]
        inner: B,
        caller_gone: Arc<AtomicBool>,
    }
}

impl<B: Body> Body for CallerBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if let Some(Err(_)) = &frame {
            this.caller_gone.store(true, Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Records a call's final code on its span.
fn record_status(span: &Span, code: Code, is_error: bool) {
    span.record("rpc.grpc.status_code", code as i32);
    if is_error {
        span.record("otel.status_code", "ERROR");
    }
}

/// Server-side errors per the OpenTelemetry gRPC conventions: the codes that say the
/// server failed, not that the caller asked for something wrong.
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}
