//! How the client stack observes a call it makes (retries included), for
//! [`meshwork_rpc::ObserveLayer`]: a client span (exported when spans are; otherwise only its
//! ids, see [`meshwork_rpc::trace`]) whose W3C trace context goes into the outgoing metadata,
//! so the callee joins the trace, and one end-of-call hook, [`MadeCall`], that closes the span
//! and counts the call in the `grpc_client_*` metrics.

use std::sync::Arc;

use http::Request;
use meshwork_rpc::{
    CallEnd, Observer, RpcMethod,
    metrics::{CLIENT, CallTimer},
    trace::{self, CALL_SPANS, CallTrace},
};
use opentelemetry_http::HeaderInjector;
use tonic::Code;
use tracing::{Span, field::Empty};

use crate::Target;

/// The client side's [`Observer`].
#[derive(Debug, Clone, Default)]
pub struct ClientObserver {
    /// The service called, as its spans' `server.address` and `server.port` name it.
    server: Option<Arc<ServerName>>,
}

/// The host and port a target names: the logical server of OpenTelemetry's conventions, not
/// the address of the replica the balancer picks (which is chosen below this layer).
#[derive(Debug)]
struct ServerName {
    address: Box<str>,
    port: u16,
}

impl ClientObserver {
    /// The observer of the calls to `target`. A target of several fixed endpoints names no
    /// one server: its spans carry none.
    pub fn for_target(target: &Target) -> Self {
        let server = match target {
            Target::Dns { host, port } => Some(ServerName {
                address: host.as_str().into(),
                port: *port,
            }),
            Target::Static(uris) => match uris.as_slice() {
                [uri] => uri.authority().map(|authority| ServerName {
                    // An IPv6 address without the brackets a URL puts around it.
                    address: authority
                        .host()
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .into(),
                    // The scheme's port when the URL names none, as the connection uses.
                    port: authority.port_u16().unwrap_or(match uri.scheme_str() {
                        Some("https") => 443,
                        _ => 80,
                    }),
                }),
                _ => None,
            },
        };
        Self {
            server: server.map(Arc::new),
        }
    }
}

impl Observer for ClientObserver {
    type End = MadeCall;

    fn begin<B>(&self, method: RpcMethod, request: &mut Request<B>) -> (CallTrace, MadeCall) {
        let server = self.server.as_deref();
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
            server.address = server.map(|server| &*server.address),
            // An integer attribute, as the conventions say: tracing-opentelemetry records a
            // `u64` through `Debug`, as a string (and a format per span).
            server.port = server.map(|server| i64::from(server.port)),
        );
        // A child of the call this one is made for (when made inside one).
        let trace = trace::continue_trace(span, trace::current());
        let context = trace.context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(request.headers_mut()));
        });
        // Never indexed by HPACK: it differs on every call (as `grpc-timeout` does, see
        // `Deadline::grpc_timeout`).
        if let Some(traceparent) = request.headers_mut().get_mut(trace::TRACEPARENT) {
            traceparent.set_sensitive(true);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn server_of(target: &str) -> Option<(String, u16)> {
        let observer = ClientObserver::for_target(&target.parse().expect("a valid target"));
        observer
            .server
            .map(|server| (server.address.to_string(), server.port))
    }

    #[test]
    fn a_span_names_the_server_its_target_names() {
        assert_eq!(server_of("http://user:50052"), Some(("user".into(), 50052)));
        assert_eq!(
            server_of("dns:///user-headless.meshwork.svc.cluster.local:50052"),
            Some(("user-headless.meshwork.svc.cluster.local".into(), 50052))
        );
        assert_eq!(server_of("http://[::1]:7"), Some(("::1".into(), 7)));
        assert_eq!(server_of("https://user"), Some(("user".into(), 443)));
        assert_eq!(server_of("http://user"), Some(("user".into(), 80)));
        assert_eq!(server_of("http://user-0:50052,http://user-1:50052"), None);
    }
}
