//! The results the benchmark scripts leave in `.bench/results/`, one JSON object per line,
//! read back by `meshwork-bench report`.
//!
//! - `sayhello.jsonl`: one [`SayHelloRow`] per server and round, written by `bench/h2load.sh`
//!   (summarised by [`crate::summary`]).
//! - `mesh.jsonl`: one [`ScenarioResult`] per scenario, written by `load` and `watch`.
//! - `mesh-rounds.jsonl`: the mesh against bare tonic in rounds (`scripts/bench.sh`): one
//!   [`ScenarioResult`] per scenario and round, bare tonic's SayHello among them
//!   ([`BARE_SCENARIO`]).

use std::{
    collections::BTreeMap,
    fs::{self, OpenOptions},
    io::{self, Write},
    path::Path,
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// SayHello under h2load for one server in one round (written by `bench/h2load.sh`).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct SayHelloRow {
    /// Short name: `bare`, `hello`, `hello-warn`, `hello-otel`.
    pub server: String,
    /// What the row is, for the table (`hello-service, RUST_LOG=warn`).
    pub label: String,
    /// Which round, from 1: every server is measured once a round, so a server's row is
    /// compared with bare tonic's row of the same round. Results written before rounds
    /// existed have one row per server, read as round 0.
    #[serde(default)]
    pub round: u32,
    /// Requests per second with 52 streams (4 connections x 13).
    pub rps_52: f64,
    /// The server's CPU time (user + system, every thread) per call with 52 streams,
    /// microseconds: what a call costs, which a machine shared with other work moves far
    /// less than it moves throughput.
    #[serde(default)]
    pub cpu_us_52: f64,
    /// Requests per second with 1 stream.
    pub rps_1: f64,
    /// p99 latency with 1 stream, microseconds.
    pub p99_1_us: f64,
    /// Resident memory once ready, before any call, KiB.
    pub idle_rss_kib: f64,
    /// Median time from spawn to the first answer that says it is ready (health `SERVING`;
    /// for bare tonic, which has no health service, the first SayHello answered).
    pub ready_ms: f64,
    /// Seconds of warm-up (once per server) and of measurement (per shape and round).
    pub warmup_s: f64,
    pub duration_s: f64,
}

/// One measured mesh scenario (written by `meshwork-bench load` and `watch`).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct ScenarioResult {
    /// What was called (`GetUser`, `WatchOrders fan-out, 100 watchers`).
    pub scenario: String,
    /// Where the data lives (`SQLite`, `PostgreSQL`, `PostgreSQL, 2 replicas`).
    pub backend: String,
    /// The load applied (`64 calls in flight`, `100 watchers, 200 orders/s`).
    pub load: String,
    /// What `count` and `rate` count: `calls`, or `events` for WatchOrders deliveries.
    pub unit: String,
    /// Calls answered OK (or events delivered) in the measured window.
    pub count: u64,
    /// Length of the measured window.
    pub seconds: f64,
    /// `count` per second.
    pub rate: f64,
    /// Latency percentiles in milliseconds: call latency, or create-to-receive for events.
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// CPU seconds the watched services used in the window, together.
    pub cpu_seconds: f64,
    /// Peak resident set of each watched service in the window, MiB.
    pub peak_rss_mib: BTreeMap<String, f64>,
    /// Failed calls (or missed events) by gRPC code; a passing run has none.
    pub errors: BTreeMap<String, u64>,
    /// Seconds of warm-up before the window.
    pub warmup_s: f64,
    /// Which round, from 1, in `mesh-rounds.jsonl`; 0 for a scenario measured once.
    #[serde(default)]
    pub round: u32,
}

/// The scenario name of bare tonic's SayHello in `mesh-rounds.jsonl`: the yardstick.
pub const BARE_SCENARIO: &str = "bare tonic SayHello";

impl ScenarioResult {
    /// CPU seconds per 10,000 calls (or events).
    pub fn cpu_per_10k(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        self.cpu_seconds / self.count as f64 * 10_000.0
    }
}

/// Appends one result as a line of a JSON-lines file, creating the file and its folder.
pub fn append<T: Serialize>(path: &Path, row: &T) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(file, "{}", serde_json::to_string(row)?)
}

/// Every result in a JSON-lines file; a missing file has none (that part was not run).
pub fn read_all<T: DeserializeOwned>(path: &Path) -> io::Result<Vec<T>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).map_err(io::Error::other))
        .collect()
}
