//! `meshwork-bench`: the load generator behind `make bench`.
//!
//! - `load`: closed-loop calls of one RPC from `--concurrency` tasks over `--connections`
//!   HTTP/2 connections for `--duration` (after `--warmup`), then one result line with
//!   throughput, latency percentiles and errors by code.
//! - `sink`: an OTLP/gRPC trace receiver that accepts and counts spans, so tracing can be
//!   measured with a real exporter at work.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use meshwork_proto::{
    hello::v1::{SayHelloRequest, hello_service_client::HelloServiceClient},
    order::v1::{CreateOrderRequest, OrderItem, order_service_client::OrderServiceClient},
    user::v1::{CreateUserRequest, GetUserRequest, user_service_client::UserServiceClient},
};
use tonic::{Code, transport::Channel};

#[derive(Parser)]
#[command(name = "meshwork-bench", about = "Load generator for the Meshwork services")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Call one RPC in a closed loop and report throughput and latency.
    Load(LoadArgs),
    /// Receive OTLP/gRPC spans and count them, until killed.
    Sink {
        #[arg(long, default_value = "127.0.0.1:4317")]
        listen: SocketAddr,
    },
}

#[derive(clap::Args)]
struct LoadArgs {
    /// The service called: `http://host:port`, or several separated by commas (the
    /// connections are spread over them: replicas behind a load balancer).
    #[arg(long)]
    target: String,
    /// The RPC called.
    #[arg(long, value_enum)]
    rpc: Rpc,
    /// Where users are created for get-user and create-order (defaults to --target).
    #[arg(long)]
    user_target: Option<String>,
    /// Calls in flight at any time.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the calls are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// How long results are recorded.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long the load runs before recording starts.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// A label for the result line.
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Rpc {
    SayHello,
    GetUser,
    CreateUser,
    CreateOrder,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Command::Load(args) => load(args).await,
        Command::Sink { listen } => sink(listen).await,
    }
}

/// What one task needs to make one call.
#[derive(Clone)]
struct Caller {
    rpc: Rpc,
    channel: Channel,
    user_id: Arc<str>,
    counter: Arc<AtomicU64>,
}

impl Caller {
    async fn call(&self) -> Result<(), Code> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let result = match self.rpc {
            Rpc::SayHello => HelloServiceClient::new(self.channel.clone())
                .say_hello(SayHelloRequest { name: "bench".into() })
                .await
                .map(drop),
            Rpc::GetUser => UserServiceClient::new(self.channel.clone())
                .get_user(GetUserRequest {
                    id: self.user_id.to_string(),
                })
                .await
                .map(drop),
            Rpc::CreateUser => UserServiceClient::new(self.channel.clone())
                .create_user(CreateUserRequest {
                    name: "Bench".into(),
                    email: format!("bench-{}-{n}@example.com", std::process::id()),
                })
                .await
                .map(drop),
            Rpc::CreateOrder => OrderServiceClient::new(self.channel.clone())
                .create_order(CreateOrderRequest {
                    user_id: self.user_id.to_string(),
                    items: vec![OrderItem {
                        sku: "bench".into(),
                        quantity: 1,
                        unit_price_cents: 100,
                    }],
                    request_id: String::new(),
                })
                .await
                .map(drop),
        };
        result.map_err(|status| status.code())
    }
}

async fn load(args: LoadArgs) -> Result<(), Box<dyn std::error::Error>> {
    let targets: Vec<&str> = args.target.split(',').collect();
    let mut channels = Vec::new();
    for i in 0..args.connections.max(targets.len()) {
        let target = targets[i % targets.len()].to_owned();
        channels.push(Channel::from_shared(target)?.connect().await?);
    }
    let user_id: Arc<str> = match args.rpc {
        Rpc::GetUser | Rpc::CreateOrder => {
            let target = args.user_target.clone().unwrap_or_else(|| targets[0].to_owned());
            let mut users = UserServiceClient::connect(target).await?;
            let email = format!(
                "bench-owner-{}-{}@example.com",
                std::process::id(),
                args.label.len()
            );
            let user = users
                .create_user(CreateUserRequest {
                    name: "Owner".into(),
                    email,
                })
                .await?;
            user.into_inner().user.expect("a created user").id.into()
        }
        _ => "".into(),
    };
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let record_from = started + args.warmup;
    let stop_at = record_from + args.duration;

    let tasks: Vec<_> = (0..args.concurrency.max(1))
        .map(|i| {
            let caller = Caller {
                rpc: args.rpc,
                channel: channels[i % channels.len()].clone(),
                user_id: user_id.clone(),
                counter: counter.clone(),
            };
            tokio::spawn(async move {
                let mut latencies = new_histogram();
                let mut errors: BTreeMap<String, u64> = BTreeMap::new();
                loop {
                    let begin = Instant::now();
                    if begin >= stop_at {
                        break;
                    }
                    let result = caller.call().await;
                    if begin < record_from {
                        continue;
                    }
                    match result {
                        Ok(()) => latencies.saturating_record(begin.elapsed().as_micros().max(1) as u64),
                        Err(code) => *errors.entry(format!("{code:?}")).or_default() += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();

    let mut latencies = new_histogram();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        let (task_latencies, task_errors) = task.await?;
        latencies.add(task_latencies)?;
        for (code, count) in task_errors {
            *errors.entry(code).or_default() += count;
        }
    }
    let seconds = args.duration.as_secs_f64();
    let ms = |quantile: f64| latencies.value_at_quantile(quantile) as f64 / 1000.0;
    println!(
        "{label:<34} rpc={rpc:?} concurrency={c} ok={ok} rps={rps:.0} p50_ms={p50:.2} p99_ms={p99:.2} max_ms={max:.2} errors={errors:?}",
        label = args.label,
        rpc = args.rpc,
        c = args.concurrency,
        ok = latencies.len(),
        rps = latencies.len() as f64 / seconds,
        p50 = ms(0.5),
        p99 = ms(0.99),
        max = latencies.max() as f64 / 1000.0,
    );
    Ok(())
}

/// Latencies in microseconds, 1 µs to 60 s, 3 significant figures.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

async fn sink(listen: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    };

    #[derive(Default)]
    struct Counter(AtomicU64);

    #[tonic::async_trait]
    impl TraceService for Counter {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let spans: usize = request
                .into_inner()
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            let total = self.0.fetch_add(spans as u64, Ordering::Relaxed) + spans as u64;
            eprintln!("otlp sink: {total} spans received");
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Counter::default()))
        .serve(listen)
        .await?;
    Ok(())
}
