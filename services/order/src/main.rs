//! `order-service`: serves `order.v1.OrderService`.
//!
//! - `domain.rs`: the order and the parsed, valid forms of each request.
//! - `api.rs`: the gRPC handlers.
//! - `users.rs`: asking the User service whether a user exists.
//! - `order_events.rs`: the feed behind `WatchOrders`, read from the outbox.
//! - `saga.rs`: cancelling a deleted user's pending orders (a consumer of user events).
//! - `store/`: [`store::OrderStore`], the orders and their events' outbox in SQLite or
//!   PostgreSQL; `store/backend.rs` is what differs between the two.

mod api;
mod domain;
mod order_events;
mod saga;
mod store;
mod users;

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;
use meshwork::{
    config::{self, Defaults, ServerConfig},
    server::{self, GrpcServices},
    shutdown, telemetry, tls,
};
use meshwork_clients::{ChannelOptions, ClientTls, Target};
use meshwork_database::{DatabasePoolConfig, DatabaseUrl};
use meshwork_events::EventsConfig;
use meshwork_proto::order::v1::order_service_server::OrderServiceServer;
use tokio_util::sync::CancellationToken;

/// Settings of order-service (environment variables or flags).
#[derive(Parser, Debug)]
#[command(name = "order-service", version, about = "order.v1.OrderService over gRPC")]
struct Config {
    #[command(flatten)]
    server: ServerConfig,

    /// `sqlite://PATH` (created if missing) or `postgres://...`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/order.db")]
    database_url: DatabaseUrl,

    #[command(flatten)]
    pool: DatabasePoolConfig,

    #[command(flatten)]
    events: EventsConfig,

    /// The User service: `http://host:port`, several separated by commas, or `dns:///name:port`.
    #[arg(long, env = "USER_SERVICE_URL", default_value = "http://127.0.0.1:50052")]
    user_service_url: Target,

    /// Cap on each call to the User service (the caller's own deadline may be shorter).
    #[arg(long, env = "USER_SERVICE_TIMEOUT", default_value = "2s", value_parser = config::parse_positive_duration)]
    user_service_timeout: Duration,

    /// Attempts per User call, the first included (retries only on UNAVAILABLE).
    #[arg(long, env = "USER_SERVICE_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    user_service_max_attempts: u32,

    /// Retries allowed on top of User calls, as a share of recent calls.
    #[arg(long, env = "USER_SERVICE_RETRY_BUDGET", default_value_t = 0.2, value_parser = parse_share)]
    user_service_retry_budget: f32,

    /// Consecutive failures that eject a User endpoint from the balancer.
    #[arg(long, env = "USER_SERVICE_EJECT_AFTER", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    user_service_eject_after: u32,

    /// How long a User endpoint's first ejection lasts (doubling while it keeps failing).
    #[arg(long, env = "USER_SERVICE_EJECT_FOR", default_value = "5s", value_parser = config::parse_positive_duration)]
    user_service_eject_for: Duration,

    /// PEM CA bundle User's certificate must be signed by: calls to User go over TLS
    /// (required with an `https://` USER_SERVICE_URL; with `dns:///`, it switches TLS on).
    /// With TLS_CERT/TLS_KEY set, Order presents them as its client certificate.
    #[arg(long, env = "USER_SERVICE_CA", value_parser = config::certificates_file)]
    user_service_ca: Option<PathBuf>,

    /// The name User's certificate must carry, instead of the URL's host (for `dns:///`, the
    /// name resolved, whose addresses are pod IPs, is the default).
    #[arg(long, env = "USER_SERVICE_TLS_NAME", requires = "user_service_ca")]
    user_service_tls_name: Option<String>,

    /// How often a `dns:///` USER_SERVICE_URL is resolved again.
    #[arg(long, env = "USER_SERVICE_DNS_REFRESH", default_value = "5s", value_parser = config::parse_positive_duration)]
    user_service_dns_refresh: Duration,

    /// `WatchOrders` streams open at once in this process; one more is RESOURCE_EXHAUSTED.
    #[arg(long, env = "MAX_WATCH_STREAMS", default_value_t = order_events::DEFAULT_MAX_WATCHERS, value_parser = parse_max_watch_streams)]
    max_watch_streams: usize,
}

impl Config {
    /// How the channel to the User service behaves; an error names the settings that do
    /// not go together. The client certificate is watched until `stop`.
    fn user_channel(&self, stop: &CancellationToken) -> Result<ChannelOptions, String> {
        Ok(ChannelOptions {
            max_attempts: self.user_service_max_attempts,
            retry_budget: self.user_service_retry_budget,
            eject_after: self.user_service_eject_after,
            eject_for: self.user_service_eject_for,
            dns_refresh: self.user_service_dns_refresh,
            timeout: Some(self.user_service_timeout),
            tls: self.user_tls(stop)?,
            ..ChannelOptions::default()
        })
    }

    /// TLS to User: see [`tls::upstream_tls`].
    fn user_tls(&self, stop: &CancellationToken) -> Result<Option<ClientTls>, String> {
        let user_service = tls::Upstream {
            setting: "USER_SERVICE",
            target: &self.user_service_url,
            ca: self.user_service_ca.as_deref(),
            tls_name: self.user_service_tls_name.as_deref(),
        };
        tls::upstream_tls(&user_service, &self.server.security, stop)
    }
}

fn parse_max_watch_streams(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        // tokio's semaphore holds at most `usize::MAX >> 3` permits.
        Ok(max) if (1..=1 << 40).contains(&max) => Ok(max),
        _ => Err("expected a number of streams, at least 1".into()),
    }
}

fn parse_share(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(share) if (0.0..=10.0).contains(&share) => Ok(share),
        _ => Err("expected a share like 0.2 (20%)".into()),
    }
}

const DEFAULTS: Defaults = Defaults {
    name: "order-service",
    listen_addr: "0.0.0.0:50053",
    metrics_addr: "0.0.0.0:9103",
};

fn main() -> ExitCode {
    let config: Config = config::parse_or_exit(DEFAULTS);
    server::runtime(&config.server).block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    let telemetry = telemetry::init(&config.server);
    let shutdown = shutdown::on_signal();
    let user_channel = match config.user_channel(&shutdown) {
        Ok(options) => options,
        Err(error) => {
            // A setting error: one line, exit status 2, before the database is opened.
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };

    let store = match store::OrderStore::open(&config.database_url, &config.pool).await {
        Ok(store) => Arc::new(store),
        Err(error) => {
            tracing::error!(%error, database = %config.database_url, "cannot open the database");
            return ExitCode::FAILURE;
        }
    };
    let (db, outbox) = store.outbox();
    // Other replicas' commits wake this one's readers (PostgreSQL); they poll besides.
    outbox.wake_on_notify(&db, shutdown.child_token());
    let events = order_events::OrderEvents::new(config.max_watch_streams, db.clone(), outbox.clone());
    if let Err(error) = events.clone().follow(shutdown.child_token()).await {
        tracing::error!(%error, "cannot read the order events");
        return ExitCode::FAILURE;
    }
    let events_url = config.events.events_url.clone();
    if let Some(url) = events_url.clone() {
        saga::start(url, store.clone(), shutdown.child_token());
    }
    // The relay stops after the calls have drained: its last pass sends what they wrote.
    let relay_stop = CancellationToken::new();
    let relay = meshwork_events::relay::start(db, outbox, events_url, relay_stop.clone());

    let channel = meshwork_clients::connect(&config.user_service_url, &user_channel);
    let users = users::GrpcUserDirectory::new(channel);
    let api = api::OrderApi::new(
        store.clone(),
        Arc::new(users),
        events,
        shutdown.clone(),
        config.server.max_message_bytes,
    );
    let orders = OrderServiceServer::new(api)
        .max_decoding_message_size(config.server.max_message_bytes)
        .max_encoding_message_size(config.server.max_message_bytes);
    let services = GrpcServices::new(orders)
        .with_readiness(store)
        .with_task_after_calls(relay_stop, relay);
    server::run(&config.server, services, shutdown, telemetry).await
}
