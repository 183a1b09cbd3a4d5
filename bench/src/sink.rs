//! `sink`: an OTLP/gRPC trace receiver that answers every export OK at once and counts the
//! spans, so span export is measured with the real exporter at work and a cheap collector at
//! the other end. The running total goes to stderr at most every [`REPORT_EVERY`], so that
//! the benchmark can check the spans arrived without the sink printing per export.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use tonic::{Request, Response, Status};

use crate::BoxError;

const REPORT_EVERY: Duration = Duration::from_millis(200);

#[derive(Default)]
struct SpanCounter(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for SpanCounter {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

pub async fn run(listen: SocketAddr) -> Result<(), BoxError> {
    let counter = SpanCounter::default();
    tokio::spawn(report_total(counter.0.clone()));
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(counter))
        .serve(listen)
        .await?;
    Ok(())
}

/// Prints `otlp sink: N spans received` whenever the total has changed.
async fn report_total(total: Arc<AtomicU64>) {
    let mut reported = 0;
    let mut ticks = tokio::time::interval(REPORT_EVERY);
    loop {
        ticks.tick().await;
        let now = total.load(Ordering::Relaxed);
        if now != reported {
            eprintln!("otlp sink: {now} spans received");
            reported = now;
        }
    }
}
