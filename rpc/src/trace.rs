//! The W3C trace context a call runs in, whether or not its spans are exported.
//!
//! With OpenTelemetry's `tracing` layer installed (the process exports spans), a call's
//! span is an OpenTelemetry span and the context is that span's. Without an exporter,
//! building OpenTelemetry spans that nobody reads cost more than all the other middleware of
//! a call together (callgrind, `make bench`: see docs/benchmarks.md), so then a call's span
//! carries only its ids: the caller's trace id (or a new one) and a span id of its own, kept
//! in the span's extensions in the registry. Either way [`continue_trace`] links a span to
//! its parent, [`context`] is what goes into outgoing metadata, and [`ids`] is what log lines
//! print: the same trace whether or not anything is exported.

use http::{HeaderMap, HeaderName};
use opentelemetry::{
    Context,
    trace::{SpanContext, TraceContextExt, TraceFlags},
};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{Registry, registry::LookupSpan};

/// The target of every call's span, server and client: the subscriber keeps these spans
/// enabled whatever the log filter says, as the lines logged inside a call need their ids.
pub const CALL_SPANS: &str = "meshwork::call";

/// A call span's own ids, when no OpenTelemetry layer gives it any.
struct CallIds(SpanContext);

/// The caller's trace context, from an incoming call's metadata (W3C `traceparent`,
/// `tracestate` and `baggage`, by the process's propagator).
pub fn incoming(headers: &HeaderMap) -> Context {
    // Most calls inside a mesh without tracing carry none: then the propagator (which looks
    // every field up by a name it parses first) is not asked at all.
    const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
    const BAGGAGE: HeaderName = HeaderName::from_static("baggage");
    if !headers.contains_key(TRACEPARENT) && !headers.contains_key(BAGGAGE) {
        return Context::new();
    }
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)))
}

/// Makes `span` a child of `parent`: an incoming call's extracted remote context, or the
/// context of the call an outgoing one is made for. Returns the ids it gave `span` itself,
/// when no OpenTelemetry layer gives it any: what [`ids`] would find later, for a caller
/// that keeps them instead of looking them up again.
pub fn continue_trace(span: &Span, parent: Context) -> Option<SpanContext> {
    let parent_ids = parent.span().span_context().clone();
    if span.set_parent(parent).is_ok() {
        return None;
    }
    let ids = child_of(&parent_ids);
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        registry.span(id)?.extensions_mut().insert(CallIds(ids.clone()));
        Some(())
    })
    .flatten()?;
    Some(ids)
}

/// The trace context of `span` (or of the call it is part of), to inject into metadata.
pub fn context(span: &Span) -> Context {
    match own_ids(span) {
        Some(ids) => Context::new().with_remote_span_context(ids),
        None => span.context(),
    }
}

/// The ids of `span` (or of the call it is part of), when it has valid ones.
pub fn ids(span: &Span) -> Option<SpanContext> {
    let ids = own_ids(span).unwrap_or_else(|| span.context().span().span_context().clone());
    ids.is_valid().then_some(ids)
}

/// The ids [`continue_trace`] gave the nearest call span around `span`, if it gave any.
fn own_ids(span: &Span) -> Option<SpanContext> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        registry
            .span(id)?
            .scope()
            .find_map(|span| span.extensions().get::<CallIds>().map(|ids| ids.0.clone()))
    })
    .flatten()
}

/// New ids in the trace of `parent`, or in a new trace when there is no valid parent (a new
/// trace is sampled: the default sampler, `parentbased_always_on`, says so).
fn child_of(parent: &SpanContext) -> SpanContext {
    let ids = RandomIdGenerator::default();
    if !parent.is_valid() {
        return SpanContext::new(
            ids.new_trace_id(),
            ids.new_span_id(),
            TraceFlags::SAMPLED,
            false,
            Default::default(),
        );
    }
    SpanContext::new(
        parent.trace_id(),
        ids.new_span_id(),
        parent.trace_flags(),
        false,
        parent.trace_state().clone(),
    )
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceId, TraceState};
    use tracing_subscriber::{Layer as _, filter::Targets, layer::SubscriberExt};

    use super::*;

    fn without_exporter() -> impl tracing::Subscriber {
        tracing_subscriber::registry().with(
            tracing_subscriber::layer::Identity::new()
                .with_filter(Targets::new().with_target(CALL_SPANS, tracing::Level::INFO)),
        )
    }

    fn remote(trace_id: u128, span_id: u64) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(trace_id),
            SpanId::from(span_id),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ))
    }

    #[test]
    fn without_an_exporter_a_call_joins_its_callers_trace_with_a_span_of_its_own() {
        tracing::subscriber::with_default(without_exporter(), || {
            let span = tracing::info_span!(target: CALL_SPANS, "grpc.server");
            let given = continue_trace(&span, remote(7, 9));
            let ids = ids(&span).expect("the call span has ids");
            assert_eq!(
                given,
                Some(ids.clone()),
                "what it gave the span is what the span has"
            );
            assert_eq!(ids.trace_id(), TraceId::from(7u128));
            assert_ne!(ids.span_id(), SpanId::from(9u64));
            // What an outgoing call made inside it carries on.
            let inner = span.in_scope(|| tracing::info_span!(target: CALL_SPANS, "grpc.client"));
            continue_trace(&inner, context(&span));
            let carried = context(&inner);
            assert_eq!(carried.span().span_context().trace_id(), TraceId::from(7u128));
            assert_ne!(carried.span().span_context().span_id(), ids.span_id());
        });
    }

    #[test]
    fn without_an_exporter_a_call_without_a_caller_starts_a_sampled_trace() {
        tracing::subscriber::with_default(without_exporter(), || {
            let span = tracing::info_span!(target: CALL_SPANS, "grpc.server");
            continue_trace(&span, Context::new());
            let ids = ids(&span).expect("the call span has ids");
            assert!(ids.is_sampled());
        });
    }

    #[test]
    fn a_line_in_a_span_inside_a_call_gets_the_calls_ids() {
        tracing::subscriber::with_default(without_exporter(), || {
            let call = tracing::info_span!(target: CALL_SPANS, "grpc.server");
            continue_trace(&call, remote(7, 9));
            let inner = call.in_scope(|| tracing::info_span!(target: CALL_SPANS, "query"));
            assert_eq!(
                ids(&inner).map(|ids| ids.span_id()),
                ids(&call).map(|ids| ids.span_id())
            );
        });
    }
}
