//! Span export over OTLP/gRPC: the batch processor's exporter.
//!
//! Written here rather than taken from opentelemetry-otlp, for the cost per span (measured with
//! callgrind, README *Benchmarks*): that exporter deep-copies each batch (kept for its retries),
//! converts every span into opentelemetry-proto's owned messages (a `Vec` or `String` for each
//! id, name, key and value, allocated on the export thread and freed on a tokio worker), and
//! prost walks those twice to encode them. This one writes the same request straight from the
//! SDK's spans into one buffer ([`encode`]; a test compares it with opentelemetry-proto's own
//! conversion) and sends those bytes, as they are, on a retry.
//!
//! What it keeps of opentelemetry-otlp's behaviour: `OTEL_EXPORTER_OTLP_HEADERS` on every
//! export, `OTEL_EXPORTER_OTLP_TIMEOUT` (10 s) for an export with its retries, and retries
//! with backoff on the codes the OTLP specification calls transient.

mod encode;

use std::time::{Duration, Instant};

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
use tonic::{
    Code, Request, Status,
    client::Grpc,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataMap,
    transport::{Channel, Endpoint},
};

use encode::EncodedResource;

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// Retries after the first attempt, each after twice the wait before it.
const RETRIES: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Sends each batch of spans to an OTLP/gRPC collector.
#[derive(Debug)]
pub struct OtlpSpanExporter {
    grpc: Grpc<Channel>,
    headers: MetadataMap,
    timeout: Duration,
    resource: EncodedResource,
    shut_down: std::sync::atomic::AtomicBool,
}

impl OtlpSpanExporter {
    /// An exporter to `endpoint` (`http://host:port`); it connects on its first export. Call
    /// inside the tokio runtime: the connection runs on it.
    pub fn new(endpoint: &str, headers: MetadataMap, timeout: Duration) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(endpoint.to_owned()).map_err(|e| e.to_string())?;
        if endpoint.uri().scheme_str() == Some("https") {
            return Err("https needs TLS, which this build's exporter does not have".into());
        }
        let channel = endpoint.timeout(timeout).connect_lazy();
        Ok(OtlpSpanExporter {
            grpc: Grpc::new(channel),
            headers,
            timeout,
            resource: EncodedResource::default(),
            shut_down: Default::default(),
        })
    }

    async fn send(&self, body: Bytes, remaining: Duration) -> Result<(), Status> {
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        let mut request = Request::new(body);
        *request.metadata_mut() = self.headers.clone();
        request.set_timeout(remaining);
        let response = grpc
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

impl SpanExporter for OtlpSpanExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if self.shut_down.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let body = Bytes::from(encode::export_request(&self.resource, &batch));
        drop(batch);
        let deadline = Instant::now() + self.timeout;
        let mut backoff = FIRST_BACKOFF;
        let mut retries = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Err(status) = self.send(body.clone(), remaining).await else {
                return Ok(());
            };
            let out_of_time = backoff >= deadline.saturating_duration_since(Instant::now());
            if retries == RETRIES || out_of_time || !transient(status.code()) {
                // The code only: a collector's message may echo the request's headers.
                return Err(OTelSdkError::InternalFailure(format!(
                    "OTLP export failed: {:?}",
                    status.code()
                )));
            }
            pause(backoff).await;
            backoff *= 2;
            retries += 1;
        }
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        if self.shut_down.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = EncodedResource::new(resource);
    }
}

/// The codes the OTLP specification says to retry (RESOURCE_EXHAUSTED only with a retry
/// hint, which this does not read).
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// The batch processor runs exports on a thread of its own, outside the runtime, where a
/// blocking wait holds up nothing else; inside a runtime, tokio's timer.
async fn pause(duration: Duration) {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::time::sleep(duration).await,
        Err(_) => std::thread::sleep(duration),
    }
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

    use super::*;

    /// A collector that answers each export with the next of `answers` (then OK), and keeps
    /// what it was sent.
    #[derive(Clone, Default)]
    struct Collector {
        answers: Arc<Mutex<Vec<Code>>>,
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
                Some(code) => Err(Status::new(code, "not now")),
                None => Ok(tonic::Response::new(ExportTraceServiceResponse::default())),
            }
        }
    }

    /// A collector on a loopback port, answering `answers` in turn.
    async fn collector(mut answers: Vec<Code>) -> (Collector, String) {
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
        let (collector, url) = collector(vec![Code::Unavailable, Code::Unavailable]).await;
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
        let (collector, url) = collector(vec![Code::InvalidArgument]).await;

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
}
