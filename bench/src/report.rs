//! `report`: turns `.bench/results/` into `docs/benchmarks.md` (the machine, the command, and
//! the tables) and `docs/benchmarks.svg` (see [`crate::plot`]). Each table is followed by
//! one line saying how it was measured, so table and line can be quoted elsewhere (the
//! README) as they are.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use crate::{
    BoxError, plot,
    results::{self, SayHelloRow, ScenarioResult},
    summary,
};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// The folder the benchmark scripts wrote `sayhello.jsonl` and `mesh.jsonl` to.
    #[arg(long, default_value = ".bench/results")]
    results: PathBuf,
    /// The Markdown page written.
    #[arg(long, default_value = "docs/benchmarks.md")]
    md: PathBuf,
    /// The plot written (SVG).
    #[arg(long, default_value = "docs/benchmarks.svg")]
    svg: PathBuf,
    /// The command that produced the results, quoted on the page.
    #[arg(long, default_value = "make bench")]
    command: String,
    /// How the binaries measured were built, quoted on the page.
    #[arg(long, default_value = "cargo build --release")]
    build: String,
    /// Print this table on stdout instead of writing the page and the plot.
    #[arg(long, value_enum)]
    print: Option<Table>,
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum Table {
    Sayhello,
    Mesh,
}

pub fn run(args: ReportArgs) -> Result<(), BoxError> {
    let sayhello: Vec<SayHelloRow> = results::read_all(&args.results.join("sayhello.jsonl"))?;
    let mesh: Vec<ScenarioResult> = results::read_all(&args.results.join("mesh.jsonl"))?;
    let rounds: Vec<ScenarioResult> = results::read_all(&args.results.join("mesh-rounds.jsonl"))?;
    if sayhello.is_empty() && mesh.is_empty() {
        return Err(format!(
            "no results in {}: run bench/h2load.sh or scripts/bench.sh first",
            args.results.display()
        )
        .into());
    }
    let machine = Machine::this_one();
    if let Some(table) = args.print {
        let text = match table {
            Table::Sayhello if !sayhello.is_empty() => sayhello_table(&sayhello, &machine),
            Table::Mesh if !mesh.is_empty() => mesh_tables(&mesh, &rounds, &sayhello, &machine),
            _ => return Err(format!("no results for that table in {}", args.results.display()).into()),
        };
        print!("{text}");
        return Ok(());
    }
    let svg_name = args
        .svg
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let page = page(
        &machine,
        &args.command,
        &args.build,
        &sayhello,
        &mesh,
        &rounds,
        &svg_name,
    );
    write_creating_dir(&args.md, &page)?;
    plot::draw(&args.svg, &sayhello, &mesh)?;
    println!("wrote {} and {}", args.md.display(), args.svg.display());
    Ok(())
}

fn write_creating_dir(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, contents)
}

/// Where and when the numbers were taken.
struct Machine {
    cores: usize,
    cpu_model: String,
    kernel: String,
    rustc: String,
    date: String,
    commit: String,
}

impl Machine {
    fn this_one() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| {
                line.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let commit = match (
            output_of("git", &["rev-parse", "--short", "HEAD"]),
            output_of("git", &["status", "--porcelain"]),
        ) {
            (Some(commit), Some(changes)) if !changes.is_empty() => {
                format!("{commit} with uncommitted changes")
            }
            (Some(commit), _) => commit,
            (None, _) => "unknown".into(),
        };
        Self {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |k| k.trim().to_owned()),
            rustc: output_of("rustc", &["--version"]).unwrap_or_else(|| "rustc (unknown version)".into()),
            date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            commit,
        }
    }

    /// The one line quoted under each table.
    fn short(&self) -> String {
        format!(
            "{} cores ({}), commit {}, {}",
            self.cores,
            self.cpu_model,
            self.commit,
            &self.date[..10]
        )
    }
}

/// A command's standard output, trimmed, if it ran and succeeded.
fn output_of(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn page(
    machine: &Machine,
    command: &str,
    build: &str,
    sayhello: &[SayHelloRow],
    mesh: &[ScenarioResult],
    rounds: &[ScenarioResult],
    svg_name: &str,
) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "# Benchmarks\n\n\
         Written by `make bench` (`meshwork-bench report`); run it again rather than edit this \
         page. Numbers from a 2-core machine shared with other work move by tens of percent \
         between runs: compare rows of one run (the ratios), not runs.\n\n\
         | | |\n|---|---|\n\
         | command | `{command}` |\n\
         | build | {build} |\n\
         | cores (`nproc`) | {cores} |\n\
         | CPU | {cpu} |\n\
         | kernel | Linux {kernel} |\n\
         | compiler | {rustc} |\n\
         | date | {date} |\n\
         | commit | {commit} |\n\n",
        cores = machine.cores,
        cpu = machine.cpu_model,
        kernel = machine.kernel,
        rustc = machine.rustc,
        date = machine.date,
        commit = machine.commit,
    );
    if !sayhello.is_empty() {
        page += "## SayHello: hello-service against bare tonic (h2load)\n\n";
        page += &sayhello_table(sayhello, machine);
        page += "\n";
    }
    if !mesh.is_empty() {
        page += "## Mesh scenarios (meshwork-bench)\n\n";
        page += &mesh_tables(mesh, rounds, sayhello, machine);
        page += "\n";
    }
    let _ = writeln!(
        page,
        "## Plot\n\n![SayHello ratios to bare tonic; mesh throughput and latency]({svg_name})"
    );
    page
}

/// The SayHello table with its one-line note: each server's medians over the rounds, and
/// its ratios to bare tonic (see [`summary`]).
fn sayhello_table(rows: &[SayHelloRow], machine: &Machine) -> String {
    let servers = summary::sayhello(rows);
    let mut table = String::from(
        "| SayHello server (core 0; h2load on core 1) | req/s, 52 streams (× bare) | CPU per call, 52 streams (× bare) \
         | req/s, 1 stream (× bare) | p99, 1 stream (× bare) | idle RSS | start → SERVING |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in &servers {
        let _ = writeln!(
            table,
            "| {label} | {rps_52}{r52} | {cpu:.1} µs{rcpu} | {rps_1}{r1} | {p99} µs{rp99} | {rss:.1} MiB | {ready:.1} ms{mark} |",
            label = row.label,
            rps_52 = thousands(row.rps_52.median),
            r52 = ratio(&row.rps_52),
            cpu = row.cpu_us_52.median,
            rcpu = ratio(&row.cpu_us_52),
            rps_1 = thousands(row.rps_1.median),
            r1 = ratio(&row.rps_1),
            p99 = thousands(row.p99_1_us.median),
            rp99 = ratio(&row.p99_1_us),
            rss = row.idle_rss_kib / 1024.0,
            ready = row.ready_ms,
            mark = if row.server.starts_with("bare") { "¹" } else { "" },
        );
    }
    let first = &servers[0];
    let rounds = match first.rounds {
        1 => format!(
            "{} s measured after {} s of warm-up, per shape",
            first.duration_s, first.warmup_s
        ),
        n => format!(
            "{n} rounds, each measuring every server in turn for {} s per shape (after {} s of warm-up \
             per server, once); values are medians over the rounds, and each ratio is the median of \
             the rounds' ratios to bare tonic in the same round, lowest–highest after it",
            first.duration_s, first.warmup_s
        ),
    };
    let _ = writeln!(
        table,
        "\n_h2load, 52 streams = 4 connections × 13, and 1 stream; {rounds}; every call answered OK (the server's own \
         `grpc_server_handled_total`; streams h2load resets at the end count `Canceled`). CPU per call: the \
         server's utime + stime (`/proc/<pid>/stat`, every thread) over the 52-stream window, per call answered. \
         Span export: `OTEL_TRACES_SAMPLER=always_on` to a local OTLP/gRPC sink. Start → SERVING: median of 5 \
         starts, from spawn to a health `Check` answering `SERVING`; ¹ bare tonic has no health service, so to \
         its first SayHello answered. {machine}._",
        machine = machine.short(),
    );
    table
}

/// ` (0.81×)`, or with a spread over rounds ` (0.81×, 0.78–0.84)`; nothing without bare tonic.
fn ratio(measure: &summary::Measure) -> String {
    match measure.ratio {
        Some(r) if (r.high - r.low) >= 0.005 => format!(" ({:.2}×, {:.2}–{:.2})", r.median, r.low, r.high),
        Some(r) => format!(" ({:.2}×)", r.median),
        None => String::new(),
    }
}

/// The mesh table, then (when the run measured them) the rounds against bare tonic. Without
/// rounds, the mesh table's calls/s are also given as ratios to bare tonic's SayHello.
fn mesh_tables(
    mesh: &[ScenarioResult],
    rounds: &[ScenarioResult],
    sayhello: &[SayHelloRow],
    machine: &Machine,
) -> String {
    if rounds.is_empty() {
        return mesh_table(mesh, bare_rps(sayhello), machine);
    }
    format!(
        "{}\n{}",
        mesh_table(mesh, None, machine),
        mesh_rounds_table(rounds, bare_rps(sayhello), machine)
    )
}

/// The mesh scenarios against bare tonic's SayHello in rounds, through one load generator;
/// and, when SayHello was measured under h2load, against that bare tonic too (the issue's
/// own yardstick, minutes apart).
fn mesh_rounds_table(rows: &[ScenarioResult], h2load_bare: Option<f64>, machine: &Machine) -> String {
    let scenarios = summary::mesh_rounds(rows);
    let mut table = String::from(
        "| in rounds, against bare tonic (core 0; meshwork-bench on core 1) | backend | calls/s | × bare tonic \
         | × bare tonic under h2load | CPU s per 10k |\n|---|---|---:|---:|---:|---:|\n",
    );
    for row in &scenarios {
        let _ = writeln!(
            table,
            "| {scenario} | {backend} | {rate} | {ratio} | {of_h2load} | {cpu:.2} |",
            scenario = row.scenario,
            backend = row.backend,
            of_h2load = h2load_bare.map_or("–".into(), |bare| format!("{:.3}×", row.rate.median / bare)),
            rate = thousands(row.rate.median),
            ratio = match row.rate.ratio {
                Some(r) if r.high - r.low >= 0.0005 =>
                    format!("{:.3}×, {:.3}–{:.3}", r.median, r.low, r.high),
                Some(r) => format!("{:.3}×", r.median),
                None => "–".into(),
            },
            cpu = row.cpu_per_10k,
        );
    }
    let _ = writeln!(
        table,
        "\n_{rounds} rounds; in each, bare tonic's SayHello and every scenario above it measured in turn for {seconds} s \
         (after a second of warm-up), by meshwork-bench with the same calls in flight; calls/s and CPU are medians over \
         the rounds, × bare tonic the median of each round's ratio to bare tonic's calls/s in that round, lowest–highest \
         after it. × bare tonic under h2load: the median calls/s over bare tonic's median SayHello req/s with 52 streams \
         in the table above, the issue's own yardstick (h2load's frames cost a server less than a tonic client's, and it \
         was measured minutes before). {machine}._",
        rounds = scenarios.first().map_or(0, |row| row.rounds),
        seconds = scenarios.first().map_or(0.0, |row| row.seconds),
        machine = machine.short(),
    );
    table
}

/// Bare tonic's median req/s with 52 streams, if SayHello was measured: the mesh's yardstick.
fn bare_rps(sayhello: &[SayHelloRow]) -> Option<f64> {
    summary::sayhello(sayhello)
        .iter()
        .find(|server| server.is_bare())
        .map(|bare| bare.rps_52.median)
        .filter(|rps| *rps > 0.0)
}

/// The mesh table with its one-line note; calls per second also as a ratio to bare tonic's
/// SayHello req/s (52 streams), the yardstick, when SayHello was measured in the run.
fn mesh_table(rows: &[ScenarioResult], bare_rps: Option<f64>, machine: &Machine) -> String {
    let mut table = format!(
        "| scenario (user-service + order-service on core 0) | backend | load | throughput{} | p50 | p90 \
         | p99 | CPU s per 10k | peak RSS |\n|---|---|---|---:|---:|---:|---:|---:|---|\n",
        if bare_rps.is_some() {
            " (× bare tonic)"
        } else {
            ""
        },
    );
    for row in rows {
        let of_bare = match bare_rps {
            Some(bare) if row.unit == "calls" => format!(" ({:.3}×)", row.rate / bare),
            _ => String::new(),
        };
        let _ = writeln!(
            table,
            "| {scenario} | {backend} | {load} | {rate} {unit}/s{of_bare} | {p50:.2} ms | {p90:.2} ms | {p99:.2} ms | {cpu:.2} | {rss} |",
            scenario = row.scenario,
            backend = row.backend,
            load = row.load,
            rate = thousands(row.rate),
            unit = row.unit,
            p50 = row.p50_ms,
            p90 = row.p90_ms,
            p99 = row.p99_ms,
            cpu = row.cpu_per_10k(),
            rss = peak_rss(row),
        );
    }
    let yardstick = match bare_rps {
        Some(bare) => format!(
            " × bare tonic: calls/s over bare tonic's median SayHello req/s with 52 streams in this run ({}), \
             measured minutes before, so the machine's drift between the two is in it; CPU s per 10k is the steadier \
             comparison (bare tonic's CPU per call is in the SayHello table).",
            thousands(bare)
        ),
        None => String::new(),
    };
    let first = &rows[0];
    let _ = writeln!(
        table,
        "\n_meshwork-bench on core 1, {duration} s measured after {warmup} s of warm-up per scenario; \
         1,000 users seeded first. Latency is per call, and for WatchOrders from the start of each \
         CreateOrder to each watcher's receipt of its event. CPU s per 10k: the services' utime + stime \
         (`/proc/<pid>/stat`) over the window per 10,000 calls (WatchOrders: events delivered). Peak RSS: \
         `VmHWM`, reset at the window's start. Every call OK, every event delivered to every watcher.{yardstick} \
         {machine}._",
        duration = first.seconds,
        warmup = first.warmup_s,
        machine = machine.short(),
    );
    table
}

fn peak_rss(row: &ScenarioResult) -> String {
    let each: Vec<String> = row
        .peak_rss_mib
        .iter()
        .map(|(name, mib)| format!("{name} {mib:.1}"))
        .collect();
    format!("{} MiB", each.join(", "))
}

/// A number rounded to a whole, with thousands separated by commas: `61,234`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            cores: 2,
            cpu_model: "Test CPU".into(),
            kernel: "6.1".into(),
            rustc: "rustc 1.95.0".into(),
            date: "2026-12-03T10:00:00Z".into(),
            commit: "abc1234".into(),
        }
    }

    fn row(server: &str, rps_52: f64) -> SayHelloRow {
        SayHelloRow {
            server: server.into(),
            label: server.into(),
            round: 0,
            rps_52,
            cpu_us_52: 20.0,
            rps_1: 10_000.0,
            p99_1_us: 200.0,
            idle_rss_kib: 4096.0,
            ready_ms: 7.0,
            warmup_s: 5.0,
            duration_s: 10.0,
        }
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(61_234.4), "61,234");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }

    #[test]
    fn sayhello_rows_are_ratios_to_bare() {
        let table = sayhello_table(&[row("bare", 50_000.0), row("hello", 40_000.0)], &machine());
        assert!(
            table.contains("| hello | 40,000 (0.80×) | 20.0 µs (1.00×) | 10,000 (1.00×) | 200 µs (1.00×) | 4.0 MiB | 7.0 ms |"),
            "{table}"
        );
        assert!(table.contains("commit abc1234"), "{table}");
    }

    #[test]
    fn rounds_show_the_median_ratio_and_its_spread() {
        let round = |server: &str, round: u32, rps_52: f64| SayHelloRow {
            round,
            ..row(server, rps_52)
        };
        let rows = [
            round("bare", 1, 100_000.0),
            round("hello", 1, 70_000.0),
            round("bare", 2, 50_000.0),
            round("hello", 2, 45_000.0),
            round("bare", 3, 80_000.0),
            round("hello", 3, 64_000.0),
        ];
        let table = sayhello_table(&rows, &machine());
        assert!(table.contains("| bare | 80,000 (1.00×) |"), "{table}");
        assert!(
            table.contains("| hello | 64,000 (0.80×, 0.70–0.90) | 20.0 µs (1.00×) |"),
            "{table}"
        );
        assert!(table.contains("3 rounds"), "{table}");
    }

    #[test]
    fn mesh_calls_are_ratios_to_bare_tonic_events_are_not() {
        let scenario = |name: &str, unit: &str, rate: f64| ScenarioResult {
            scenario: name.into(),
            backend: "SQLite".into(),
            unit: unit.into(),
            rate,
            ..ScenarioResult::default()
        };
        let rows = [
            scenario("CreateOrder", "calls", 8_000.0),
            scenario("WatchOrders fan-out", "events", 20_000.0),
        ];
        let table = mesh_table(&rows, Some(80_000.0), &machine());
        assert!(table.contains("| 8,000 calls/s (0.100×) |"), "{table}");
        assert!(table.contains("| 20,000 events/s |"), "{table}");
        assert!(table.contains("(80,000)"), "{table}");
        let without = mesh_table(&rows, None, &machine());
        assert!(without.contains("| 8,000 calls/s |"), "{without}");
    }

    #[test]
    fn mesh_rounds_are_a_table_of_their_own() {
        let round = |scenario: &str, round: u32, rate: f64| ScenarioResult {
            scenario: scenario.into(),
            backend: "SQLite".into(),
            unit: "calls".into(),
            round,
            rate,
            seconds: 2.0,
            ..ScenarioResult::default()
        };
        let rounds = [
            ScenarioResult {
                backend: "–".into(),
                ..round(results::BARE_SCENARIO, 1, 50_000.0)
            },
            round("CreateOrder", 1, 5_000.0),
            ScenarioResult {
                backend: "–".into(),
                ..round(results::BARE_SCENARIO, 2, 40_000.0)
            },
            round("CreateOrder", 2, 4_800.0),
        ];
        let mesh = [round("CreateOrder", 0, 6_000.0)];
        let text = mesh_tables(&mesh, &rounds, &[row("bare", 60_000.0)], &machine());
        assert!(
            text.contains("| 6,000 calls/s |"),
            "no ratio in the mesh table when rounds exist: {text}"
        );
        assert!(
            text.contains("| CreateOrder | SQLite | 4,900 | 0.110×, 0.100–0.120 | 0.082× |"),
            "{text}"
        );
        assert!(
            text.contains("| bare tonic SayHello | – | 45,000 | 1.000× | 0.750× |"),
            "{text}"
        );
        assert!(text.contains("2 rounds"), "{text}");
    }
}
