//! `watch`: WatchOrders fan-out. `--watchers` streams watch one user while orders for that
//! user are created at a fixed `--rate` (open loop, so the delivery latency is measured at a
//! known load rather than at whatever rate the watchers allow). Each order's sku carries the
//! moment its CreateOrder started, so every watcher measures create-to-receive itself, on
//! this process's monotonic clock.
//!
//! The run fails if a create is not OK, a stream ends or fails before it is let go, or a
//! watcher misses an order created in the window.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use hdrhistogram::Histogram;
use meshwork_proto::order::v1::{
    CreateOrderRequest, OrderEventType, OrderItem, WatchOrdersRequest, WatchOrdersResponse,
    order_service_client::OrderServiceClient,
};
use tokio::{
    sync::{Semaphore, watch},
    task::JoinSet,
    time::{Instant, sleep, sleep_until},
};
use tonic::{Streaming, transport::Channel};

use crate::{
    BoxError,
    load::{connect_all, new_histogram, print_and_record, quantile_ms, read_users, record},
    procstat::{Window, WindowArgs},
    results::ScenarioResult,
};

#[derive(clap::Args)]
pub struct WatchArgs {
    /// The Order service: `http://host:port`.
    #[arg(long)]
    target: String,
    /// A file of user ids (written by `seed`): the first one is watched and ordered for.
    #[arg(long)]
    users: PathBuf,
    /// WatchOrders streams open on that user.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Orders created per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// HTTP/2 connections the streams are spread over (the creates have one of their own).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// The scenario's name in the result.
    #[arg(long, default_value = "WatchOrders fan-out")]
    scenario: String,
    /// The measured window: how long, after what warm-up, charged to which processes.
    #[command(flatten)]
    window: WindowArgs,
}

/// Creates that may be in flight at once: past this the creator waits, rather than pile up
/// calls without bound when the service falls behind the rate.
const MAX_CREATES_IN_FLIGHT: usize = 64;

/// How long the watchers get, after the last create, to receive every order of the window.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The measured window, in microseconds since the run's `base` instant: orders whose create
/// started inside it are counted.
#[derive(Clone, Copy)]
struct Clock {
    base: Instant,
    record_from_us: u64,
    stop_at_us: u64,
}

impl Clock {
    fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }

    fn in_window(&self, us: u64) -> bool {
        (self.record_from_us..self.stop_at_us).contains(&us)
    }

    fn instant(&self, us: u64) -> Instant {
        self.base + Duration::from_micros(us)
    }
}

/// The sku an order is created with: when its create started.
fn sku_for(started_us: u64) -> String {
    format!("bench-{started_us}")
}

/// When the create of an event's order started, read back from its sku.
fn create_started_us(event: &WatchOrdersResponse) -> Option<u64> {
    event
        .order
        .as_ref()?
        .items
        .first()?
        .sku
        .strip_prefix("bench-")?
        .parse()
        .ok()
}

pub async fn run(args: WatchArgs) -> Result<(), BoxError> {
    let user_id: Arc<str> = read_users(Some(&args.users))?.swap_remove(0).into();
    let watch_channels = connect_all(&args.target, args.connections).await?;
    let create_channel = connect_all(&args.target, 1).await?.remove(0);

    let mut streams = Vec::with_capacity(args.watchers);
    for i in 0..args.watchers {
        let mut client = OrderServiceClient::new(watch_channels[i % watch_channels.len()].clone());
        let request = WatchOrdersRequest {
            user_id: user_id.to_string(),
            ..Default::default()
        };
        streams.push(client.watch_orders(request).await?.into_inner());
    }

    let base = Instant::now();
    let clock = Clock {
        base,
        record_from_us: args.window.warmup.as_micros() as u64,
        stop_at_us: (args.window.warmup + args.window.duration).as_micros() as u64,
    };
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop_watching, stopped) = watch::channel(());
    let watchers: Vec<_> = streams
        .into_iter()
        .map(|stream| tokio::spawn(receive(stream, clock, delivered.clone(), stopped.clone())))
        .collect();

    let creator = tokio::spawn(create_orders(create_channel, user_id, clock, args.rate));
    sleep_until(clock.instant(clock.record_from_us)).await;
    let window = Window::start(&args.window.pids)?;
    let (created, mut errors) = creator.await?;

    let expected = created * args.watchers as u64;
    wait_for_deliveries(&delivered, expected).await;
    let (cpu_seconds, peak_rss_mib) = window.end()?;
    stop_watching.send(())?;

    let mut latencies = new_histogram();
    for watcher in watchers {
        match watcher.await? {
            Ok(watcher_latencies) => latencies.add(watcher_latencies)?,
            Err(code) => *errors.entry(format!("stream {code}")).or_default() += 1,
        }
    }
    let missed = expected.saturating_sub(latencies.len());
    if missed > 0 {
        errors.insert("missed events".into(), missed);
    }
    let result = ScenarioResult {
        scenario: args.scenario,
        backend: args.window.backend,
        load: format!("{} watchers, {} orders/s", args.watchers, args.rate),
        unit: "events".into(),
        count: latencies.len(),
        seconds: args.window.duration.as_secs_f64(),
        rate: latencies.len() as f64 / args.window.duration.as_secs_f64(),
        p50_ms: quantile_ms(&latencies, 0.50),
        p90_ms: quantile_ms(&latencies, 0.90),
        p99_ms: quantile_ms(&latencies, 0.99),
        cpu_seconds,
        peak_rss_mib,
        errors,
        warmup_s: args.window.warmup.as_secs_f64(),
        round: args.window.round,
    };
    println!("{created} orders created in the window, {expected} events expected");
    print_and_record(&result, args.window.results.as_deref())
}

/// Creates orders for `user_id` at `rate` per second until the window ends; returns how many
/// that started in the window were created, and the failures by code.
async fn create_orders(
    channel: Channel,
    user_id: Arc<str>,
    clock: Clock,
    rate: f64,
) -> (u64, BTreeMap<String, u64>) {
    let permits = Arc::new(Semaphore::new(MAX_CREATES_IN_FLIGHT));
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut creates = JoinSet::new();
    loop {
        ticks.tick().await;
        let started_us = clock.now_us();
        if started_us >= clock.stop_at_us {
            break;
        }
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut client = OrderServiceClient::new(channel.clone());
        let request = CreateOrderRequest {
            user_id: user_id.to_string(),
            items: vec![OrderItem {
                sku: sku_for(started_us),
                quantity: 1,
                unit_price_cents: 100,
            }],
            request_id: String::new(),
        };
        creates.spawn(async move {
            let _permit = permit;
            (
                clock.in_window(started_us),
                client.create_order(request).await.map(drop),
            )
        });
    }
    let mut created = 0;
    let mut errors = BTreeMap::new();
    while let Some(done) = creates.join_next().await {
        match done {
            Ok((true, Ok(()))) => created += 1,
            Ok((true, Err(status))) => *errors.entry(format!("{:?}", status.code())).or_default() += 1,
            Ok((false, _)) => {}
            Err(panicked) => *errors.entry(format!("create task: {panicked}")).or_default() += 1,
        }
    }
    (created, errors)
}

/// One watcher: records the create-to-receive latency of every order created in the window,
/// until told to stop. A stream that ends or fails before that is an error (its code).
async fn receive(
    mut stream: Streaming<WatchOrdersResponse>,
    clock: Clock,
    delivered: Arc<AtomicU64>,
    mut stop: watch::Receiver<()>,
) -> Result<Histogram<u64>, String> {
    let mut latencies = new_histogram();
    loop {
        let event = tokio::select! {
            _ = stop.changed() => return Ok(latencies),
            message = stream.message() => match message {
                Ok(Some(event)) => event,
                Ok(None) => return Err("ended by the server".into()),
                Err(status) => return Err(format!("{:?}", status.code())),
            },
        };
        let received_us = clock.now_us();
        let Some(started_us) = create_started_us(&event) else {
            continue;
        };
        if event.event_type == OrderEventType::Created as i32 && clock.in_window(started_us) {
            record(
                &mut latencies,
                Duration::from_micros(received_us.saturating_sub(started_us)),
            );
            delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Waits, at most [`DRAIN_TIMEOUT`], until `expected` events of the window were delivered.
async fn wait_for_deliveries(delivered: &AtomicU64, expected: u64) {
    let give_up_at = Instant::now() + DRAIN_TIMEOUT;
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < give_up_at {
        sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use meshwork_proto::order::v1::Order;

    use super::*;

    #[test]
    fn the_create_start_travels_in_the_sku() {
        let event = WatchOrdersResponse {
            order: Some(Order {
                items: vec![OrderItem {
                    sku: sku_for(1_234_567),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(create_started_us(&event), Some(1_234_567));
        assert_eq!(create_started_us(&WatchOrdersResponse::default()), None);
    }
}
