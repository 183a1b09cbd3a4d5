//! `startup`: how long a server takes from spawn until it answers that it is ready. Spawns the
//! command `--runs` times; each time asks as fast as it can (a bounded loop) until the answer
//! comes, kills the server, and prints the median in milliseconds.
//!
//! Ready is `grpc.health.v1.Health/Check` answering `SERVING`, or, for a server without a
//! health service (bare tonic), the first SayHello answered OK.
//!
//! `ready`: the same probe against a server started by someone else (the benchmark
//! scripts), waiting until it is ready or the timeout has passed.

use std::{process::Stdio, time::Duration};

use clap::ValueEnum;
use meshwork_proto::hello::v1::{SayHelloRequest, hello_service_client::HelloServiceClient};
use tokio::{
    process::Command,
    time::{Instant, sleep},
};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::BoxError;

#[derive(clap::Args)]
pub struct StartupArgs {
    /// Where the server will listen: `http://host:port`.
    #[arg(long)]
    target: String,
    /// What counts as ready.
    #[arg(long, value_enum, default_value = "health")]
    probe: Probe,
    /// The service name asked for by the health probe (`""`: the server as a whole).
    #[arg(long, default_value = "")]
    service: String,
    /// How many times the server is started.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// A start that takes longer fails.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The server's command line.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
pub struct ReadyArgs {
    /// The server: `http://host:port`.
    #[arg(long)]
    target: String,
    /// What counts as ready.
    #[arg(long, value_enum, default_value = "health")]
    probe: Probe,
    /// The service name asked for by the health probe (`""`: the server as a whole).
    #[arg(long, default_value = "")]
    service: String,
    /// Not ready by then fails.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Probe {
    Health,
    SayHello,
}

/// Pause between two probes: short next to a start-up of milliseconds, long enough not to
/// take the CPU the starting server needs (they may share a core).
const PROBE_INTERVAL: Duration = Duration::from_millis(1);

pub async fn run(args: StartupArgs) -> Result<(), BoxError> {
    let endpoint = Endpoint::from_shared(args.target.clone())?.connect_timeout(Duration::from_millis(100));
    let mut times_ms = Vec::with_capacity(args.runs);
    for _ in 0..args.runs.max(1) {
        times_ms.push(time_one_start(&args, &endpoint).await?);
    }
    times_ms.sort_by(f64::total_cmp);
    println!("{:.1}", times_ms[times_ms.len() / 2]);
    Ok(())
}

pub async fn wait_until_ready(args: ReadyArgs) -> Result<(), BoxError> {
    let endpoint = Endpoint::from_shared(args.target.clone())?.connect_timeout(Duration::from_millis(100));
    let give_up_at = Instant::now() + args.timeout;
    while !is_ready(&endpoint, args.probe, &args.service).await {
        if Instant::now() > give_up_at {
            return Err(format!("{} was not ready within {:?}", args.target, args.timeout).into());
        }
        sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Spawns the server once, and returns the milliseconds until it was ready.
async fn time_one_start(args: &StartupArgs, endpoint: &Endpoint) -> Result<f64, BoxError> {
    let spawned = Instant::now();
    let mut server = Command::new(&args.command[0])
        .args(&args.command[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let ready = loop {
        if is_ready(endpoint, args.probe, &args.service).await {
            break Ok(spawned.elapsed().as_secs_f64() * 1000.0);
        }
        if let Some(status) = server.try_wait()? {
            break Err(format!("{} exited before it was ready: {status}", args.command[0]).into());
        }
        if spawned.elapsed() > args.timeout {
            break Err(format!("{} was not ready within {:?}", args.command[0], args.timeout).into());
        }
        sleep(PROBE_INTERVAL).await;
    };
    server.kill().await?;
    ready
}

async fn is_ready(endpoint: &Endpoint, probe: Probe, service: &str) -> bool {
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    match probe {
        Probe::Health => health_serving(channel, service).await,
        Probe::SayHello => HelloServiceClient::new(channel)
            .say_hello(SayHelloRequest { name: "ready".into() })
            .await
            .is_ok(),
    }
}

async fn health_serving(channel: Channel, service: &str) -> bool {
    let request = HealthCheckRequest {
        service: service.into(),
    };
    match HealthClient::new(channel).check(request).await {
        Ok(response) => response.into_inner().status == ServingStatus::Serving as i32,
        Err(_) => false,
    }
}
