//! The baseline of `make bench`: `hello.v1.HelloService` on bare tonic, with no layer, no
//! health, no reflection, no telemetry. What the production stack costs is measured as a
//! ratio to this server, run side by side in the same benchmark.

use meshwork_proto::hello::v1::{
    SayHelloRequest, SayHelloResponse,
    hello_service_server::{HelloService, HelloServiceServer},
};
use tonic::{Request, Response, Status};

struct Greeter;

#[tonic::async_trait]
impl HelloService for Greeter {
    async fn say_hello(
        &self,
        request: Request<SayHelloRequest>,
    ) -> Result<Response<SayHelloResponse>, Status> {
        let name = request.into_inner().name;
        let name = if name.is_empty() { "World".to_owned() } else { name };
        Ok(Response::new(SayHelloResponse {
            message: format!("Hello, {name}!"),
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:50061".into());
    let addr = addr.parse()?;
    println!("listening on {addr}");
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(HelloServiceServer::new(Greeter))
        .serve_with_shutdown(addr, terminated())
        .await?;
    Ok(())
}

/// SIGTERM (what `make bench` sends) or Ctrl-C: the process returns from `main` rather
/// than being killed, so that an instrumented build (`-Cprofile-generate`, for PGO) writes
/// its profile.
async fn terminated() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
