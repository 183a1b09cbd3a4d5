//! A durable JetStream consumer: each message is handed to a handler that runs in the
//! publisher's trace, and acknowledged only after the handler succeeded, so
//! a crash mid-way redoes the work (handlers must make a redo change nothing).
//!
//! Messages are handled one at a time, in stream order (`max_ack_pending` 1): a deletion's
//! cancellations never race each other. A handler that fails is retried after a pause
//! (negative acknowledgement); a message it cannot read is terminated (never redelivered)
//! and counted, rather than retried forever.

use std::{future::Future, time::Duration};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, pull},
};
use bytes::Bytes;
use futures::StreamExt;
use meshwork_rpc::trace;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{EventsUrl, metrics, wire};

/// How long JetStream waits for an acknowledgement before it redelivers.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// The pause before a failed message is delivered again, and between reconnection tries.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Which messages a consumer reads.
#[derive(Debug, Clone, Copy)]
pub struct Subscription {
    /// The durable consumer's name (it keeps its place across restarts): `order-service`.
    pub durable: &'static str,
    /// `meshwork.user.v1.deleted`.
    pub subject: &'static str,
}

/// One message, for its handler.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `Nats-Msg-Id` (the event id), empty when the publisher set none.
    pub event_id: String,
    pub payload: Bytes,
}

/// Why a handler did not finish with a message.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Worth another try later (the database was away): redelivered.
    #[error("{0}")]
    Retry(String),
    /// The message can never be handled (its payload is not the expected message): not
    /// redelivered.
    #[error("{0}")]
    Reject(String),
}

/// Consumes `subscription` from the broker at `url` until `stop`, reconnecting as needed.
pub fn start<H, F>(
    url: EventsUrl,
    client_name: &'static str,
    subscription: Subscription,
    handler: H,
    stop: CancellationToken,
) -> JoinHandle<()>
where
    H: Fn(Delivery) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), Failure>> + Send,
{
    metrics::initialize();
    tokio::spawn(async move {
        let client = match url.connect(client_name).await {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, events_url = %url, "cannot use EVENTS_URL; not consuming events");
                return;
            }
        };
        let js = jetstream::new(client);
        let mut failing = false;
        while !stop.is_cancelled() {
            match consume(&js, subscription, &handler, &stop, &mut failing).await {
                Ok(()) => return,
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, subject = subscription.subject, "cannot consume events; retrying");
                        failing = true;
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RETRY_AFTER) => {}
            }
        }
    })
}

/// One session of consuming: returns `Ok` when stopped, an error when the broker failed.
async fn consume<H, F>(
    js: &jetstream::Context,
    subscription: Subscription,
    handler: &H,
    stop: &CancellationToken,
    failing: &mut bool,
) -> Result<(), async_nats::Error>
where
    H: Fn(Delivery) -> F,
    F: Future<Output = Result<(), Failure>>,
{
    let stream = wire::stream(js).await?;
    let config = pull::Config {
        durable_name: Some(subscription.durable.into()),
        filter_subject: subscription.subject.into(),
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_ack_pending: 1,
        ..Default::default()
    };
    let consumer = stream
        .get_or_create_consumer(subscription.durable, config)
        .await?;
    let mut messages = consumer.messages().await?;
    tracing::info!(
        durable = subscription.durable,
        subject = subscription.subject,
        "consuming events"
    );
    // The next outage is logged again.
    *failing = false;
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            message = messages.next() => message,
        };
        let message = match message {
            Some(message) => message?,
            None => return Err("the consumer's message stream ended".into()),
        };
        handle(message, subscription, handler).await?;
    }
}

/// Runs the handler on one message and acknowledges it as the outcome says.
async fn handle<H, F>(
    message: jetstream::Message,
    subscription: Subscription,
    handler: &H,
) -> Result<(), async_nats::Error>
where
    H: Fn(Delivery) -> F,
    F: Future<Output = Result<(), Failure>>,
{
    let event_id = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get("Nats-Msg-Id"))
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();
    let span = tracing::info_span!(
        target: trace::CALL_SPANS,
        "process",
        otel.name = %format_args!("process {}", message.subject),
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.destination.name = %message.subject,
        messaging.message.id = %event_id,
        messaging.consumer.group.name = subscription.durable,
    );
    let trace = trace::continue_trace(span, wire::trace_of(message.headers.as_ref()));
    let delivery = Delivery {
        event_id,
        payload: message.payload.clone(),
    };
    let outcome = trace.clone().run(handler(delivery)).await;
    let (ack, label) = trace.in_scope(|| match outcome {
        Ok(()) => (AckKind::Ack, "ok"),
        Err(Failure::Retry(error)) => {
            tracing::warn!(%error, "handling an event failed; it is delivered again later");
            (AckKind::Nak(Some(RETRY_AFTER)), "retried")
        }
        Err(Failure::Reject(error)) => {
            tracing::error!(%error, "an event that cannot be handled was dropped");
            (AckKind::Term, "rejected")
        }
    });
    metrics::CONSUMED
        .with_label_values(&[subscription.subject, label])
        .inc();
    // Acknowledged only now, after the handler's commit: a crash before this redelivers.
    message.ack_with(ack).await
}
