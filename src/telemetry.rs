//! Logging: `RUST_LOG` filters, `LOG_FORMAT=json` writes one JSON object per line.

use tracing_subscriber::{EnvFilter, Layer, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{LogFormat, ServerConfig};

/// Keeps telemetry running; dropping it at the end of `main` flushes what is buffered.
#[must_use = "telemetry is flushed when the guard drops: keep it until main returns"]
pub struct TelemetryGuard {
    _private: (),
}

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(config: &ServerConfig) -> TelemetryGuard {
    let filter = EnvFilter::builder()
        .parse(&config.rust_log)
        .expect("RUST_LOG was validated when the configuration was parsed");
    let registry = tracing_subscriber::registry();
    match config.log_format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(filter),
            )
            .init(),
        LogFormat::Text => registry.with(fmt::layer().with_filter(filter)).init(),
    }
    TelemetryGuard { _private: () }
}
