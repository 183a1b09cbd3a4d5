//! The broker side, as CONTRACT.md fixes it: where the broker is (`EVENTS_URL`), the stream,
//! and the headers every event carries.

use std::{fmt, str::FromStr, time::Duration};

use async_nats::{
    HeaderMap,
    jetstream::{self, stream},
};
use clap::Args;
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector},
};

/// The JetStream stream every service publishes to (created if missing).
pub const STREAM: &str = "MESHWORK";
/// The subjects it holds.
const STREAM_SUBJECTS: &str = "meshwork.>";
/// How long the stream keeps a message. The outbox is what replays are served from (kept at
/// least 24 hours); the stream keeps a week, for consumers that were down for a while.
const STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Settings of a service that publishes or consumes events (user, order).
#[derive(Args, Debug, Clone, Default)]
pub struct EventsConfig {
    /// `nats://host:port` of a NATS server with JetStream. Unset: events stay in the outbox
    /// (none is lost) and are relayed once a broker is configured.
    #[arg(long, env = "EVENTS_URL")]
    pub events_url: Option<EventsUrl>,
}

/// A NATS server's address: `nats://host:port` (or `tls://host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsUrl(String);

impl FromStr for EventsUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let url = url::Url::parse(text).map_err(|e| format!("expected nats://host:port: {e}"))?;
        if !matches!(url.scheme(), "nats" | "tls") || url.host_str().is_none_or(str::is_empty) {
            return Err("expected nats://host:port".into());
        }
        Ok(Self(text.to_owned()))
    }
}

impl fmt::Display for EventsUrl {
    /// The address without credentials, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(&self.0) {
            Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
                let _ = url.set_username("");
                let _ = url.set_password(None);
                f.write_str(url.as_str())
            }
            _ => f.write_str(&self.0),
        }
    }
}

impl EventsUrl {
    /// A client that connects in the background and keeps reconnecting: a broker that is
    /// down at start (or later) fails no call; publishing waits until it is back.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
        async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .max_reconnects(None)
            .connect(self.0.as_str())
            .await
    }
}

/// The stream, created when missing (by whichever service gets there first; creating it
/// with the same configuration twice is not an error).
pub(crate) async fn stream(js: &jetstream::Context) -> Result<stream::Stream, async_nats::Error> {
    let config = stream::Config {
        name: STREAM.into(),
        subjects: vec![STREAM_SUBJECTS.into()],
        max_age: STREAM_MAX_AGE,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    Ok(js.get_or_create_stream(config).await?)
}

/// The headers of one event: the id JetStream de-duplicates by, the payload's type, the
/// CloudEvents binary-mode attributes, and the trace the change was made in.
pub(crate) fn headers(
    event_id: &str,
    subject: &str,
    source: &str,
    occur_time_micros: i64,
    trace: &Context,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", event_id);
    headers.insert("Content-Type", "application/protobuf");
    headers.insert("ce-specversion", "1.0");
    headers.insert("ce-id", event_id);
    headers.insert("ce-source", source);
    headers.insert("ce-type", subject);
    if let Some(time) = rfc3339(occur_time_micros) {
        headers.insert("ce-time", time.as_str());
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(trace, &mut NatsHeaders(&mut headers));
    });
    headers
}

/// `occur_time` (microseconds since the Unix epoch) as RFC 3339, CloudEvents' `time`.
fn rfc3339(micros: i64) -> Option<String> {
    let since_epoch = Duration::from_micros(u64::try_from(micros).ok()?);
    Some(humantime::format_rfc3339_micros(std::time::UNIX_EPOCH + since_epoch).to_string())
}

/// The trace context a message carries (W3C `traceparent`), or an empty one.
pub(crate) fn trace_of(headers: Option<&HeaderMap>) -> Context {
    let Some(headers) = headers else {
        return Context::new();
    };
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&ReadHeaders(headers)))
}

/// `traceparent` of `context`, as text to keep in the outbox. (Into a one-field injector, not
/// a `HashMap` that allocates a key per field only to keep one: written once per order.)
pub(crate) fn traceparent(context: &Context) -> Option<String> {
    let mut field = Traceparent(None);
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(context, &mut field)
    });
    field.0
}

/// Keeps the `traceparent` a propagator writes, and nothing else.
struct Traceparent(Option<String>);

impl Injector for Traceparent {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            self.0 = Some(value);
        }
    }
}

/// A context from a stored `traceparent`.
pub(crate) fn context_from(traceparent: Option<&str>) -> Context {
    let Some(traceparent) = traceparent else {
        return Context::new();
    };
    let fields = std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&fields))
}

struct NatsHeaders<'a>(&'a mut HeaderMap);

impl Injector for NatsHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct ReadHeaders<'a>(&'a HeaderMap);

impl Extractor for ReadHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_url_is_a_nats_address() {
        assert!("nats://127.0.0.1:4222".parse::<EventsUrl>().is_ok());
        assert!("tls://nats.example:4222".parse::<EventsUrl>().is_ok());
        for bad in ["127.0.0.1:4222", "http://nats:4222", "nats://", ""] {
            assert!(bad.parse::<EventsUrl>().is_err(), "{bad:?}");
        }
        let secret: EventsUrl = "nats://me:pw@nats:4222".parse().unwrap();
        assert_eq!(secret.to_string(), "nats://nats:4222");
    }

    #[test]
    fn an_outbox_row_keeps_the_traceparent_its_event_carries_on() {
        use opentelemetry::{
            KeyValue,
            baggage::BaggageExt,
            propagation::TextMapCompositePropagator,
            trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
        };
        use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
        // As the services set it (src/telemetry): W3C trace context and baggage.
        opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]));
        let call = Context::new().with_baggage([KeyValue::new("tenant", "acme")]);
        let call = call.with_remote_span_context(SpanContext::new(
            TraceId::from(7u128),
            SpanId::from(9u64),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ));
        let stored = traceparent(&call).expect("a call in a trace has a traceparent");
        assert_eq!(stored, "00-00000000000000000000000000000007-0000000000000009-01");
        let relayed = context_from(Some(&stored));
        assert_eq!(relayed.span().span_context().trace_id(), TraceId::from(7u128));
        assert_eq!(traceparent(&Context::new()), None, "no trace, nothing stored");
    }

    #[test]
    fn ce_time_is_rfc3339() {
        assert_eq!(
            rfc3339(1_700_000_000_123_456).unwrap(),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(rfc3339(-1), None);
    }
}
