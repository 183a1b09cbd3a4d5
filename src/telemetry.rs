//! Logging: `RUST_LOG` filters, `LOG_FORMAT=json` writes one JSON object per line.

use tracing_subscriber::{EnvFilter, Layer, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{LogFormat, ServerConfig};

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(config: &ServerConfig) {
    let filter = EnvFilter::builder()
        .parse(&config.rust_log)
        .expect("RUST_LOG was validated when the configuration was parsed");
    let registry = tracing_subscriber::registry();
    match config.log_format {
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false).with_filter(filter))
            .init(),
        LogFormat::Text => registry.with(fmt::layer().with_filter(filter)).init(),
    }
}
