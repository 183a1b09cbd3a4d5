//! Logs and traces.
//!
//! - Logs: `RUST_LOG` filters, `LOG_FORMAT=json` writes one JSON object per line. Every line
//!   written inside a call starts with the call's `trace_id` and `span_id`, so a log search
//!   finds the trace and a trace finds its logs.
//! - Traces: `tracing` spans become OpenTelemetry spans. With `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   set they are batched and exported over OTLP/gRPC; without it no span is made for a
//!   call, but calls still get ids (for the logs) and incoming trace context is still
//!   carried on (`meshwork_rpc::trace`).
//!
//! The log filter applies to the log output only: `RUST_LOG=warn` must not stop span export
//! (a global filter would, as both outputs share one subscriber).
//!
//! Logging stays off the calls' path: lines go to stdout in batches, through a writer
//! thread of their own ([`log_writer`]: a call never waits on the terminal or a pipe, and
//! the thread is not woken for every line), the log output sees events
//! only (spans' fields are not formatted into text for every call; a line carries its
//! trace and span ids instead), colour codes are written only to a terminal, and the access
//! log's line, one per call, is written by the call's end itself ([`AccessLog`]), not sent
//! through `tracing`.

use std::{io::IsTerminal, time::Duration};

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_sdk::{
    Resource,
    propagation::{BaggagePropagator, TraceContextPropagator},
    trace::{Sampler, SdkTracerProvider},
};
use tracing::Subscriber;
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{FilterExt, LevelFilter, filter_fn},
    fmt::MakeWriter,
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

use crate::config::{LogFormat, SamplerName, ServerConfig};

mod access_log;
#[cfg(test)]
mod captured;
mod line;
mod log_writer;
mod otlp;

pub use access_log::{AccessLine, AccessLog};
use line::{CachedTime, LineFormat, TextLine, WithTraceIds};
use log_writer::{LogWriter, LogWriterGuard};

/// The access log's name: what `RUST_LOG` calls it (`meshwork::access=off` stops it) and the
/// `target` its lines print, like an event's.
pub const ACCESS_LOG: &str = "meshwork::access";

/// Keeps telemetry running; [`Telemetry::shutdown`] flushes the spans still buffered.
#[must_use = "spans are lost unless Telemetry::shutdown runs before the process exits"]
pub struct Telemetry {
    provider: SdkTracerProvider,
    /// Writes the log lines still buffered when dropped.
    logs: LogWriterGuard,
    access_log: Option<&'static AccessLog>,
}

impl Telemetry {
    /// Where the server writes each call's access line; `None` when `RUST_LOG` turns the
    /// access log off.
    pub fn access_log(&self) -> Option<&'static AccessLog> {
        self.access_log
    }

    /// Exports every span still buffered (giving up after `timeout`), then stops the
    /// exporter. Call it last.
    pub async fn shutdown(self, timeout: Duration) {
        let provider = self.provider;
        // Blocking: the batch processor waits for its final export.
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout)).await;
        if let Ok(Err(error)) = flushed {
            tracing::warn!(%error, "flushing spans failed");
        }
        drop(self.logs);
    }
}

/// Installs logging and tracing for the whole process. Call once, first thing in `main`,
/// inside the tokio runtime (the OTLP exporter runs on it).
pub fn init(config: &ServerConfig) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry::propagation::TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]),
    );
    let provider = tracer_provider(config);

    let (stdout, guard) = LogWriter::spawn(std::io::stdout()).expect("cannot start the log writer thread");
    let format = match config.log_format {
        LogFormat::Json => LineFormat::Json,
        LogFormat::Text => LineFormat::Text {
            ansi: std::io::stdout().is_terminal(),
        },
    };
    // Asked before the subscriber is installed (see `enabled_by`). Lives as long as the
    // process: every call of every connection writes to it.
    let access_log = access_log::enabled_by(&config.rust_log)
        .then(|| &*Box::leak(Box::new(AccessLog::new(stdout.clone(), format))));
    match otel_spans(config, &provider) {
        Some(otel) => tracing_subscriber::registry()
            .with(otel)
            .with(log_output(&config.rust_log, format, stdout))
            .init(),
        None => tracing_subscriber::registry()
            .with(log_output(&config.rust_log, format, stdout))
            .init(),
    }
    Telemetry {
        provider,
        logs: guard,
        access_log,
    }
}

/// The log output: `log_lines`, filtered by `RUST_LOG`, seeing events only (spans' fields
/// are not formatted into text for every call; a line carries its call's ids instead).
fn log_output<S, W>(rust_log: &str, format: LineFormat, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let log_filter = EnvFilter::builder()
        .parse(rust_log)
        .expect("RUST_LOG was validated when the configuration was parsed");
    // With the log filter's level as its hint: a filter without one lifts the global
    // maximum level to TRACE, and then every `enabled!(debug)` probe (sqlx makes one per
    // statement) reaches the per-layer filters, which drop the thread's next line
    // (tokio-rs/tracing#2519).
    let level = log_filter.max_level_hint().unwrap_or(LevelFilter::TRACE);
    let events = log_filter.and(filter_fn(|metadata| metadata.is_event()).with_max_level_hint(level));
    log_lines(format, writer).with_filter(events).boxed()
}

/// The layer that writes log lines to `writer`, in `format`, each starting with the ids of
/// the call it was logged in.
fn log_lines<S, W>(format: LineFormat, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LineFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(WithTraceIds {
                inner: tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_timer(CachedTime),
                json: true,
            })
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .with_writer(writer)
            .boxed(),
        LineFormat::Text { ansi } => tracing_subscriber::fmt::layer()
            .event_format(WithTraceIds {
                inner: TextLine,
                json: false,
            })
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
    }
}

/// With an exporter, every span at `info` or above becomes an OpenTelemetry span. Without
/// one, nothing enables a span (nothing would read it): a call keeps only its ids, for the
/// lines logged in it (`meshwork_rpc::trace`).
fn otel_spans<S>(
    config: &ServerConfig,
    provider: &SdkTracerProvider,
) -> Option<Box<dyn Layer<S> + Send + Sync>>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    config.otel_exporter_otlp_endpoint.as_ref()?;
    Some(
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("meshwork"))
            // Per-span costs that buy nothing here: source location and thread name
            // attributes (allocated per span), and busy/idle timing on every poll.
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            // A `target` attribute on every span (`meshwork::call`), which no convention asks for:
            // one attribute more to build, convert and encode per span.
            .with_target(false)
            // Entering a span would also make its context OpenTelemetry's current one (a context
            // clone and a thread-local push on every poll of every call). Nothing here reads the
            // current context: outgoing calls and log lines take theirs from the call's
            // (`meshwork_rpc::trace`).
            .with_context_activation(false)
            .with_filter(LevelFilter::INFO)
            .boxed(),
    )
}

fn tracer_provider(config: &ServerConfig) -> SdkTracerProvider {
    let resource = Resource::builder()
        .with_attributes(
            config
                .otel_resource_attributes
                .0
                .iter()
                .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
        )
        .with_service_name(config.otel_service_name.clone())
        .build();
    let builder = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(sampler(
            config.otel_traces_sampler,
            config.otel_traces_sampler_arg,
        ));
    let Some(endpoint) = &config.otel_exporter_otlp_endpoint else {
        return builder.build();
    };
    let exporter = otlp::OtlpSpanExporter::new(
        endpoint,
        config.otlp_traces_headers().clone(),
        config.otlp_traces_timeout(),
    );
    match exporter {
        Ok(exporter) => builder.with_batch_exporter(exporter).build(),
        Err(error) => {
            eprintln!(
                "OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}: cannot build the exporter ({error}); not exporting"
            );
            builder.build()
        }
    }
}

fn sampler(name: SamplerName, ratio: f64) -> Sampler {
    match name {
        SamplerName::AlwaysOn => Sampler::AlwaysOn,
        SamplerName::AlwaysOff => Sampler::AlwaysOff,
        SamplerName::TraceIdRatio => Sampler::TraceIdRatioBased(ratio),
        SamplerName::ParentbasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerName::ParentbasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerName::ParentbasedTraceIdRatio => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
    }
}
