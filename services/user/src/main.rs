//! `user-service`: serves `user.v1.UserService`.
//!
//! - `domain.rs`: the user and the parsed, valid forms of each request.
//! - `api.rs`: the gRPC handlers: wire type → domain type → store → wire type.
//! - `store.rs`: [`store::UserStore`], the users in SQLite or PostgreSQL, and each
//!   change's event in the outbox (relayed to NATS JetStream by `meshwork-events`).

mod api;
mod domain;
mod store;

use std::{process::ExitCode, sync::Arc};

use clap::Parser;
use meshwork::{
    config::{self, Defaults, ServerConfig},
    server::{self, GrpcServices},
    shutdown, telemetry,
};
use meshwork_database::{DatabasePoolConfig, DatabaseUrl};
use meshwork_events::EventsConfig;
use meshwork_proto::user::v1::user_service_server::UserServiceServer;
use tokio_util::sync::CancellationToken;

/// Settings of user-service (environment variables or flags).
#[derive(Parser, Debug)]
#[command(name = "user-service", version, about = "user.v1.UserService over gRPC")]
struct Config {
    #[command(flatten)]
    server: ServerConfig,

    /// `sqlite://PATH` (created if missing) or `postgres://...`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/user.db")]
    database_url: DatabaseUrl,

    #[command(flatten)]
    pool: DatabasePoolConfig,

    #[command(flatten)]
    events: EventsConfig,
}

const DEFAULTS: Defaults = Defaults {
    name: "user-service",
    listen_addr: "0.0.0.0:50052",
    metrics_addr: "0.0.0.0:9102",
};

fn main() -> ExitCode {
    let config: Config = config::parse_or_exit(DEFAULTS);
    server::runtime(&config.server).block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    let telemetry = telemetry::init(&config.server);
    let shutdown = shutdown::on_signal();

    let store = match store::UserStore::open(&config.database_url, &config.pool).await {
        Ok(store) => Arc::new(store),
        Err(error) => {
            tracing::error!(%error, database = %config.database_url, "cannot open the database");
            return ExitCode::FAILURE;
        }
    };
    let users = UserServiceServer::new(api::UserApi::new(store.clone(), config.server.max_message_bytes))
        .max_decoding_message_size(config.server.max_message_bytes)
        .max_encoding_message_size(config.server.max_message_bytes);
    // The relay stops after the calls have drained: its last pass sends what they wrote.
    let (db, outbox) = store.outbox();
    let relay_stop = CancellationToken::new();
    let relay =
        meshwork_events::relay::start(db, outbox, config.events.events_url.clone(), relay_stop.clone());
    let services = GrpcServices::new(users)
        .with_readiness(store)
        .with_task_after_calls(relay_stop, relay);
    server::run(&config.server, services, shutdown, telemetry).await
}
