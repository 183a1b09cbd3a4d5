//! Event metrics, in the process's default Prometheus registry (served at `/metrics` with
//! the gRPC ones).

use std::sync::LazyLock;

use prometheus::{
    IntCounter, IntCounterVec, IntGauge, register_int_counter, register_int_counter_vec, register_int_gauge,
};

const REGISTERED: &str = "metric names are unique and registered once per process";

/// Events JetStream acknowledged, by subject.
pub(crate) static PUBLISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "meshwork_events_published_total",
        "Outbox events published to NATS JetStream and acknowledged by it.",
        &["subject"]
    )
    .expect(REGISTERED)
});

/// Publish attempts that failed (the event stays in the outbox and is tried again).
pub(crate) static PUBLISH_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "meshwork_events_publish_failures_total",
        "Attempts to publish an outbox event that failed; the event is tried again."
    )
    .expect(REGISTERED)
});

/// Events in the outbox not yet acknowledged by the broker.
pub(crate) static PENDING: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "meshwork_outbox_pending",
        "Events in this service's outbox that the broker has not acknowledged yet."
    )
    .expect(REGISTERED)
});

/// Messages a consumer handled, by subject and outcome (`ok`, `retried`, `rejected`).
pub(crate) static CONSUMED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "meshwork_events_consumed_total",
        "Events consumed from NATS JetStream, by outcome: ok (acknowledged), retried (handler failed; redelivered later), rejected (unreadable; not redelivered).",
        &["subject", "outcome"]
    )
    .expect(REGISTERED)
});

/// Registers every family, so `/metrics` shows them from the start.
pub(crate) fn initialize() {
    LazyLock::force(&PUBLISHED);
    LazyLock::force(&PUBLISH_FAILURES);
    LazyLock::force(&PENDING);
    LazyLock::force(&CONSUMED);
}
