//! Rounds summarised, for the tables and the plot: SayHello's servers (`bench/h2load.sh`) and
//! the mesh scenarios against bare tonic (`scripts/bench.sh`).
//!
//! `bench/h2load.sh` measures every server in each of several rounds, one server after another,
//! so that a server and bare tonic are measured within seconds of each other. On a machine
//! shared with other work the speed of the whole machine drifts by tens of percent over minutes,
//! and one long window per server compares a server with a baseline measured at another speed.
//! So a ratio here is the **median of the per-round ratios** (each server's window against
//! bare tonic's window of the same round), reported with the lowest and highest of them, and a
//! value is the median of its rounds.

use crate::results::{BARE_SCENARIO, SayHelloRow, ScenarioResult};

/// One server's rounds, summarised.
#[derive(Debug, Clone)]
pub struct SayHelloSummary {
    pub server: String,
    pub label: String,
    /// How many rounds were measured.
    pub rounds: usize,
    /// Requests per second with 52 streams.
    pub rps_52: Measure,
    /// CPU time per call with 52 streams, microseconds.
    pub cpu_us_52: Measure,
    /// Requests per second with 1 stream.
    pub rps_1: Measure,
    /// p99 latency with 1 stream, microseconds.
    pub p99_1_us: Measure,
    pub idle_rss_kib: f64,
    pub ready_ms: f64,
    pub warmup_s: f64,
    pub duration_s: f64,
}

/// The median of one measure over the rounds, and its ratio to bare tonic's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measure {
    pub median: f64,
    /// None when there is no bare tonic row to compare with.
    pub ratio: Option<Ratio>,
}

/// Per-round ratios to bare tonic: their median, lowest and highest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio {
    pub median: f64,
    pub low: f64,
    pub high: f64,
}

impl SayHelloSummary {
    pub fn is_bare(&self) -> bool {
        self.server == "bare"
    }
}

/// Every server's rounds summarised, in the order the servers first appear.
pub fn sayhello(rows: &[SayHelloRow]) -> Vec<SayHelloSummary> {
    let mut servers: Vec<&str> = Vec::new();
    for row in rows {
        if !servers.contains(&row.server.as_str()) {
            servers.push(&row.server);
        }
    }
    let bare: Vec<&SayHelloRow> = rows.iter().filter(|row| row.server == "bare").collect();
    servers
        .into_iter()
        .map(|server| {
            let own: Vec<&SayHelloRow> = rows.iter().filter(|row| row.server == server).collect();
            summarise(&own, &bare)
        })
        .collect()
}

fn summarise(own: &[&SayHelloRow], bare: &[&SayHelloRow]) -> SayHelloSummary {
    let first = own[0];
    let measure = |of: fn(&SayHelloRow) -> f64| Measure {
        median: median(own.iter().map(|row| of(row)).collect()),
        ratio: ratio(own, bare, of),
    };
    SayHelloSummary {
        server: first.server.clone(),
        label: first.label.clone(),
        rounds: own.len(),
        rps_52: measure(|row| row.rps_52),
        cpu_us_52: measure(|row| row.cpu_us_52),
        rps_1: measure(|row| row.rps_1),
        p99_1_us: measure(|row| row.p99_1_us),
        idle_rss_kib: first.idle_rss_kib,
        ready_ms: first.ready_ms,
        warmup_s: first.warmup_s,
        duration_s: first.duration_s,
    }
}

/// Each round's value over bare tonic's value in the same round; rounds bare tonic has no
/// (positive) value for are left out.
fn ratio(own: &[&SayHelloRow], bare: &[&SayHelloRow], of: fn(&SayHelloRow) -> f64) -> Option<Ratio> {
    let own: Vec<(u32, f64)> = own.iter().map(|row| (row.round, of(row))).collect();
    let bare: Vec<(u32, f64)> = bare.iter().map(|row| (row.round, of(row))).collect();
    paired_ratio(&own, &bare)
}

/// The ratios of `own`'s values to `bare`'s of the same round (both `(round, value)`):
/// their median, lowest and highest; `None` when no round has both.
fn paired_ratio(own: &[(u32, f64)], bare: &[(u32, f64)]) -> Option<Ratio> {
    let ratios: Vec<f64> = own
        .iter()
        .filter_map(|(round, value)| {
            let (_, baseline) = bare.iter().find(|(bare_round, _)| bare_round == round)?;
            (*baseline > 0.0).then(|| value / baseline)
        })
        .collect();
    if ratios.is_empty() {
        return None;
    }
    Some(Ratio {
        low: ratios.iter().copied().fold(f64::INFINITY, f64::min),
        high: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        median: median(ratios),
    })
}

/// One mesh scenario's rounds against bare tonic's SayHello, through the same load generator.
#[derive(Debug, Clone)]
pub struct MeshRounds {
    pub scenario: String,
    pub backend: String,
    pub rounds: usize,
    /// Calls per second, and their ratio to bare tonic's in the same round.
    pub rate: Measure,
    /// Median CPU seconds per 10,000 calls (bare tonic's row: bare tonic's own).
    pub cpu_per_10k: f64,
    pub seconds: f64,
}

/// Every scenario of `mesh-rounds.jsonl`, bare tonic's first, in the order they first appear.
pub fn mesh_rounds(rows: &[ScenarioResult]) -> Vec<MeshRounds> {
    let bare: Vec<(u32, f64)> = rows
        .iter()
        .filter(|row| row.scenario == BARE_SCENARIO)
        .map(|row| (row.round, row.rate))
        .collect();
    let mut scenarios: Vec<(&str, &str)> = Vec::new();
    for row in rows {
        let key = (row.scenario.as_str(), row.backend.as_str());
        if !scenarios.contains(&key) {
            scenarios.push(key);
        }
    }
    scenarios.sort_by_key(|(scenario, _)| *scenario != BARE_SCENARIO);
    scenarios
        .into_iter()
        .map(|(scenario, backend)| {
            let own: Vec<&ScenarioResult> = rows
                .iter()
                .filter(|row| row.scenario == scenario && row.backend == backend)
                .collect();
            let rates: Vec<(u32, f64)> = own.iter().map(|row| (row.round, row.rate)).collect();
            MeshRounds {
                scenario: scenario.to_owned(),
                backend: backend.to_owned(),
                rounds: own.len(),
                rate: Measure {
                    median: median(rates.iter().map(|(_, rate)| *rate).collect()),
                    ratio: paired_ratio(&rates, &bare),
                },
                cpu_per_10k: median(own.iter().map(|row| row.cpu_per_10k()).collect()),
                seconds: own[0].seconds,
            }
        })
        .collect()
}

/// The middle value; of an even count, the mean of the two middle ones.
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(name: &str, round: u32, rate: f64) -> ScenarioResult {
        ScenarioResult {
            scenario: name.into(),
            backend: "SQLite".into(),
            round,
            rate,
            count: 1_000,
            cpu_seconds: 0.1,
            ..ScenarioResult::default()
        }
    }

    #[test]
    fn mesh_rounds_pair_each_scenario_with_bare_tonics_round() {
        let rows = [
            scenario("CreateOrder", 1, 9_000.0),
            scenario(BARE_SCENARIO, 1, 100_000.0),
            scenario("CreateOrder", 2, 4_000.0),
            scenario(BARE_SCENARIO, 2, 40_000.0),
            scenario("CreateOrder", 3, 8_800.0),
            scenario(BARE_SCENARIO, 3, 80_000.0),
        ];
        let summary = mesh_rounds(&rows);
        assert_eq!(summary[0].scenario, BARE_SCENARIO, "bare tonic first");
        let order = &summary[1];
        assert_eq!((order.scenario.as_str(), order.rounds), ("CreateOrder", 3));
        assert_eq!(order.rate.median, 8_800.0);
        assert_eq!(
            order.rate.ratio,
            Some(Ratio {
                median: 0.1,
                low: 0.09,
                high: 0.11
            })
        );
        assert_eq!(order.cpu_per_10k, 1.0);
    }

    fn row(server: &str, round: u32, rps_52: f64) -> SayHelloRow {
        SayHelloRow {
            server: server.into(),
            label: server.into(),
            round,
            rps_52,
            cpu_us_52: 10.0,
            rps_1: 1_000.0,
            p99_1_us: 100.0,
            idle_rss_kib: 4096.0,
            ready_ms: 5.0,
            warmup_s: 5.0,
            duration_s: 2.0,
        }
    }

    #[test]
    fn ratios_pair_each_round_with_bare_tonics_round() {
        // The machine halves its speed in round 2: each round's ratio stays 0.9, though the
        // medians of the raw values (bare 80k, hello 36k) would say 0.45.
        let rows = [
            row("bare", 1, 100_000.0),
            row("hello", 1, 90_000.0),
            row("bare", 2, 50_000.0),
            row("hello", 2, 45_000.0),
            row("bare", 3, 80_000.0),
            row("hello", 3, 72_000.0),
        ];
        let summary = sayhello(&rows);
        assert_eq!(summary.len(), 2);
        let hello = &summary[1];
        assert_eq!((hello.server.as_str(), hello.rounds), ("hello", 3));
        assert_eq!(hello.rps_52.median, 72_000.0);
        let ratio = hello.rps_52.ratio.unwrap();
        assert!((ratio.median - 0.9).abs() < 1e-9, "{ratio:?}");
        assert!(
            (ratio.low - 0.9).abs() < 1e-9 && (ratio.high - 0.9).abs() < 1e-9,
            "{ratio:?}"
        );
        assert_eq!(summary[0].rps_52.ratio.unwrap().median, 1.0);
    }

    #[test]
    fn a_ratio_is_the_median_round_with_its_spread() {
        let rows = [
            row("bare", 1, 100.0),
            row("bare", 2, 100.0),
            row("bare", 3, 100.0),
            row("hello", 1, 70.0),
            row("hello", 2, 95.0),
            row("hello", 3, 80.0),
        ];
        let ratio = sayhello(&rows)[1].rps_52.ratio.unwrap();
        assert_eq!(
            ratio,
            Ratio {
                median: 0.8,
                low: 0.7,
                high: 0.95
            }
        );
    }

    #[test]
    fn without_bare_tonic_there_is_no_ratio() {
        let summary = sayhello(&[row("hello", 1, 70.0), row("hello", 2, 80.0)]);
        assert_eq!(
            summary[0].rps_52,
            Measure {
                median: 75.0,
                ratio: None
            }
        );
    }
}
