//! How the server observes a call it serves, for [`meshwork_rpc::ObserveLayer`] (the
//! outermost layer: it resolves the method once, into the request's extensions). The span
//! (exported, or only ids when nothing exports it: see [`meshwork_rpc::trace`]) is named
//! `<full service>/<method>` with the OpenTelemetry RPC attributes; an incoming W3C
//! `traceparent`/`tracestate` and `baggage` makes it a child of the caller's. One
//! end-of-call hook, [`ServedCall`], closes the span, counts the call in the
//! `grpc_server_*` metrics, writes the access-log line and tells the connection the call is
//! over (for `MAX_CONNECTION_IDLE`), once the status is known (in the trailers).

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use http::Request;
use http_body::{Body, Frame, SizeHint};
use meshwork_rpc::{
    CallEnd, Observer, RpcMethod, code_name,
    metrics::{CallTimer, SERVER},
    trace::{self, CALL_SPANS, CallTrace},
};
use tonic::{Code, transport::server::TcpConnectInfo};
use tracing::{Span, field::Empty};

use crate::{
    connection::Activity,
    telemetry::{AccessLine, AccessLog},
};

/// The server side's [`Observer`].
#[derive(Debug, Clone, Copy)]
pub struct ServerObserver {
    /// Where each call's access line goes; `None` when the access log is off.
    access_log: Option<&'static AccessLog>,
}

impl ServerObserver {
    pub fn new(access_log: Option<&'static AccessLog>) -> Self {
        Self { access_log }
    }
}

impl Observer for ServerObserver {
    type End = ServedCall;

    fn begin<B>(&self, method: RpcMethod, request: &mut Request<B>) -> (CallTrace, ServedCall) {
        // Taken out: nothing below needs it, and the call's end holds it from here on.
        let arrival = request.extensions_mut().remove::<Arrival>();
        let span = server_span(method, arrival.as_ref().map(|a| &*a.connection));
        let trace = trace::continue_trace(span, trace::incoming(request.headers()));
        if let Some(arrival) = &arrival {
            arrival.connection.activity.call_started();
        }
        let served = ServedCall {
            method,
            trace: trace.clone(),
            timer: SERVER.start(method),
            arrival,
            access_log: self.access_log,
        };
        (trace, served)
    }
}

/// The call's span. Its attributes are the contract's (`rpc.*`) and the peer's address;
/// the server's own address is the same for every call of the process, so it is not
/// repeated in every span.
fn server_span(method: RpcMethod, connection: Option<&ServedConnection>) -> Span {
    tracing::info_span!(
        target: CALL_SPANS,
        "grpc.server",
        otel.name = method.full_name,
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = method.service,
        rpc.method = method.method,
        rpc.grpc.status_code = Empty,
        // Formatted once per connection, not per call.
        network.peer.address = connection.and_then(|c| c.peer_ip.as_deref()),
        // An integer attribute, as the conventions say: tracing-opentelemetry records a
        // `u64` through `Debug`, as a string (and a format per span).
        network.peer.port = connection.and_then(|c| c.addresses.remote_addr()).map(|a| i64::from(a.port())),
    )
}

/// One connection, as each of its calls sees it. Made once per connection by the accept
/// loop; every call holds it until its end.
#[derive(Debug)]
pub struct ServedConnection {
    addresses: TcpConnectInfo,
    /// The peer's address as the access line prints it, and its IP as the span's
    /// `network.peer.address`: formatted once here rather than in every call (through
    /// `Display`, a tenth of the access line's cost).
    peer: Option<Box<str>>,
    peer_ip: Option<Box<str>>,
    activity: Arc<Activity>,
}

impl ServedConnection {
    pub fn new(addresses: TcpConnectInfo, activity: Arc<Activity>) -> Self {
        let remote = addresses.remote_addr();
        Self {
            peer: remote.map(|addr| addr.to_string().into_boxed_str()),
            peer_ip: remote.map(|addr| addr.ip().to_string().into_boxed_str()),
            addresses,
            activity,
        }
    }
}

/// What the accept loop tells the observe layer about a call, in the request's extensions:
/// its connection, and whether the caller went away while it was read. One entry, as each
/// entry costs an allocation and a hash-map insert per call.
#[derive(Debug, Clone)]
struct Arrival {
    connection: Arc<ServedConnection>,
    caller_gone: CallerGone,
}

/// Everything that learns how one served call ended.
pub struct ServedCall {
    method: RpcMethod,
    /// Its span, for the final status, and its ids, for the access line.
    trace: CallTrace,
    /// The call's one clock: the metrics' histogram, the access line's duration and the
    /// connection's idle timer all read their times from it.
    timer: CallTimer,
    /// Where the call came from; `None` only for a request that did not come through the
    /// accept loop (a test's).
    arrival: Option<Arrival>,
    /// Where the call's access line goes; `None` when the access log is off.
    access_log: Option<&'static AccessLog>,
}

impl CallEnd for ServedCall {
    fn ended(self, code: Code) {
        // tonic answers a request it could not read with UNKNOWN; when the reason is that the
        // caller went away, that is a cancelled call (as grpc-go counts it), not a failure.
        let code = match code {
            Code::Unknown
                if self
                    .arrival
                    .as_ref()
                    .is_some_and(|arrival| arrival.caller_gone.0.load(Ordering::Relaxed)) =>
            {
                Code::Cancelled
            }
            code => code,
        };
        record_status(self.trace.span(), code, is_server_error(code));
        let started = self.timer.started();
        let duration = self.timer.finish(code);
        if let Some(access_log) = self.access_log {
            access_log.write(&AccessLine {
                method: self.method.full_name,
                code: code_name(code),
                duration,
                peer: self.arrival.as_ref().and_then(|a| a.connection.peer.as_deref()),
                ids: self.trace.ids(),
            });
        }
        if let Some(arrival) = &self.arrival {
            arrival.connection.activity.call_ended(started + duration);
        }
    }
}

/// Whether reading a request failed: set by its [`CallerBody`].
#[derive(Debug, Clone, Default)]
struct CallerGone(Arc<AtomicBool>);

pin_project_lite::pin_project! {
    /// A request body that notes when reading it fails (the caller reset the stream).
    pub struct CallerBody<B> {
        #[pin]
        inner: B,
        caller_gone: CallerGone,
    }
}

impl<B> CallerBody<B> {
    /// Wraps the body of `request`, which arrived on `connection`, and tells the observe
    /// layer both (in the request's extensions).
    pub fn wrap(request: Request<B>, connection: &Arc<ServedConnection>) -> Request<CallerBody<B>> {
        let caller_gone = CallerGone::default();
        let (mut parts, inner) = request.into_parts();
        parts.extensions.insert(Arrival {
            connection: connection.clone(),
            caller_gone: caller_gone.clone(),
        });
        Request::from_parts(parts, CallerBody { inner, caller_gone })
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
            this.caller_gone.0.store(true, Ordering::Relaxed);
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
