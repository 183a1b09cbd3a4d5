//! Span export over OTLP/gRPC: the batch processor's exporter.
//!
//! Written here rather than taken from opentelemetry-otlp, for the cost per span (measured with
//! callgrind, docs/performance-log.md): that exporter deep-copies each batch (kept for its
//! retries), converts every span into opentelemetry-proto's owned messages (a `Vec` or `String`
//! for each id, name, key and value, allocated on the export thread and freed on a tokio
//! worker), and prost walks those twice to encode them. This one writes the same request
//! straight from the SDK's spans into one buffer ([`encode`]; a test compares it with
//! opentelemetry-proto's own conversion) and sends those bytes, as they are, on a retry.
//!
//! What it keeps of opentelemetry-otlp's behaviour: `OTEL_EXPORTER_OTLP_HEADERS` on every
//! export, `OTEL_EXPORTER_OTLP_TIMEOUT` (10 s) for an export with its connection and retries,
//! their `_TRACES_` forms (`crate::config`), and retries on the codes the OTLP specification
//! calls transient, after the collector's `RetryInfo` delay or a backoff with jitter.

mod encode;

use std::{
    fmt,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{SpanData, SpanExporter},
};
use prost::{
    Message,
    bytes::{BufMut, Bytes},
};
use tokio::runtime::Handle;
use tonic::{
    Code, Request, Status,
    client::Grpc,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataMap,
    transport::{Channel, Endpoint},
};
use tonic_types::StatusExt;

use encode::EncodedResource;

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// Retries after the first attempt.
const RETRIES: u32 = 3;
/// The wait before the first retry; each next one waits twice as long, plus up to half again
/// at random, so that a fleet restarted together does not retry together.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Sends each batch of spans to an OTLP/gRPC collector.
pub struct OtlpSpanExporter {
    endpoint: String,
    grpc: Grpc<Channel>,
    headers: MetadataMap,
    timeout: Duration,
    resource: EncodedResource,
    /// Where each export runs (see `export`).
    runtime: Handle,
    shut_down: AtomicBool,
}

impl OtlpSpanExporter {
    /// An exporter to `endpoint` (`http://host:port`); it connects on its first export. Call
    /// inside the tokio runtime: the connection and every export run on it.
    pub fn new(endpoint: &str, headers: MetadataMap, timeout: Duration) -> Result<Self, String> {
        let runtime = Handle::try_current().map_err(|error| error.to_string())?;
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .and_then(|e| e.user_agent(concat!("meshwork/", env!("CARGO_PKG_VERSION"))))
            .map_err(|error| error.to_string())?
            .connect_timeout(timeout)
            .connect_lazy();
        Ok(OtlpSpanExporter {
            endpoint: endpoint.to_owned(),
            grpc: Grpc::new(channel),
            headers,
            timeout,
            resource: EncodedResource::default(),
            runtime,
            shut_down: AtomicBool::new(false),
        })
    }
}

impl fmt::Debug for OtlpSpanExporter {
    /// Header names only: a value may be a collector's API key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<_> = self.headers.keys().collect();
        f.debug_struct("OtlpSpanExporter")
            .field("endpoint", &self.endpoint)
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SpanExporter for OtlpSpanExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if self.shut_down.load(Ordering::Relaxed) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let body = Bytes::from(encode::export_request(&self.resource, &batch));
        // The spans are freed now, not after the collector's answer and any retries.
        drop(batch);
        let attempts = Attempts {
            grpc: self.grpc.clone(),
            headers: self.headers.clone(),
            body,
            deadline: Instant::now() + self.timeout,
        };
        let timeout = self.timeout;
        // The batch processor calls this from a thread of its own. On the runtime, tokio's
        // timer bounds the whole export, connecting and retries included, and paces the
        // retries without holding up a thread the runtime needs.
        let export = async move {
            match tokio::time::timeout(timeout, attempts.run()).await {
                Ok(answer) => answer.map_err(|status| describe(&status)),
                Err(_) => Err(format!("no answer within {timeout:?}")),
            }
        };
        match self.runtime.spawn(export).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(OTelSdkError::InternalFailure(format!(
                "OTLP export failed: {why}"
            ))),
            Err(_) => Err(OTelSdkError::InternalFailure(
                "OTLP export failed: the runtime is shutting down".into(),
            )),
        }
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        if self.shut_down.swap(true, Ordering::Relaxed) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = EncodedResource::new(resource);
    }
}

/// One batch's request, sent until the collector takes it, refuses it, or the retries run out.
struct Attempts {
    grpc: Grpc<Channel>,
    headers: MetadataMap,
    body: Bytes,
    deadline: Instant,
}

impl Attempts {
    async fn run(mut self) -> Result<(), Status> {
        let mut backoff = FIRST_BACKOFF;
        let mut retries = 0;
        loop {
            let Err(status) = self.send().await else {
                return Ok(());
            };
            let wait = match retry(&status) {
                Retry::After(delay) => delay,
                Retry::Backoff => jittered(backoff),
                Retry::No => return Err(status),
            };
            if retries == RETRIES {
                return Err(status);
            }
            tokio::time::sleep(wait).await;
            backoff *= 2;
            retries += 1;
        }
    }

    async fn send(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        let mut request = Request::new(self.body.clone());
        *request.metadata_mut() = self.headers.clone();
        request.set_timeout(self.deadline.saturating_duration_since(Instant::now()));
        let response = self
            .grpc
            .unary(request, PathAndQuery::from_static(EXPORT), EncodedRequest)
            .await?;
        // The collector took the request but not every span in it: the specification says
        // not to send them again.
        if let Some(partial) = response.into_inner().partial_success
            && (partial.rejected_spans > 0 || !partial.error_message.is_empty())
        {
            tracing::warn!(
                rejected_spans = partial.rejected_spans,
                message = partial.error_message,
                "the OTLP collector rejected spans"
            );
        }
        Ok(())
    }
}

/// Whether to send a request again after `status`, and when.
enum Retry {
    /// Not one of the codes the OTLP specification calls transient.
    No,
    /// After the collector's own delay (`google.rpc.RetryInfo`).
    After(Duration),
    /// After a backoff of our own.
    Backoff,
}

/// RESOURCE_EXHAUSTED is retried only when the collector says when (the specification).
fn retry(status: &Status) -> Retry {
    let asked = status.get_details_retry_info().and_then(|info| info.retry_delay);
    match (status.code(), asked) {
        (Code::ResourceExhausted, Some(delay)) => Retry::After(delay),
        (Code::ResourceExhausted, None) => Retry::No,
        (
            Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss,
            asked,
        ) => asked.map_or(Retry::Backoff, Retry::After),
        _ => Retry::No,
    }
}

/// `backoff` plus up to half of it again, at random.
fn jittered(backoff: Duration) -> Duration {
    backoff + backoff.mul_f64(fastrand::f64() / 2.0)
}

/// The code, and for a failure of our own side (no connection, a refused connect) its cause.
/// Not the collector's message: it may echo the request's headers.
fn describe(status: &Status) -> String {
    let mut text = format!("{:?}", status.code());
    let mut cause = std::error::Error::source(status);
    while let Some(error) = cause {
        text.push_str(": ");
        text.push_str(&error.to_string());
        cause = error.source();
    }
    text
}

/// The request's bytes as they are, already encoded; the response decoded by prost.
#[derive(Debug, Clone, Copy)]
struct EncodedRequest;

impl Codec for EncodedRequest {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = EncodedRequest;
    type Decoder = EncodedRequest;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedRequest
    }

    fn decoder(&mut self) -> Self::Decoder {
        EncodedRequest
    }
}

impl Encoder for EncodedRequest {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for EncodedRequest {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let response = ExportTraceServiceResponse::decode(src)
            .map_err(|error| Status::internal(format!("the collector's answer: {error}")))?;
        Ok(Some(response))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::{
        InstrumentationScope,
        trace::{SpanContext, SpanId, SpanKind, Status as SpanStatus, TraceFlags, TraceId, TraceState},
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest,
        trace_service_server::{TraceService, TraceServiceServer},
    };
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use tonic::metadata::MetadataValue;
    use tonic_types::ErrorDetails;

    use super::*;

    /// A collector that answers each export with the next of `answers` (then OK), and keeps
    /// what it was sent.
    #[derive(Clone, Default)]
    struct Collector {
        answers: Arc<Mutex<Vec<Status>>>,
        received: Arc<Mutex<Vec<(MetadataMap, ExportTraceServiceRequest)>>>,
    }

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
            let (metadata, _, message) = request.into_parts();
            self.received.lock().unwrap().push((metadata, message));
            let answer = self.answers.lock().unwrap().pop();
            match answer {
                Some(status) => Err(status),
                None => Ok(tonic::Response::new(ExportTraceServiceResponse::default())),
            }
        }
    }

    /// A collector on a loopback port, answering `answers` in turn.
    async fn collector(mut answers: Vec<Status>) -> (Collector, String) {
        answers.reverse();
        let collector = Collector {
            answers: Arc::new(Mutex::new(answers)),
            ..Default::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector.clone()))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (collector, url)
    }

    fn exporter(url: &str) -> OtlpSpanExporter {
        let mut headers = MetadataMap::new();
        headers.insert("api-key", MetadataValue::from_static("s3cret"));
        let mut exporter = OtlpSpanExporter::new(url, headers, Duration::from_secs(10)).unwrap();
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name("hello-service")
                .build(),
        );
        exporter
    }

    fn span(name: &'static str) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(7),
                SpanId::from(9),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: name.into(),
            start_time: std::time::UNIX_EPOCH,
            end_time: std::time::UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: SpanStatus::Unset,
            instrumentation_scope: InstrumentationScope::builder("meshwork").build(),
        }
    }

    fn span_names(request: &ExportTraceServiceRequest) -> Vec<String> {
        let scopes = request.resource_spans.iter().flat_map(|r| &r.scope_spans);
        scopes
            .flat_map(|s| &s.spans)
            .map(|span| span.name.clone())
            .collect()
    }

    #[tokio::test]
    async fn a_batch_arrives_with_its_headers_after_transient_failures() {
        let unavailable = || Status::unavailable("restarting");
        let (collector, url) = collector(vec![unavailable(), unavailable()]).await;
        let batch = vec![span("hello.v1.HelloService/SayHello"), span("second")];

        exporter(&url)
            .export(batch)
            .await
            .expect("the third attempt succeeds");

        let received = collector.received.lock().unwrap();
        assert_eq!(received.len(), 3, "two failures, then the export that succeeded");
        for (metadata, request) in received.iter() {
            assert_eq!(metadata.get("api-key").unwrap(), "s3cret");
            assert_eq!(span_names(request), ["hello.v1.HelloService/SayHello", "second"]);
        }
    }

    #[tokio::test]
    async fn a_batch_the_collector_refuses_is_not_sent_again() {
        let (collector, url) = collector(vec![Status::invalid_argument("bad span")]).await;

        let result = exporter(&url).export(vec![span("refused")]).await;

        assert!(result.is_err());
        assert_eq!(collector.received.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn after_shutdown_nothing_is_sent() {
        let (collector, url) = collector(Vec::new()).await;
        let exporter = exporter(&url);
        exporter.shutdown().unwrap();

        assert!(exporter.export(vec![span("late")]).await.is_err());
        assert!(collector.received.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn resource_exhausted_is_sent_again_only_when_the_collector_says_when() {
        let later = ErrorDetails::with_retry_info(Some(Duration::from_millis(10)));
        let (collector, url) = collector(vec![
            Status::with_error_details(Code::ResourceExhausted, "busy", later),
            Status::resource_exhausted("full"),
        ])
        .await;

        let result = exporter(&url).export(vec![span("busy")]).await;

        assert!(result.is_err(), "the second answer gave no delay: not retried");
        assert_eq!(collector.received.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_export_to_a_collector_that_never_answers_ends_at_the_timeout() {
        // Accepts connections and never speaks HTTP/2.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut exporter =
            OtlpSpanExporter::new(&url, MetadataMap::new(), Duration::from_millis(300)).unwrap();
        exporter.set_resource(&Resource::builder_empty().build());

        let bounded = tokio::time::timeout(Duration::from_secs(20), exporter.export(vec![span("lost")]));
        let result = bounded.await.expect("the export's own timeout ends it first");

        assert!(result.unwrap_err().to_string().contains("no answer within"));
        drop(listener);
    }

    #[tokio::test]
    async fn the_exporter_never_prints_a_header_value() {
        let exporter = exporter("http://127.0.0.1:4317");
        let printed = format!("{exporter:?}");
        assert!(
            printed.contains("api-key") && !printed.contains("s3cret"),
            "{printed}"
        );
    }
}
