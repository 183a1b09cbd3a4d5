//! Bootstrap of one gRPC server, the same for every service: the service's own routes plus
//! `grpc.health.v1.Health` and reflection (v1 and v1alpha), behind one tower layer stack,
//! draining gracefully when the shutdown token is cancelled.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    server::NamedService,
    service::Routes,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::ServiceBuilder;

use crate::{config::ServerConfig, proto, status_codes::SpecStatusCodesLayer};

const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// Why a server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The gRPC services one binary serves, and the health names they answer to.
pub struct GrpcServices {
    routes: Routes,
    health_names: Vec<&'static str>,
}

impl GrpcServices {
    /// Starts with one service; its full name (`user.v1.UserService`) gets a health status.
    pub fn new<S>(service: S) -> Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self {
            routes: Routes::new(service),
            health_names: vec![S::NAME],
        }
    }
}

/// Binds `config.listen_addr`, serves until `shutdown` is cancelled, and drains. Used by
/// every service's `main`: the exit code is what the process should return.
pub async fn run(config: &ServerConfig, services: GrpcServices, shutdown: CancellationToken) -> ExitCode {
    let listener = match TcpListener::bind(config.listen_addr).await {
        Ok(listener) => listener,
        Err(source) => {
            let error = ServeError::Bind {
                addr: config.listen_addr,
                source,
            };
            tracing::error!(%error, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    match serve(config, listener, services, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// Serves on an already bound listener (tests bind port 0) until `shutdown` is cancelled.
///
/// The drain, in order: health turns `NOT_SERVING` (and health `Watch` streams end), the
/// listener closes and HTTP/2 GOAWAY refuses new calls, calls in flight run to completion,
/// bounded by `shutdown_grace`.
pub async fn serve(
    config: &ServerConfig,
    listener: TcpListener,
    services: GrpcServices,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen_addr,
        source,
    })?;
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in &services.health_names {
        health.set_service_status(*name, ServingStatus::Serving).await;
    }

    // Both reflection versions: grpcurl before 1.8.8 only speaks v1alpha. The health
    // descriptors are registered too, or grpcurl cannot call Health/Check by reflection.
    // Only the services this binary serves are listed, though every proto file is known.
    let reflection = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        services
            .health_names
            .iter()
            .chain(&[HEALTH_SERVICE, REFLECTION_V1, REFLECTION_V1ALPHA])
            .fold(builder, |builder, name| builder.with_service_name(*name))
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    // The layer stack every call passes through, outermost first.
    let layers = ServiceBuilder::new()
        // tonic's own error answers, fixed to gRPC's status-code spec.
        .layer(SpecStatusCodesLayer);

    let router = Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(layers)
        .add_routes(services.routes)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    tracing::info!(grpc_addr = %addr, "listening");
    let drain_started = {
        let shutdown = shutdown.clone();
        let names = services.health_names.clone();
        async move {
            shutdown.cancelled().await;
            stop_serving(health, &names).await;
        }
    };
    let serving = router.serve_with_incoming_shutdown(TcpIncoming::from(listener), drain_started);
    let grace = config.shutdown_grace;
    tokio::select! {
        result = serving => result?,
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "grace period over; exiting with calls still in flight");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Health turns `NOT_SERVING` for every name; then the statuses are cleared, which ends
/// open `Watch` streams (each has seen `NOT_SERVING` first) so they do not hold the drain.
async fn stop_serving(mut health: HealthReporter, names: &[&'static str]) {
    for name in names.iter().copied().chain([""]) {
        health.set_service_status(name, ServingStatus::NotServing).await;
    }
    for name in names.iter().copied().chain([""]) {
        health.clear_service_status(name).await;
    }
}
