//! `meshwork-bench`: the tools behind `make bench`, one subcommand each.
//!
//! - [`seed`]: creates users and writes their ids, for the scenarios to call with.
//! - [`load`]: closed-loop calls of one RPC; throughput, latency percentiles, the services'
//!   CPU and peak memory over the measured window ([`procstat`]); fails on any non-OK call.
//! - [`watch`]: WatchOrders fan-out: many watchers of one user while orders are created;
//!   events delivered per second and create-to-receive latency.
//! - [`startup`]: milliseconds from spawning a server until its health check says `SERVING`;
//!   `ready` waits for a server started by a script.
//! - [`sink`]: an OTLP/gRPC trace receiver that answers OK and counts, for span export runs.
//! - [`report`]: `.bench/results/` ([`results`], rounds summarised by [`summary`]) into
//!   `docs/benchmarks.md` and, with [`plot`], `docs/benchmarks.svg`.

mod load;
mod plot;
mod procstat;
mod report;
mod results;
mod seed;
mod sink;
mod startup;
mod summary;
mod watch;

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

/// Errors of the subcommands: each is reported once, by `main`, and ends the run.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(
    name = "meshwork-bench",
    about = "The benchmark tools of the Meshwork services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create users and write their ids to a file.
    Seed(seed::SeedArgs),
    /// Call one RPC in a closed loop and report throughput, latency and cost.
    Load(load::LoadArgs),
    /// WatchOrders fan-out: delivered events per second and delivery latency.
    Watch(watch::WatchArgs),
    /// Time a server from spawn until it is ready, and print the median in milliseconds.
    Startup(startup::StartupArgs),
    /// Wait until a running server is ready (health SERVING), at most --timeout.
    Ready(startup::ReadyArgs),
    /// Receive OTLP/gRPC spans and count them, until killed.
    Sink {
        #[arg(long, default_value = "127.0.0.1:4317")]
        listen: SocketAddr,
    },
    /// Write docs/benchmarks.md and docs/benchmarks.svg from the results of a run.
    Report(report::ReportArgs),
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    match Cli::parse().command {
        Command::Seed(args) => seed::run(args).await,
        Command::Load(args) => load::run(args).await,
        Command::Watch(args) => watch::run(args).await,
        Command::Startup(args) => startup::run(args).await,
        Command::Ready(args) => startup::wait_until_ready(args).await,
        Command::Sink { listen } => sink::run(listen).await,
        Command::Report(args) => report::run(args),
    }
}
