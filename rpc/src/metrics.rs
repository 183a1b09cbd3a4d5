//! Prometheus metrics, with the grpc-ecosystem names existing Grafana dashboards use
//! (`grpc_server_handled_total`, ...). The server runtime serves them at `/metrics`.
//!
//! The `prometheus` crate's default registry also carries its process collector:
//! `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`, ...

use std::sync::{LazyLock, OnceLock};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    TextEncoder, register_histogram_vec, register_int_counter_vec, register_int_gauge_vec,
};
use tonic::Code;

use crate::{call::code_name, method::RpcMethod};

/// Latency buckets, in seconds: from a cached read (1 ms) to a call that hit its deadline.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The golden signals of one side (server or client) of gRPC calls.
pub struct GrpcMetrics {
    started: IntCounterVec,
    handled: IntCounterVec,
    handling_seconds: HistogramVec,
    in_flight: IntGaugeVec,
    /// Each method's series, resolved on its first call and then reused: a call touches
    /// its counters directly instead of hashing four label values into each family.
    by_method: Box<[OnceLock<MethodSeries>]>,
}

/// The series of one method.
struct MethodSeries {
    started: IntCounter,
    in_flight: IntGauge,
    handling_seconds: Histogram,
    /// By status code (0..=16), each resolved on its first use.
    handled: [OnceLock<IntCounter>; 17],
}

/// Calls this process served.
pub static SERVER: LazyLock<GrpcMetrics> = LazyLock::new(|| GrpcMetrics::register("server"));
/// Calls this process made (Order → User).
pub static CLIENT: LazyLock<GrpcMetrics> = LazyLock::new(|| GrpcMetrics::register("client"));

const LABELS: &[&str] = &["grpc_type", "grpc_service", "grpc_method"];
const LABELS_WITH_CODE: &[&str] = &["grpc_type", "grpc_service", "grpc_method", "grpc_code"];

impl GrpcMetrics {
    fn register(side: &str) -> Self {
        let name = |what: &str| format!("grpc_{side}_{what}");
        let registered = "metric names are unique and registered once per process";
        Self {
            started: register_int_counter_vec!(
                Opts::new(name("started_total"), format!("RPCs started on the {side}.")),
                LABELS
            )
            .expect(registered),
            handled: register_int_counter_vec!(
                Opts::new(
                    name("handled_total"),
                    format!("RPCs completed on the {side}, by code.")
                ),
                LABELS_WITH_CODE
            )
            .expect(registered),
            handling_seconds: register_histogram_vec!(
                HistogramOpts::new(
                    name("handling_seconds"),
                    format!("Time from the start of an RPC to its status, on the {side}.")
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                LABELS
            )
            .expect(registered),
            in_flight: register_int_gauge_vec!(
                Opts::new(
                    name("in_flight"),
                    format!("RPCs started and not yet completed on the {side}.")
                ),
                LABELS
            )
            .expect(registered),
            by_method: (0..RpcMethod::count()).map(|_| OnceLock::new()).collect(),
        }
    }

    fn series(&self, method: &RpcMethod) -> &MethodSeries {
        self.by_method[method.index].get_or_init(|| {
            let labels = [method.call_type.as_str(), method.service, method.method];
            MethodSeries {
                started: self.started.with_label_values(&labels),
                in_flight: self.in_flight.with_label_values(&labels),
                handling_seconds: self.handling_seconds.with_label_values(&labels),
                handled: Default::default(),
            }
        })
    }

    fn handled(&self, method: &RpcMethod, code: Code) -> &IntCounter {
        self.series(method).handled[code as usize].get_or_init(|| {
            let labels = [
                method.call_type.as_str(),
                method.service,
                method.method,
                code_name(code),
            ];
            self.handled.with_label_values(&labels)
        })
    }

    /// Creates the series of every method of `service` at zero, as grpc-go's
    /// `InitializeMetrics` does: dashboards and `rate()` see a method before its first call.
    pub fn initialize(&self, service: &str) {
        for method in RpcMethod::all_of(service) {
            self.handled(&method, Code::Ok);
        }
    }

    /// Counts a started call; the returned guard counts its end.
    pub fn start(&'static self, method: RpcMethod) -> CallTimer {
        let series = self.series(&method);
        series.started.inc();
        series.in_flight.inc();
        CallTimer {
            metrics: self,
            method,
            started: std::time::Instant::now(),
            finished: false,
        }
    }
}

/// One call in flight; [`CallTimer::finish`] records how it ended. Dropped unfinished (the
/// caller went away, or a deadline dropped the call), it records `Canceled`, so the
/// in-flight gauge never leaks.
pub struct CallTimer {
    metrics: &'static GrpcMetrics,
    method: RpcMethod,
    started: std::time::Instant,
    finished: bool,
}

impl CallTimer {
    /// When the call started.
    pub fn started(&self) -> std::time::Instant {
        self.started
    }

    /// Counts the call as ended with `code`, and returns how long it took.
    pub fn finish(mut self, code: Code) -> std::time::Duration {
        self.record(code)
    }

    fn record(&mut self, code: Code) -> std::time::Duration {
        if std::mem::replace(&mut self.finished, true) {
            return std::time::Duration::ZERO;
        }
        let elapsed = self.started.elapsed();
        let series = self.metrics.series(&self.method);
        series.in_flight.dec();
        series.handling_seconds.observe(elapsed.as_secs_f64());
        self.metrics.handled(&self.method, code).inc();
        elapsed
    }
}

impl Drop for CallTimer {
    fn drop(&mut self) {
        self.record(Code::Cancelled);
    }
}

/// What the client stack's resilience does: retries, and endpoints ejected by breakers.
pub struct ResilienceMetrics {
    retries: IntCounterVec,
    ejections: IntCounterVec,
    ejected: IntGaugeVec,
}

/// The client stack's retries and ejections.
pub static RESILIENCE: LazyLock<ResilienceMetrics> = LazyLock::new(|| {
    let registered = "metric names are unique and registered once per process";
    ResilienceMetrics {
        retries: register_int_counter_vec!(
            Opts::new(
                "grpc_client_retries_total",
                "Attempts sent again after UNAVAILABLE or no response."
            ),
            &["grpc_service", "grpc_method"]
        )
        .expect(registered),
        ejections: register_int_counter_vec!(
            Opts::new(
                "meshwork_client_endpoint_ejections_total",
                "Times an endpoint was ejected by its breaker."
            ),
            &["endpoint"]
        )
        .expect(registered),
        ejected: register_int_gauge_vec!(
            Opts::new(
                "meshwork_client_endpoint_ejected",
                "1 while an endpoint is ejected, else 0."
            ),
            &["endpoint"]
        )
        .expect(registered),
    }
});

impl ResilienceMetrics {
    pub fn retried(&self, method: &RpcMethod) {
        self.retries
            .with_label_values(&[method.service, method.method])
            .inc();
    }

    /// An endpoint was ejected (`true`) or came back (`false`).
    pub fn ejected(&self, endpoint: &str, ejected: bool) {
        if ejected {
            self.ejections.with_label_values(&[endpoint]).inc();
        }
        self.ejected
            .with_label_values(&[endpoint])
            .set(i64::from(ejected));
    }
}

/// Every registered metric, in Prometheus text format 0.0.4.
pub fn render() -> String {
    // Touch both sides so their series exist (with no samples) from the first scrape.
    LazyLock::force(&SERVER);
    LazyLock::force(&CLIENT);
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&prometheus::gather(), &mut text)
        .expect("encoding metrics into memory cannot fail");
    String::from_utf8(text).expect("the text format is UTF-8")
}
