//! The W3C trace context a call runs in, whether or not its spans are exported.
//!
//! With OpenTelemetry's `tracing` layer installed (the process exports spans), a call's
//! span is an OpenTelemetry span and the context is that span's. Without an exporter no
//! subscriber enables the calls' spans at all: a `tracing` span per call (made, entered and
//! left on every poll, closed) was the largest cost of the middleware (callgrind, see
//! docs/benchmarks.md), and nothing would read it. A call then carries only its ids: the
//! caller's trace id (or a new one) and a span id of its own, which a task-local holds
//! while the call's future runs. Either way [`continue_trace`] places a call in its trace,
//! [`CallTrace::context`] is what goes into outgoing metadata, and [`current_ids`] is what
//! log lines print: the same trace whether or not anything is exported.

use http::{HeaderMap, HeaderName};
use opentelemetry::{
    Context,
    baggage::BaggageExt,
    trace::{SpanContext, TraceContextExt, TraceFlags},
};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
use tokio::task::futures::TaskLocalFuture;
use tracing::{Instrument, Span, instrument::Instrumented};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of every call's span, server and client: with an exporter, the subscriber
/// enables these spans whatever the log filter says.
pub const CALL_SPANS: &str = "meshwork::call";

tokio::task_local! {
    /// The trace context of the call whose future is running, when its span does not hold
    /// it (no exporter). A task-local rather than a span's extension: setting it on each
    /// poll is a swap, where entering a span is a registry look-up and a push on its stack.
    static CALL_IDS: Option<OwnContext>;
}

/// A call's place in its trace: its span, and its own context when no OpenTelemetry layer
/// gives the span one.
#[derive(Debug, Clone)]
pub struct CallTrace {
    span: Span,
    own: Option<OwnContext>,
}

/// A call's trace context without a span to hold it: the ids [`continue_trace`] gave it,
/// and, when its caller sent `baggage`, the caller's context, whose baggage the calls it
/// makes carry on. (Boxed and only then: this travels with every call's future, and most
/// calls have no baggage and make no calls.)
#[derive(Debug, Clone)]
pub struct OwnContext {
    ids: SpanContext,
    with_baggage: Option<Box<Context>>,
}

impl OwnContext {
    fn new(caller: Context) -> Self {
        let ids = child_of(caller.span().span_context());
        let with_baggage = (!caller.baggage().is_empty()).then(|| Box::new(caller));
        Self { ids, with_baggage }
    }

    fn context(&self) -> Context {
        match &self.with_baggage {
            Some(caller) => caller.with_remote_span_context(self.ids.clone()),
            None => Context::new().with_remote_span_context(self.ids.clone()),
        }
    }
}

/// The future of a call run by [`CallTrace::run`].
pub type InCall<F> = TaskLocalFuture<Option<OwnContext>, Instrumented<F>>;

/// The W3C header that carries a call's trace and span ids.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The caller's trace context, from an incoming call's metadata (W3C `traceparent`,
/// `tracestate` and `baggage`, by the process's propagator).
pub fn incoming(headers: &HeaderMap) -> Context {
    // Most calls inside a mesh without tracing carry none: then the propagator (which looks
    // every field up by a name it parses first) is not asked at all.
    const BAGGAGE: HeaderName = HeaderName::from_static("baggage");
    if !headers.contains_key(TRACEPARENT) && !headers.contains_key(BAGGAGE) {
        return Context::new();
    }
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)))
}

/// Places the call that `span` stands for in the trace of `parent`: an incoming call's
/// extracted remote context, or [`current`] for a call or event made for the running one.
/// The OpenTelemetry layer, when installed, makes the span its child; otherwise the call
/// gets ids of its own here.
pub fn continue_trace(span: Span, parent: Context) -> CallTrace {
    let caller = parent.clone();
    let own = span.set_parent(parent).is_err().then(|| OwnContext::new(caller));
    CallTrace { span, own }
}

impl CallTrace {
    /// The call's span (disabled when nothing exports it): where its attributes go.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// The call's trace context, to inject into outgoing metadata.
    pub fn context(&self) -> Context {
        match &self.own {
            Some(own) => own.context(),
            None => self.span.context(),
        }
    }

    /// The call's ids, when it has valid ones.
    pub fn ids(&self) -> Option<SpanContext> {
        let ids = match &self.own {
            Some(own) => own.ids.clone(),
            None => self.span.context().span().span_context().clone(),
        };
        ids.is_valid().then_some(ids)
    }

    /// Runs `future` as the call's work: in its span, and with its ids as [`current_ids`].
    pub fn run<F: Future>(self, future: F) -> InCall<F> {
        CALL_IDS.scope(self.own, future.instrument(self.span))
    }

    /// Runs `f` as [`CallTrace::run`] runs a future.
    pub fn in_scope<T>(&self, f: impl FnOnce() -> T) -> T {
        CALL_IDS.sync_scope(self.own.clone(), || self.span.in_scope(f))
    }
}

/// The trace context of the call running now (or of the current span), to carry on into a
/// call or event made for it.
pub fn current() -> Context {
    let own = CALL_IDS.try_with(|own| own.as_ref().map(OwnContext::context));
    match own {
        Ok(Some(context)) => context,
        _ => Span::current().context(),
    }
}

/// The ids of the call running now (or of the current span), when there are valid ones:
/// what a log line prints.
pub fn current_ids() -> Option<SpanContext> {
    let own = CALL_IDS.try_with(|own| own.as_ref().map(|own| own.ids.clone()));
    let ids = match own {
        Ok(Some(ids)) => ids,
        _ => Span::current().context().span().span_context().clone(),
    };
    ids.is_valid().then_some(ids)
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

    use super::*;

    /// A process without an exporter: nothing enables the calls' spans.
    fn without_exporter() -> impl tracing::Subscriber {
        tracing_subscriber::registry()
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

    fn server_call(parent: Context) -> CallTrace {
        continue_trace(tracing::info_span!(target: CALL_SPANS, "grpc.server"), parent)
    }

    #[test]
    fn without_an_exporter_a_call_joins_its_callers_trace_with_a_span_of_its_own() {
        tracing::subscriber::with_default(without_exporter(), || {
            let call = server_call(remote(7, 9));
            let ids = call.ids().expect("the call has ids");
            assert_eq!(ids.trace_id(), TraceId::from(7u128));
            assert_ne!(ids.span_id(), SpanId::from(9u64));
            // What an outgoing call made inside it carries on.
            let outgoing = call.in_scope(|| {
                assert_eq!(current_ids(), Some(ids.clone()), "lines in the call get its ids");
                continue_trace(tracing::info_span!(target: CALL_SPANS, "grpc.client"), current())
            });
            let carried = outgoing.context();
            assert_eq!(carried.span().span_context().trace_id(), TraceId::from(7u128));
            assert_ne!(carried.span().span_context().span_id(), ids.span_id());
        });
    }

    #[test]
    fn without_an_exporter_the_callers_baggage_is_carried_on() {
        use opentelemetry::KeyValue;
        tracing::subscriber::with_default(without_exporter(), || {
            let caller = remote(7, 9).with_baggage([KeyValue::new("tenant", "acme")]);
            let call = server_call(caller);
            let outgoing = call.in_scope(current);
            assert_eq!(
                outgoing.baggage().get("tenant").map(ToString::to_string),
                Some("acme".to_string())
            );
            assert_eq!(
                outgoing.span().span_context(),
                &call.ids().expect("the call has ids")
            );
            assert_eq!(call.context().baggage().len(), 1);
        });
    }

    #[test]
    fn without_an_exporter_a_call_without_a_caller_starts_a_sampled_trace() {
        tracing::subscriber::with_default(without_exporter(), || {
            let ids = server_call(Context::new()).ids().expect("the call has ids");
            assert!(ids.is_sampled());
        });
    }

    #[test]
    fn outside_a_call_there_are_no_ids() {
        tracing::subscriber::with_default(without_exporter(), || {
            assert_eq!(current_ids(), None);
            assert!(!current().span().span_context().is_valid());
        });
    }

    #[tokio::test]
    async fn a_calls_future_sees_its_ids_on_every_poll_and_only_there() {
        let _subscriber = tracing::subscriber::set_default(without_exporter());
        let call = server_call(remote(7, 9));
        let ids = call.ids();
        let seen = call
            .run(async {
                let before = current_ids();
                tokio::task::yield_now().await;
                (before, current_ids())
            })
            .await;
        assert_eq!(seen, (ids.clone(), ids));
        assert_eq!(current_ids(), None, "the ids are the call's only");
    }
}
