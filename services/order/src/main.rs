//! `order-service`: serves `order.v1.OrderService`.
//!
//! - `domain.rs`: the order and the parsed, valid forms of each request.
//! - `api.rs`: the gRPC handlers.
//! - `users.rs`: asking the User service whether a user exists.
//! - `order_events.rs`: the in-process feed behind `WatchOrders`.
//! - `store/`: the [`store::OrderStore`] trait and its SQLite implementation.

mod api;
mod domain;
mod order_events;
mod store;
mod users;

use std::{process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;
use meshwork::{
    config::{self, DatabasePoolConfig, DatabaseUrl, Defaults, ServerConfig},
    proto::order::v1::order_service_server::OrderServiceServer,
    server::{self, GrpcServices},
    shutdown, telemetry,
};
use meshwork_clients::{ChannelOptions, Target};

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

    /// The User service: `http://host:port`, several separated by commas, or `dns:///name:port`.
    #[arg(long, env = "USER_SERVICE_URL", default_value = "http://127.0.0.1:50052")]
    user_service_url: Target,

    /// Cap on each call to the User service (the caller's own deadline may be shorter).
    #[arg(long, env = "USER_SERVICE_TIMEOUT", default_value = "2s", value_parser = config::parse_duration)]
    user_service_timeout: Duration,
}

const DEFAULTS: Defaults = Defaults {
    name: "order-service",
    listen_addr: "0.0.0.0:50053",
    metrics_addr: "0.0.0.0:9103",
};

#[tokio::main]
async fn main() -> ExitCode {
    let config: Config = config::parse_or_exit(DEFAULTS);
    let telemetry = telemetry::init(&config.server);
    let shutdown = shutdown::on_signal();

    let events = order_events::OrderEvents::new();
    let store = match store::open(&config.database_url, &config.pool, events.clone()).await {
        Ok(store) => store,
        Err(error) => {
            tracing::error!(%error, database = %config.database_url, "cannot open the database");
            return ExitCode::FAILURE;
        }
    };
    let channel = meshwork_clients::connect(&config.user_service_url, &ChannelOptions::default());
    let users = users::GrpcUserDirectory::new(channel, config.user_service_timeout);
    let api = api::OrderApi::new(store.clone(), Arc::new(users), events, shutdown.clone());
    let orders = OrderServiceServer::new(api)
        .max_decoding_message_size(config.server.max_message_bytes)
        .max_encoding_message_size(config.server.max_message_bytes);
    let services = GrpcServices::new(orders).with_readiness(store);
    server::run(&config.server, services, shutdown, telemetry).await
}
