//! `hello-service`: serves `hello.v1.HelloService` (see `greeter.rs`); everything else —
//! settings, health, reflection, the layer stack, the drain — is the shared runtime's.

mod greeter;

use std::process::ExitCode;

use clap::Parser;
use meshwork::{
    config::{self, Defaults, ServerConfig},
    server::{self, GrpcServices},
    shutdown, telemetry,
};
use meshwork_proto::hello::v1::hello_service_server::HelloServiceServer;

/// Settings of hello-service (environment variables or flags).
#[derive(Parser, Debug)]
#[command(name = "hello-service", version, about = "hello.v1.HelloService over gRPC")]
struct Config {
    #[command(flatten)]
    server: ServerConfig,
}

const DEFAULTS: Defaults = Defaults {
    name: "hello-service",
    listen_addr: "0.0.0.0:50051",
    metrics_addr: "0.0.0.0:9101",
};

fn main() -> ExitCode {
    let config: Config = config::parse_or_exit(DEFAULTS);
    server::runtime(&config.server).block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    let telemetry = telemetry::init(&config.server);
    let shutdown = shutdown::on_signal();

    let hello = HelloServiceServer::new(greeter::Greeter)
        .max_decoding_message_size(config.server.max_message_bytes)
        .max_encoding_message_size(config.server.max_message_bytes);
    server::run(&config.server, GrpcServices::new(hello), shutdown, telemetry).await
}
