//! A batch of spans as an OTLP `ExportTraceServiceRequest`, written straight from the SDK's
//! [`SpanData`] into one buffer with prost's wire primitives.
//!
//! The message is the one opentelemetry-proto's conversion builds
//! (`group_spans_by_resource_and_scope`, what opentelemetry-otlp sends): the tests below decode
//! this encoding with opentelemetry-proto's types, compare it with that conversion field by
//! field, and its bytes with prost's encoding of it. Field numbers: opentelemetry-proto's
//! `opentelemetry/proto/{collector/trace,trace,common,resource}/v1`.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::{Array, InstrumentationScope, KeyValue, Value, trace::Status};
use opentelemetry_sdk::{Resource, trace::SpanData};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

/// The request's `ResourceSpans` fields that are the same in every batch, encoded once.
#[derive(Debug, Default, Clone)]
pub struct EncodedResource {
    /// `resource` (field 1 of `ResourceSpans`), tag and length included.
    resource: Vec<u8>,
    schema_url: String,
}

impl EncodedResource {
    pub fn new(resource: &Resource) -> Self {
        let mut out = Wire::default();
        out.message(1, |resource_message| {
            for (key, value) in resource.iter() {
                key_value_field(resource_message, 1, key.as_str(), value);
            }
        });
        EncodedResource {
            resource: out.0,
            schema_url: resource.schema_url().unwrap_or_default().to_owned(),
        }
    }
}

/// The whole `ExportTraceServiceRequest` for `batch`: one `ResourceSpans`, a `ScopeSpans` for
/// each instrumentation scope in the order they first appear.
pub fn export_request(resource: &EncodedResource, batch: &[SpanData]) -> Vec<u8> {
    let mut scopes: Vec<(&InstrumentationScope, Vec<&SpanData>)> = Vec::new();
    for span in batch {
        match scopes
            .iter_mut()
            .find(|(scope, _)| **scope == span.instrumentation_scope)
        {
            Some((_, spans)) => spans.push(span),
            None => scopes.push((&span.instrumentation_scope, vec![span])),
        }
    }
    // A span is some 200-300 bytes here; a guess that saves most of the regrowth.
    let mut out = Wire(Vec::with_capacity(
        64 + resource.resource.len() + batch.len() * 320,
    ));
    out.message(1, |resource_spans| {
        resource_spans.0.extend_from_slice(&resource.resource);
        for (scope, spans) in &scopes {
            resource_spans.message(2, |scope_spans| {
                scope_spans.message(1, |message| instrumentation_scope(message, scope));
                for span in spans {
                    scope_spans.message(2, |message| span_message(message, span));
                }
                scope_spans.string(3, scope.schema_url().unwrap_or_default());
            });
        }
        resource_spans.string(3, &resource.schema_url);
    });
    out.0
}

fn instrumentation_scope(out: &mut Wire, scope: &InstrumentationScope) {
    out.string(1, scope.name());
    out.string(2, scope.version().unwrap_or_default());
    attributes(out, 3, scope.attributes());
}

fn span_message(out: &mut Wire, span: &SpanData) {
    let context = &span.span_context;
    out.bytes(1, &context.trace_id().to_bytes());
    out.bytes(2, &context.span_id().to_bytes());
    out.string(3, &context.trace_state().header());
    if span.parent_span_id != opentelemetry::trace::SpanId::INVALID {
        out.bytes(4, &span.parent_span_id.to_bytes());
    }
    out.string(5, &span.name);
    out.uint(6, span_kind(&span.span_kind));
    out.fixed64(7, unix_nanos(span.start_time));
    out.fixed64(8, unix_nanos(span.end_time));
    attributes(out, 9, span.attributes.iter());
    out.uint(10, span.dropped_attributes_count.into());
    for event in span.events.iter() {
        out.message(11, |message| {
            message.fixed64(1, unix_nanos(event.timestamp));
            message.string(2, &event.name);
            attributes(message, 3, event.attributes.iter());
            message.uint(4, event.dropped_attributes_count.into());
        });
    }
    out.uint(12, span.events.dropped_count.into());
    for link in span.links.iter() {
        out.message(13, |message| {
            let context = &link.span_context;
            message.bytes(1, &context.trace_id().to_bytes());
            message.bytes(2, &context.span_id().to_bytes());
            message.string(3, &context.trace_state().header());
            attributes(message, 4, link.attributes.iter());
            message.uint(5, link.dropped_attributes_count.into());
            message.fixed32(6, span_flags(context.is_remote(), context.trace_flags().to_u8()));
        });
    }
    out.uint(14, span.links.dropped_count.into());
    out.message(15, |message| status(message, &span.status));
    // Last, as prost writes fields in the order of their numbers, so the bytes are the same as
    // opentelemetry-otlp's (any order decodes the same).
    out.fixed32(
        16,
        span_flags(span.parent_span_is_remote, context.trace_flags().to_u8()),
    );
}

/// `SpanFlags`: the W3C trace flags in the low byte, and whether the parent (for a span) or
/// the linked context (for a link) is remote, which this SDK always knows (so the "has" bit
/// is always set).
fn span_flags(is_remote: bool, trace_flags: u8) -> u32 {
    const CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
    const CONTEXT_IS_REMOTE: u32 = 0x200;
    let remote = if is_remote { CONTEXT_IS_REMOTE } else { 0 };
    u32::from(trace_flags) | CONTEXT_HAS_IS_REMOTE | remote
}

fn span_kind(kind: &opentelemetry::trace::SpanKind) -> u64 {
    use opentelemetry::trace::SpanKind;
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// `Status`: code 0 unset, 1 ok, 2 error; a message only with an error.
fn status(out: &mut Wire, status: &Status) {
    match status {
        Status::Unset => {}
        Status::Ok => out.uint(3, 1),
        Status::Error { description } => {
            out.string(2, description);
            out.uint(3, 2);
        }
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

fn attributes<'a>(out: &mut Wire, tag: u32, attributes: impl Iterator<Item = &'a KeyValue>) {
    for attribute in attributes {
        key_value_field(out, tag, attribute.key.as_str(), &attribute.value);
    }
}

/// A `KeyValue` field. Most of a span's bytes are these, and a scalar's length is known
/// before it is written, so its length prefixes are written first; an array goes the general
/// way ([`Wire::message`]).
fn key_value_field(out: &mut Wire, tag: u32, key: &str, value: &Value) {
    let Some(any_length) = scalar_len(value) else {
        return out.message(tag, |kv| key_value(kv, key, value));
    };
    let key_length = if key.is_empty() {
        0
    } else {
        1 + length_delimited_len(key.len())
    };
    encode_key(tag, WireType::LengthDelimited, &mut out.0);
    encode_varint(
        (key_length + 1 + length_delimited_len(any_length)) as u64,
        &mut out.0,
    );
    out.string(1, key);
    encode_key(2, WireType::LengthDelimited, &mut out.0);
    encode_varint(any_length as u64, &mut out.0);
    any_value(out, value);
}

/// The bytes of a length-delimited body of `length` bytes with its length prefix.
fn length_delimited_len(length: usize) -> usize {
    encoded_len_varint(length as u64) + length
}

/// The length of the `AnyValue` [`any_value`] writes for a scalar; `None` for an array.
fn scalar_len(value: &Value) -> Option<usize> {
    match value {
        Value::String(text) => Some(1 + length_delimited_len(text.as_str().len())),
        Value::Bool(_) => Some(2),
        Value::I64(number) => Some(1 + encoded_len_varint(*number as u64)),
        Value::F64(_) => Some(9),
        Value::Array(_) => None,
        _ => Some(0),
    }
}

/// `KeyValue { key = 1, value = 2 (AnyValue) }`.
fn key_value(out: &mut Wire, key: &str, value: &Value) {
    out.string(1, key);
    out.message(2, |any| any_value(any, value));
}

/// `AnyValue`'s oneof: string 1, bool 2, int 3, double 4, array 5. A oneof's field is written
/// even when it holds its type's default, as prost does (an empty string is still a string).
fn any_value(out: &mut Wire, value: &Value) {
    match value {
        Value::String(text) => out.bytes_always(1, text.as_str().as_bytes()),
        Value::Bool(flag) => out.varint_always(2, u64::from(*flag)),
        Value::I64(number) => out.varint_always(3, *number as u64),
        Value::F64(number) => out.fixed64_always(4, number.to_bits()),
        Value::Array(array) => out.message(5, |values| array_values(values, array)),
        // Value is non-exhaustive: a kind this code does not know goes as an empty AnyValue
        // (opentelemetry-proto's conversion would panic on it).
        _ => {}
    }
}

/// `ArrayValue { values = 1 (AnyValue) }`, with [`any_value`]'s field numbers.
fn array_values(out: &mut Wire, array: &Array) {
    match array {
        Array::Bool(values) => {
            for value in values {
                out.message(1, |any| any.varint_always(2, u64::from(*value)));
            }
        }
        Array::I64(values) => {
            for value in values {
                out.message(1, |any| any.varint_always(3, *value as u64));
            }
        }
        Array::F64(values) => {
            for value in values {
                out.message(1, |any| any.fixed64_always(4, value.to_bits()));
            }
        }
        Array::String(values) => {
            for value in values {
                out.message(1, |any| any.bytes_always(1, value.as_str().as_bytes()));
            }
        }
        _ => {}
    }
}

/// Protobuf fields appended to a buffer. Scalars at their default are left out, as proto3
/// does; a message's length is written once its body is (see [`Wire::message`]).
#[derive(Default)]
struct Wire(Vec<u8>);

impl Wire {
    fn bytes(&mut self, tag: u32, value: &[u8]) {
        if !value.is_empty() {
            self.bytes_always(tag, value);
        }
    }

    fn bytes_always(&mut self, tag: u32, value: &[u8]) {
        encode_key(tag, WireType::LengthDelimited, &mut self.0);
        encode_varint(value.len() as u64, &mut self.0);
        self.0.extend_from_slice(value);
    }

    fn string(&mut self, tag: u32, value: &str) {
        self.bytes(tag, value.as_bytes());
    }

    /// uint32, uint64 and enum fields.
    fn uint(&mut self, tag: u32, value: u64) {
        if value != 0 {
            self.varint_always(tag, value);
        }
    }

    fn varint_always(&mut self, tag: u32, value: u64) {
        encode_key(tag, WireType::Varint, &mut self.0);
        encode_varint(value, &mut self.0);
    }

    fn fixed32(&mut self, tag: u32, value: u32) {
        if value != 0 {
            encode_key(tag, WireType::ThirtyTwoBit, &mut self.0);
            self.0.extend_from_slice(&value.to_le_bytes());
        }
    }

    fn fixed64(&mut self, tag: u32, value: u64) {
        if value != 0 {
            self.fixed64_always(tag, value);
        }
    }

    fn fixed64_always(&mut self, tag: u32, value: u64) {
        encode_key(tag, WireType::SixtyFourBit, &mut self.0);
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    /// A message field, always written (a present message, even empty, is not an absent one).
    /// The body is written first and its length put in front of it after: one move of the
    /// body's bytes, instead of a second walk over the spans to compute every length first.
    fn message(&mut self, tag: u32, body: impl FnOnce(&mut Wire)) {
        encode_key(tag, WireType::LengthDelimited, &mut self.0);
        let start = self.0.len();
        body(self);
        let length = (self.0.len() - start) as u64;
        let mut prefix = [0u8; 10];
        let width = encoded_len_varint(length);
        encode_varint(length, &mut &mut prefix[..width]);
        self.0.splice(start..start, prefix[..width].iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use std::{borrow::Cow, time::Duration};

    use opentelemetry::trace::{Event, Link, SpanContext, SpanId, SpanKind, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::{
        tonic::collector::trace::v1::ExportTraceServiceRequest,
        transform::{
            common::tonic::ResourceAttributesWithSchema, trace::tonic::group_spans_by_resource_and_scope,
        },
    };
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use proptest::{collection::vec, prelude::*};
    use prost::Message;

    use super::*;

    /// What opentelemetry-otlp would have sent for the same batch.
    fn library_request(resource: &Resource, batch: &[SpanData]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                batch.to_vec(),
                &ResourceAttributesWithSchema::from(resource),
            ),
        }
    }

    /// Our encoding, decoded; and checked to be, byte for byte, prost's encoding of what
    /// opentelemetry-otlp would have sent (decoding alone would hide a duplicated field).
    fn ours(resource: &Resource, batch: &[SpanData]) -> ExportTraceServiceRequest {
        let bytes = export_request(&EncodedResource::new(resource), batch);
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("our encoding decodes");
        if decoded == library_request(resource, batch) {
            assert_eq!(bytes, decoded.encode_to_vec(), "the same message, other bytes");
        }
        decoded
    }

    /// A server span as a call makes it: a remote parent, the RPC attributes, an error status.
    fn server_span() -> SpanData {
        let context = SpanContext::new(
            TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736),
            SpanId::from(0x00f067aa0ba902b7),
            TraceFlags::SAMPLED,
            false,
            TraceState::from_key_value([("vendor", "value")]).unwrap(),
        );
        SpanData {
            span_context: context,
            parent_span_id: SpanId::from(0x53995c3f42cd8ad8),
            parent_span_is_remote: true,
            span_kind: SpanKind::Server,
            name: Cow::Borrowed("user.v1.UserService/GetUser"),
            start_time: UNIX_EPOCH + Duration::from_nanos(1_765_000_000_123_456_789),
            end_time: UNIX_EPOCH + Duration::from_nanos(1_765_000_000_123_556_789),
            attributes: vec![
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", "user.v1.UserService"),
                KeyValue::new("rpc.grpc.status_code", 5_i64),
                KeyValue::new("network.peer.port", 0_i64),
                KeyValue::new("empty", ""),
                KeyValue::new("flag", false),
                KeyValue::new("ratio", 0.0),
            ],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::error("user 42 not found"),
            instrumentation_scope: InstrumentationScope::builder("meshwork").build(),
        }
    }

    #[test]
    fn a_server_span_encodes_as_opentelemetry_proto_converts_it() {
        let resource = Resource::builder_empty()
            .with_service_name("user-service")
            .build();
        let mut long = server_span();
        // Lengths of two and three bytes, in a value, its KeyValue and the span.
        long.attributes
            .push(KeyValue::new("rpc.request.body", "x".repeat(200)));
        long.attributes
            .push(KeyValue::new("exception.stacktrace", "y".repeat(20_000)));
        let batch = [server_span(), long];
        assert_eq!(ours(&resource, &batch), library_request(&resource, &batch));
    }

    #[test]
    fn an_empty_batch_still_names_its_resource() {
        let resource = Resource::builder_empty()
            .with_service_name("hello-service")
            .build();
        assert_eq!(ours(&resource, &[]), library_request(&resource, &[]));
    }

    fn value() -> impl Strategy<Value = Value> {
        // Short, and long enough for lengths of two bytes.
        let text = || prop_oneof![".{0,12}", "[a-z]{120,140}"].prop_map(opentelemetry::StringValue::from);
        // Defaults included: a oneof's field is written even when it holds zero.
        let real = || prop_oneof![Just(0.0), -1e12..1e12_f64];
        let integer = || prop_oneof![Just(0_i64), any::<i64>()];
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            integer().prop_map(Value::I64),
            real().prop_map(Value::F64),
            text().prop_map(Value::String),
            vec(any::<bool>(), 0..3).prop_map(|v| Value::Array(Array::Bool(v))),
            vec(integer(), 0..3).prop_map(|v| Value::Array(Array::I64(v))),
            vec(real(), 0..3).prop_map(|v| Value::Array(Array::F64(v))),
            vec(text(), 0..3).prop_map(|v| Value::Array(Array::String(v))),
        ]
    }

    fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
        vec(
            ("[a-z._]{0,10}", value()).prop_map(|(key, value)| KeyValue::new(key, value)),
            0..5,
        )
    }

    fn context() -> impl Strategy<Value = SpanContext> {
        let state = proptest::option::of(("[a-z][a-z0-9]{0,6}", "[a-zA-Z0-9]{1,8}"));
        (any::<u128>(), any::<u64>(), any::<u8>(), any::<bool>(), state).prop_map(
            |(trace, span, flags, remote, state)| {
                let state = state
                    .map(|pair| TraceState::from_key_value([pair]).unwrap())
                    .unwrap_or_default();
                SpanContext::new(
                    TraceId::from(trace),
                    SpanId::from(span),
                    TraceFlags::new(flags),
                    remote,
                    state,
                )
            },
        )
    }

    fn time() -> impl Strategy<Value = SystemTime> {
        any::<u64>().prop_map(|nanos| UNIX_EPOCH + Duration::from_nanos(nanos >> 1))
    }

    fn span() -> impl Strategy<Value = SpanData> {
        let kind = prop_oneof![
            Just(SpanKind::Internal),
            Just(SpanKind::Server),
            Just(SpanKind::Client),
            Just(SpanKind::Producer),
            Just(SpanKind::Consumer),
        ];
        let status = prop_oneof![
            Just(Status::Unset),
            Just(Status::Ok),
            ".{0,12}".prop_map(Status::error),
        ];
        let scope = prop_oneof![
            Just(InstrumentationScope::builder("meshwork").build()),
            Just(
                InstrumentationScope::builder("other")
                    .with_version("1.2.3")
                    .with_schema_url("https://opentelemetry.io/schemas/1.26.0")
                    .with_attributes([KeyValue::new("scope.key", 7_i64)])
                    .build()
            ),
        ];
        let event = (".{0,8}", time(), attributes(), any::<u32>())
            .prop_map(|(name, at, attributes, dropped)| Event::new(name, at, attributes, dropped));
        let link = (context(), attributes(), any::<u32>())
            .prop_map(|(context, attributes, dropped)| Link::new(context, attributes, dropped));
        let ids = (context(), prop_oneof![Just(0_u64), any::<u64>()], any::<bool>());
        let times = (time(), time(), any::<u32>());
        let events = (vec(event, 0..3), any::<u32>()).prop_map(|(events, dropped_count)| {
            let mut span_events = SpanEvents::default();
            span_events.events = events;
            span_events.dropped_count = dropped_count;
            span_events
        });
        let links = (vec(link, 0..3), any::<u32>()).prop_map(|(links, dropped_count)| {
            let mut span_links = SpanLinks::default();
            span_links.links = links;
            span_links.dropped_count = dropped_count;
            span_links
        });
        (
            ids,
            kind,
            ".{0,16}",
            times,
            attributes(),
            events,
            links,
            status,
            scope,
        )
            .prop_map(
                |(
                    (context, parent, parent_remote),
                    kind,
                    name,
                    (start, end, dropped),
                    attributes,
                    events,
                    links,
                    status,
                    scope,
                )| {
                    SpanData {
                        span_context: context,
                        parent_span_id: SpanId::from(parent),
                        parent_span_is_remote: parent_remote,
                        span_kind: kind,
                        name: name.into(),
                        start_time: start,
                        end_time: end,
                        attributes,
                        dropped_attributes_count: dropped,
                        events,
                        links,
                        status,
                        instrumentation_scope: scope,
                    }
                },
            )
    }

    fn resource() -> impl Strategy<Value = Resource> {
        (
            attributes(),
            proptest::option::of("https://[a-z]{1,8}\\.io/schemas/1"),
        )
            .prop_map(|(attributes, schema_url)| match schema_url {
                Some(url) => Resource::builder_empty().with_schema_url(attributes, url).build(),
                None => Resource::builder_empty().with_attributes(attributes).build(),
            })
    }

    proptest! {
        /// Any batch: the same message opentelemetry-otlp would have sent, field by field.
        #[test]
        fn any_batch_encodes_as_opentelemetry_proto_converts_it(
            resource in resource(),
            batch in vec(span(), 0..6),
        ) {
            prop_assert_eq!(ours(&resource, &batch), library_request(&resource, &batch));
        }
    }
}
