//! Tracing of gRPC calls: one span per call, named `<full service>/<method>`, with the
//! OpenTelemetry RPC attributes, closed when the call's status is known (after the body:
//! a gRPC status comes in the trailers). W3C `traceparent`/`tracestate` and `baggage` are
//! extracted from an incoming call and injected into an outgoing one, so a call and the
//! calls it makes are one trace.
//!
//! - [`ServerTraceLayer`]: the span of a served call, and its access-log line.
//! - [`ClientTraceLayer`]: the span of a call made to another service.

use std::{
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use opentelemetry::propagation::{Extractor, Injector};
use tonic::{Code, transport::server::TcpConnectInfo};
use tower::{Layer, Service};
use tracing::{Instrument, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::rpc::{OnCallEnd, RpcMethod, code_name, status_in};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// What a traced response body calls when the call ends.
pub type OnEnd = Box<dyn FnOnce(Code) + Send>;

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerTraceLayer;

impl<S> Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTrace { inner }
    }
}

/// The service made by [`ServerTraceLayer`].
#[derive(Debug, Clone)]
pub struct ServerTrace<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ServerTrace<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<OnCallEnd<ResBody, OnEnd>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let method = RpcMethod::from_path(request.uri().path());
        let connection = request.extensions().get::<TcpConnectInfo>();
        let peer = connection.and_then(TcpConnectInfo::remote_addr);
        let local = connection.and_then(TcpConnectInfo::local_addr);
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %method.full_name(),
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
        );
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        // Fails only when no OpenTelemetry layer is installed; then there is nothing to link.
        let _ = span.set_parent(parent);

        let started = Instant::now();
        let call = self.inner.call(request).instrument(span.clone());
        Box::pin(async move {
            let response = call.await?;
            let on_end: OnEnd = Box::new(move |code| {
                record_status(&span, code, is_server_error(code));
                span.in_scope(|| access_log(method, code, started, peer));
            });
            Ok(end_with_status(response, on_end))
        })
    }
}

/// Reports a trailers-only response at once; otherwise when its body ends.
pub fn end_with_status<B>(response: Response<B>, on_end: OnEnd) -> Response<OnCallEnd<B, OnEnd>> {
    match status_in(response.headers()) {
        Some(code) => {
            on_end(code);
            response.map(OnCallEnd::ended)
        }
        None => response.map(|body| OnCallEnd::new(body, on_end)),
    }
}

/// One line per call, inside the call's span (so it carries its trace and span ids).
fn access_log(method: RpcMethod, code: Code, started: Instant, peer: Option<SocketAddr>) {
    tracing::info!(
        target: "meshwork::access",
        method = %method.full_name(),
        code = code_name(code),
        duration_ms = started.elapsed().as_secs_f64() * 1e3,
        peer = peer.map(|p| p.to_string()),
        "rpc"
    );
}

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

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientTraceLayer;

impl<S> Layer<S> for ClientTraceLayer {
    type Service = ClientTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientTrace { inner }
    }
}

/// The service made by [`ClientTraceLayer`].
#[derive(Debug, Clone)]
pub struct ClientTrace<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ClientTrace<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<OnCallEnd<ResBody, OnEnd>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let method = RpcMethod::from_path(request.uri().path());
        let authority = request.uri().authority().cloned();
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = %method.full_name(),
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

        let call = self.inner.call(request).instrument(span.clone());
        Box::pin(async move {
            match call.await {
                Ok(response) => {
                    let on_end: OnEnd = Box::new(move |code| record_status(&span, code, code != Code::Ok));
                    Ok(end_with_status(response, on_end))
                }
                Err(error) => {
                    // No response at all: the connection failed.
                    record_status(&span, Code::Unavailable, true);
                    Err(error)
                }
            }
        })
    }
}

/// Reads propagation headers from incoming metadata.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes propagation headers into outgoing metadata.
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}
