//! `load`: closed-loop calls of one RPC from `--concurrency` tasks over `--connections`
//! HTTP/2 connections; after `--warmup`, `--duration` of calls are recorded. The result is one
//! line on stdout and, with `--results`, one [`ScenarioResult`] appended to a file. Any call
//! in the window that is not OK fails the run (exit status 1, after the result is written).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use clap::ValueEnum;
use hdrhistogram::Histogram;
use meshwork_proto::{
    hello::v1::{SayHelloRequest, hello_service_client::HelloServiceClient},
    order::v1::{CreateOrderRequest, OrderItem, order_service_client::OrderServiceClient},
    user::v1::{CreateUserRequest, GetUserRequest, ListUsersRequest, user_service_client::UserServiceClient},
};
use tokio::time::{Instant, sleep_until};
use tonic::{Code, transport::Channel};

use crate::{
    BoxError,
    procstat::{Window, WindowArgs},
    results::{self, ScenarioResult},
};

#[derive(clap::Args)]
pub struct LoadArgs {
    /// The service called: `http://host:port`, or several separated by commas (the
    /// connections are spread over them: replicas behind a load balancer).
    #[arg(long)]
    target: String,
    /// The RPC called.
    #[arg(long, value_enum)]
    rpc: Rpc,
    /// A file of user ids, one a line (written by `seed`): get-user reads them and
    /// create-order orders for them, in turn.
    #[arg(long)]
    users: Option<PathBuf>,
    /// page_size of list-users. Its calls read the pages a first walk over every user found,
    /// in turn, so that later pages (which cost more to find) are read too.
    #[arg(long, default_value_t = 50)]
    page_size: i32,
    /// Calls in flight at any time.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the calls are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// The scenario's name in the result.
    #[arg(long, default_value = "")]
    scenario: String,
    /// The measured window: how long, after what warm-up, charged to which processes.
    #[command(flatten)]
    window: WindowArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Rpc {
    SayHello,
    GetUser,
    ListUsers,
    CreateUser,
    CreateOrder,
}

/// What every task needs to make one call: the calls take turns over the seeded users and
/// the list pages by one shared counter.
#[derive(Clone)]
struct Caller {
    rpc: Rpc,
    channel: Channel,
    users: Arc<[String]>,
    page_tokens: Arc<[String]>,
    page_size: i32,
    counter: Arc<AtomicU64>,
}

impl Caller {
    async fn call(&self) -> Result<(), Code> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let user_id = || self.users[n as usize % self.users.len()].clone();
        let result = match self.rpc {
            Rpc::SayHello => HelloServiceClient::new(self.channel.clone())
                .say_hello(SayHelloRequest { name: "bench".into() })
                .await
                .map(drop),
            Rpc::GetUser => UserServiceClient::new(self.channel.clone())
                .get_user(GetUserRequest { id: user_id() })
                .await
                .map(drop),
            Rpc::ListUsers => UserServiceClient::new(self.channel.clone())
                .list_users(ListUsersRequest {
                    page_size: self.page_size,
                    page_token: self.page_tokens[n as usize % self.page_tokens.len()].clone(),
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
                    user_id: user_id(),
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

/// What one task recorded in the window.
struct Tally {
    latencies: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            latencies: new_histogram(),
            errors: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: Tally) -> Result<(), BoxError> {
        self.latencies.add(other.latencies)?;
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
        Ok(())
    }
}

pub async fn run(args: LoadArgs) -> Result<(), BoxError> {
    let channels = connect_all(&args.target, args.connections).await?;
    let users: Arc<[String]> = match args.rpc {
        Rpc::GetUser | Rpc::CreateOrder => read_users(args.users.as_deref())?.into(),
        _ => Arc::new([]),
    };
    let page_tokens: Arc<[String]> = match args.rpc {
        Rpc::ListUsers => walk_pages(&channels[0], args.page_size).await?.into(),
        _ => Arc::new([]),
    };
    let caller = Caller {
        rpc: args.rpc,
        channel: channels[0].clone(),
        users,
        page_tokens,
        page_size: args.page_size,
        counter: Arc::new(AtomicU64::new(0)),
    };

    let record_from = Instant::now() + args.window.warmup;
    let stop_at = record_from + args.window.duration;
    let tasks: Vec<_> = (0..args.concurrency.max(1))
        .map(|i| {
            let caller = Caller {
                channel: channels[i % channels.len()].clone(),
                ..caller.clone()
            };
            tokio::spawn(call_in_a_loop(caller, record_from, stop_at))
        })
        .collect();

    sleep_until(record_from).await;
    let window = Window::start(&args.window.pids)?;
    sleep_until(stop_at).await;
    let (cpu_seconds, peak_rss_mib) = window.end()?;

    let mut tally = Tally::new();
    for task in tasks {
        tally.merge(task.await?)?;
    }
    let result = ScenarioResult {
        scenario: args.scenario,
        backend: args.window.backend,
        load: format!("{} calls in flight", args.concurrency.max(1)),
        unit: "calls".into(),
        count: tally.latencies.len(),
        seconds: args.window.duration.as_secs_f64(),
        rate: tally.latencies.len() as f64 / args.window.duration.as_secs_f64(),
        p50_ms: quantile_ms(&tally.latencies, 0.50),
        p90_ms: quantile_ms(&tally.latencies, 0.90),
        p99_ms: quantile_ms(&tally.latencies, 0.99),
        cpu_seconds,
        peak_rss_mib,
        errors: tally.errors,
        warmup_s: args.window.warmup.as_secs_f64(),
        round: args.window.round,
    };
    print_and_record(&result, args.window.results.as_deref())
}

/// Prints the result line, appends the result to `results`, and fails if anything failed.
pub fn print_and_record(result: &ScenarioResult, results: Option<&Path>) -> Result<(), BoxError> {
    println!(
        "{label:<40} {unit}={count} rate={rate:.0}/s p50={p50:.2}ms p90={p90:.2}ms p99={p99:.2}ms \
         cpu_s_per_10k={cpu:.3} peak_rss_mib={rss:?} errors={errors:?}",
        label = format!("{} ({})", result.scenario, result.backend),
        unit = result.unit,
        count = result.count,
        rate = result.rate,
        p50 = result.p50_ms,
        p90 = result.p90_ms,
        p99 = result.p99_ms,
        cpu = result.cpu_per_10k(),
        rss = result.peak_rss_mib,
        errors = result.errors,
    );
    if let Some(path) = results {
        results::append(path, result)?;
    }
    let failed: u64 = result.errors.values().sum();
    if failed > 0 {
        return Err(format!(
            "{}: {failed} {} failed in the measured window",
            result.scenario, result.unit
        )
        .into());
    }
    if result.count == 0 {
        return Err(format!("{}: nothing succeeded in the measured window", result.scenario).into());
    }
    Ok(())
}

/// One task's closed loop: call, wait for the answer, call again, until `stop_at`. Calls
/// that start before `record_from` are the warm-up and are not recorded.
async fn call_in_a_loop(caller: Caller, record_from: Instant, stop_at: Instant) -> Tally {
    let mut tally = Tally::new();
    loop {
        let begin = Instant::now();
        if begin >= stop_at {
            return tally;
        }
        let result = caller.call().await;
        if begin < record_from {
            continue;
        }
        match result {
            Ok(()) => record(&mut tally.latencies, begin.elapsed()),
            Err(code) => *tally.errors.entry(format!("{code:?}")).or_default() += 1,
        }
    }
}

/// `count` channels, one HTTP/2 connection each, spread over the comma-separated targets.
pub async fn connect_all(targets: &str, count: usize) -> Result<Vec<Channel>, BoxError> {
    let targets: Vec<&str> = targets.split(',').collect();
    let mut channels = Vec::new();
    for i in 0..count.max(targets.len()) {
        let target = targets[i % targets.len()].to_owned();
        channels.push(Channel::from_shared(target)?.connect().await?);
    }
    Ok(channels)
}

/// The user ids of a file written by `seed`.
pub fn read_users(path: Option<&Path>) -> Result<Vec<String>, BoxError> {
    let path = path.ok_or("this RPC needs --users (a file written by `meshwork-bench seed`)")?;
    let users: Vec<String> = std::fs::read_to_string(path)?
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    if users.is_empty() {
        return Err(format!("{} holds no user id", path.display()).into());
    }
    Ok(users)
}

/// The page tokens of every page of ListUsers, the first page's (empty) included.
async fn walk_pages(channel: &Channel, page_size: i32) -> Result<Vec<String>, BoxError> {
    let mut client = UserServiceClient::new(channel.clone());
    let mut tokens = vec![String::new()];
    loop {
        let page_token = tokens.last().cloned().unwrap_or_default();
        let page = client
            .list_users(ListUsersRequest {
                page_size,
                page_token,
            })
            .await?
            .into_inner();
        if page.next_page_token.is_empty() {
            return Ok(tokens);
        }
        tokens.push(page.next_page_token);
    }
}

/// Latencies in microseconds, 1 µs to 60 s, 3 significant figures.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("the bounds are valid: 1 <= low, high >= 2 * low")
}

pub fn record(latencies: &mut Histogram<u64>, latency: Duration) {
    latencies.saturating_record(latency.as_micros().max(1) as u64);
}

pub fn quantile_ms(latencies: &Histogram<u64>, quantile: f64) -> f64 {
    latencies.value_at_quantile(quantile) as f64 / 1000.0
}
