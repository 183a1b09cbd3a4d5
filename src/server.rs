//! Bootstrap of one gRPC server, the same for every service: the service's own routes plus
//! `grpc.health.v1.Health` and reflection (v1 and v1alpha), behind one tower layer stack,
//! draining gracefully when the shutdown token is cancelled.
//!
//! The accept loop is ours (hyper's HTTP/2 server, as tonic's own `Server` uses), not
//! `tonic::transport::Server`: tonic puts its deadline and error handling *outside* any
//! layer a user adds, answering an expired deadline with `CANCELLED` where gRPC says
//! `DEADLINE_EXCEEDED`. Owning the loop puts every concern in the one stack below, and lets
//! TLS (tokio-rustls) rotate its certificate, which tonic's `ServerTlsConfig` cannot.
//!
//! With `TLS_CERT` the gRPC port speaks TLS only; `HEALTH_ADDR` adds a plaintext port that
//! serves nothing but `grpc.health.v1.Health`, for kubelet's gRPC probes (they cannot speak
//! TLS).

use std::{convert::Infallible, net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use http::{Request, Response};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use meshwork_rpc::{ObserveLayer, ObservedBody};
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
    time::Instant,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{body::Body, server::NamedService, service::Routes, transport::server::TcpConnectInfo};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::{
    auth::{AuthFileError, Authenticator},
    config::{SecurityConfig, ServerConfig},
    connection::{self, Activity, PREFACE_TIMEOUT, PrefaceSeen, PrefaceWatch, Transport},
    layers::{
        AuthenticateLayer, CallerBody, CatchPanicLayer, DeadlineLayer, LoadShedLayer, ServedCall,
        ServedConnection, ServerObserver, SpecStatusCodesLayer,
    },
    metrics_endpoint,
    telemetry::{AccessLog, Telemetry},
    tls::{ServerTls, TlsError, WatchedIdentity, WatchedRoots},
};

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
}

/// A security setting whose files do not make a working configuration (a key that is not
/// its certificate's, say); each names its setting, as a malformed value does.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("invalid TLS_CERT/TLS_KEY (--tls-cert/--tls-key): {0}")]
    Identity(TlsError),
    #[error("invalid TLS_CLIENT_CA (--tls-client-ca): {0}")]
    ClientCa(TlsError),
    #[error("invalid AUTH_JWT_SECRET_FILE/AUTH_JWKS_FILE: {0}")]
    Auth(#[from] AuthFileError),
}

/// What the security settings make of a server: TLS on the gRPC port (its certificate
/// watched) and the authenticator, each `None` when off. Made before any port is bound.
pub struct Security {
    tls: Option<Arc<ServerTls>>,
    authenticator: Option<Arc<Authenticator>>,
}

impl Security {
    /// Loads every file the settings name; the watchers stop with `stop`.
    pub fn load(config: &SecurityConfig, stop: &CancellationToken) -> Result<Self, SecurityError> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                let identity = WatchedIdentity::load(cert, key).map_err(SecurityError::Identity)?;
                identity.watch(stop.clone());
                let client_ca = match &config.tls_client_ca {
                    Some(path) => Some(WatchedRoots::load(path).map_err(SecurityError::ClientCa)?),
                    None => None,
                };
                if let Some(client_ca) = &client_ca {
                    client_ca.watch(stop.clone());
                }
                Some(Arc::new(
                    ServerTls::new(identity, client_ca).map_err(SecurityError::ClientCa)?,
                ))
            }
            // clap's `requires` makes the two come together.
            _ => None,
        };
        let authenticator = Authenticator::from_config(config, stop)?;
        if authenticator.is_some() && tls.is_none() {
            tracing::warn!("authentication is on but TLS is off: tokens cross the network in plaintext");
        }
        Ok(Self { tls, authenticator })
    }
}

/// Whether a service can do its work right now (its database answers). Checked every
/// [`READINESS_INTERVAL`] while serving; the answer is the health status, so Kubernetes
/// stops sending traffic to a replica that lost its database, and resumes by itself.
#[async_trait::async_trait]
pub trait Readiness: Send + Sync + 'static {
    async fn is_ready(&self) -> bool;
}

/// How often [`Readiness`] is checked.
pub const READINESS_INTERVAL: Duration = Duration::from_secs(1);

/// The health name that says only "the process answers" (Kubernetes liveness probes): it
/// does not follow [`Readiness`], so a database outage takes a replica out of rotation
/// without getting it restarted.
pub const LIVENESS: &str = "liveness";

/// The gRPC service one binary serves, and whether its health follows a readiness check.
pub struct GrpcServices {
    routes: Routes,
    /// Its full name (`user.v1.UserService`): also its health name, as is `""`.
    name: &'static str,
    readiness: Option<Arc<dyn Readiness>>,
    /// Tasks that finish after the calls: stopped once the connections have drained, and
    /// awaited within what is left of the grace period (the outbox relay's last pass).
    after_calls: Vec<(CancellationToken, JoinHandle<()>)>,
}

impl GrpcServices {
    /// Starts with one service; its full name (`user.v1.UserService`) gets a health status.
    pub fn new<S>(service: S) -> Self
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self {
            routes: Routes::new(service),
            name: S::NAME,
            readiness: None,
            after_calls: Vec::new(),
        }
    }

    /// Health follows `check` while serving, instead of staying `SERVING`.
    pub fn with_readiness(mut self, check: Arc<dyn Readiness>) -> Self {
        self.readiness = Some(check);
        self
    }

    /// `task` runs until `stop` is cancelled, which the drain does once the calls in
    /// flight have finished (their changes are what a relay's last pass must send); the
    /// drain then waits for it, within the grace period.
    pub fn with_task_after_calls(mut self, stop: CancellationToken, task: JoinHandle<()>) -> Self {
        self.after_calls.push((stop, task));
        self
    }
}

/// The tokio runtime a service runs on: `WORKER_THREADS` threads, by default one per CPU
/// the process may use (`std::thread::available_parallelism`: its CPU affinity and cgroup
/// quota, rounded down, at least one; tokio's own `TOKIO_WORKER_THREADS` is not read).
///
/// With one, the scheduler is tokio's single-threaded one, as linkerd2-proxy's is on one
/// core: a multi-threaded runtime with a single worker still pays for work stealing (atomics
/// on every task wake-up, the shared injection queue) and gains nothing by it. Blocking work
/// goes to `spawn_blocking` or threads of its own either way.
pub fn runtime(config: &ServerConfig) -> tokio::runtime::Runtime {
    let threads = config
        .worker_threads
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, usize::from);
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime")
}

/// The scheduler this runtime has (tokio's name for it) and how many threads run calls.
fn scheduler() -> (&'static str, usize) {
    let runtime = tokio::runtime::Handle::current();
    let scheduler = match runtime.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => "current_thread",
        _ => "multi_thread",
    };
    (scheduler, runtime.metrics().num_workers())
}

/// The life of a service process after its own set-up: binds the gRPC and metrics
/// addresses, serves until `shutdown` is cancelled, drains, and flushes telemetry. Used by
/// every service's `main`; the exit code is what the process should return.
pub async fn run(
    config: &ServerConfig,
    services: GrpcServices,
    shutdown: CancellationToken,
    telemetry: Telemetry,
) -> ExitCode {
    let security = match Security::load(&config.security, &shutdown) {
        Ok(security) => security,
        Err(error) => {
            // A setting error, like clap's: one line on stderr, exit status 2, nothing bound.
            eprintln!("error: {error}");
            telemetry.shutdown(Duration::ZERO).await;
            return ExitCode::from(2);
        }
    };
    let result = bind_and_serve(config, services, security, telemetry.access_log(), shutdown).await;
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "cannot serve");
            ExitCode::FAILURE
        }
    };
    // Last: it flushes the spans and the log lines still buffered.
    telemetry.shutdown(flush_budget(config.shutdown_grace)).await;
    code
}

async fn bind_and_serve(
    config: &ServerConfig,
    services: GrpcServices,
    security: Security,
    access_log: Option<&'static AccessLog>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let bind = |addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })
    };
    let grpc = bind(config.listen_addr).await?;
    let metrics = bind(config.metrics_addr).await?;
    let metrics_addr = metrics.local_addr().map_err(|source| ServeError::Bind {
        addr: config.metrics_addr,
        source,
    })?;
    tracing::info!(%metrics_addr, "serving /metrics");
    // Scrapes go on during the drain; the task ends with the process.
    tokio::spawn(metrics_endpoint::serve(metrics));
    let health = match config.security.health_addr {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    serve(config, grpc, health, services, security, access_log, shutdown).await
}

/// Serves on already bound listeners (tests bind port 0) until `shutdown` is cancelled:
/// every service on `listener`, health alone (plaintext) on `health_listener`.
///
/// The drain, in order: health turns `NOT_SERVING` (and health `Watch` streams end), the
/// listeners close, HTTP/2 GOAWAY refuses new calls on open connections, and calls in
/// flight run to completion, bounded by `shutdown_grace`.
pub async fn serve(
    config: &ServerConfig,
    listener: TcpListener,
    health_listener: Option<TcpListener>,
    services: GrpcServices,
    security: Security,
    access_log: Option<&'static AccessLog>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    meshwork_rpc::metrics::SERVER.initialize(services.name);
    let health = start_health(services.name).await;
    if let Some(check) = services.readiness.clone() {
        tokio::spawn(follow_readiness(
            check,
            health.clone(),
            services.name,
            shutdown.clone(),
        ));
    }
    let routes = with_standard_services(services.routes, services.name, &health)?;
    let connections = TaskTracker::new();

    if let (Some(health_listener), Some(health_addr)) = (health_listener, config.security.health_addr) {
        // Health only, and no authentication: health is open on the main port too.
        let stack = server_stack(config, None, access_log, Routes::new(health_service(&health)));
        let port = Port::new(config, &health_listener, health_addr, None)?;
        tracing::info!(health_addr = %port.local_addr, "serving health (plaintext)");
        let accepting = accept_connections(
            port,
            health_listener,
            stack,
            connections.clone(),
            shutdown.clone(),
        );
        connections.spawn(accepting);
    }

    let stack = server_stack(config, security.authenticator, access_log, routes);
    let port = Port::new(config, &listener, config.listen_addr, security.tls)?;
    let (scheduler, worker_threads) = scheduler();
    tracing::info!(
        grpc_addr = %port.local_addr,
        tls = port.tls.is_some(),
        scheduler,
        worker_threads,
        "listening"
    );
    accept_connections(port, listener, stack, connections.clone(), shutdown.clone()).await;

    stop_serving(health, services.name).await;
    let grace = config.shutdown_grace;
    let deadline = Instant::now() + grace.saturating_sub(flush_budget(grace));
    drain(connections, deadline).await;
    finish_tasks(services.after_calls, deadline).await;
    Ok(())
}

/// What the stack answers: the service's response, its body observed to the end of the call.
type ServerResponse = Response<ObservedBody<Body, ServedCall>>;

/// Every call passes through these layers, outermost first.
fn server_stack(
    config: &ServerConfig,
    authenticator: Option<Arc<Authenticator>>,
    access_log: Option<&'static AccessLog>,
    routes: Routes,
) -> impl Service<Request<Body>, Response = ServerResponse, Error = Infallible, Future = impl Send + 'static>
+ Clone
+ Send
+ Sync
+ 'static {
    ServiceBuilder::new()
        // The call's method, resolved once; its place in the trace (parent: the caller's
        // traceparent; a span when exported); and one end-of-call hook for the span,
        // grpc_server_* metrics, access log, idle timer.
        .layer(ObserveLayer::new(ServerObserver::new(access_log)))
        // Overload: beyond max_concurrent_calls, RESOURCE_EXHAUSTED at once (logged and
        // counted by the layers above, like any answer).
        .layer(LoadShedLayer::new(config.max_concurrent_calls as usize))
        // With authentication on: the caller's token verified, its Caller in the extensions,
        // admin-only methods refused. Off (the default), not in the stack at all.
        .option_layer(authenticator.map(AuthenticateLayer::new))
        // The caller's grpc-timeout (capped by max_call_duration), enforced:
        // DEADLINE_EXCEEDED, and the handler dropped, which cancels its downstream calls.
        .layer(DeadlineLayer::new(config.max_call_duration))
        // tonic's own error answers, fixed to gRPC's status-code spec.
        .layer(SpecStatusCodesLayer)
        // A panicking handler answers INTERNAL, logged with its trace id; the process stays up.
        .layer(CatchPanicLayer)
        .service(routes)
}

/// One listening port: where it is, its TLS (if any), its HTTP/2 and connection settings.
struct Port {
    local_addr: SocketAddr,
    tls: Option<Arc<ServerTls>>,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    idle: Duration,
}

impl Port {
    /// `listener` was bound to `addr` (a setting).
    fn new(
        config: &ServerConfig,
        listener: &TcpListener,
        addr: SocketAddr,
        tls: Option<Arc<ServerTls>>,
    ) -> Result<Self, ServeError> {
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok(Self {
            local_addr,
            tls,
            http2: http2_server(config),
            idle: config.max_connection_idle,
        })
    }
}

/// Accepts connections until `shutdown`, each served in a task of `connections`.
async fn accept_connections<S>(
    port: Port,
    listener: TcpListener,
    stack: S,
    connections: TaskTracker,
    shutdown: CancellationToken,
) where
    S: Service<Request<Body>, Response = ServerResponse, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let port = Arc::new(port);
    while let Some((stream, remote_addr)) = accept(&listener, &shutdown).await {
        let activity = Arc::new(Activity::default());
        let served = Arc::new(ServedConnection::new(
            TcpConnectInfo {
                local_addr: Some(port.local_addr),
                remote_addr: Some(remote_addr),
            },
            activity.clone(),
        ));
        let service = stack.clone().map_request(move |request: Request<_>| {
            // The connection for the observe layer, and a body that notes a caller that
            // resets the stream (its call counts Canceled).
            CallerBody::wrap(request, &served).map(Body::new)
        });
        let port = port.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let preface_due = Instant::now() + PREFACE_TIMEOUT;
            let Some(transport) = handshake(stream, &port, preface_due, &shutdown).await else {
                return;
            };
            let preface = Arc::new(PrefaceSeen::default());
            let io = TokioIo::new(PrefaceWatch::new(transport, preface.clone()));
            let connection = port.http2.serve_connection(io, TowerToHyperService::new(service));
            connection::serve(connection, activity, preface, preface_due, port.idle, shutdown).await;
        });
    }
}

/// The socket as HTTP/2 will read it: itself, or on a TLS port, the TLS stream once the
/// handshake is done. `None` (the socket dropped) when the handshake fails, is not done by
/// `preface_due`, or shutdown begins first.
async fn handshake(
    stream: TcpStream,
    port: &Port,
    preface_due: Instant,
    shutdown: &CancellationToken,
) -> Option<Transport> {
    let Some(tls) = &port.tls else {
        return Some(Transport::Plain(stream));
    };
    tokio::select! {
        () = shutdown.cancelled() => None,
        accepted = tokio::time::timeout_at(preface_due, TlsAcceptor::from(tls.config()).accept(stream)) => match accepted {
            Ok(Ok(stream)) => Some(Transport::Tls(Box::new(stream))),
            Ok(Err(error)) => {
                // A plaintext client, a wrong CA, no client certificate: common, and the peer's fault.
                tracing::debug!(%error, "TLS handshake failed");
                None
            }
            Err(_elapsed) => None,
        },
    }
}

/// The part of the shutdown grace kept for flushing spans after the drain, so that the
/// whole shutdown fits in `SHUTDOWN_GRACE` (and in Kubernetes' grace period).
fn flush_budget(grace: Duration) -> Duration {
    (grace / 4).min(Duration::from_secs(2))
}

/// The HTTP/2 settings of every connection.
fn http2_server(config: &ServerConfig) -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(config.http2_keepalive_interval)
        .keep_alive_timeout(config.http2_keepalive_timeout)
        // Fixed, small windows (not adaptive ones, which may grow to megabytes per stream):
        // what a peer can make us buffer is bounded per stream and per connection.
        .initial_stream_window_size(config.http2_stream_window)
        .initial_connection_window_size(config.http2_connection_window)
        .max_concurrent_streams(config.max_concurrent_streams)
        // A peer that resets streams as fast as it opens them (CVE-2023-44487) is cut off.
        .max_pending_accept_reset_streams(Some(100))
        .max_header_list_size(16 * 1024);
    http2
}

/// The next connection, or `None` once `shutdown` is cancelled.
async fn accept(listener: &TcpListener, shutdown: &CancellationToken) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, peer));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off, do not spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Waits for every connection to finish its calls (each was told to by the shutdown
/// token), at most `grace`.
async fn drain(connections: TaskTracker, deadline: Instant) {
    tracing::info!(open_connections = connections.len(), "draining");
    connections.close();
    if tokio::time::timeout_at(deadline, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; exiting with calls still in flight");
    }
    tracing::info!("stopped");
}

/// Stops the tasks that run after the calls and waits for them until `deadline`.
async fn finish_tasks(tasks: Vec<(CancellationToken, JoinHandle<()>)>, deadline: Instant) {
    for (stop, _) in &tasks {
        stop.cancel();
    }
    for (_, task) in tasks {
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            tracing::warn!("grace period over; a background task did not finish");
            return;
        }
    }
}

/// A health reporter with the service, the server as a whole (`""`) and [`LIVENESS`]
/// `SERVING`: by the time a server starts, its database is open and migrated.
async fn start_health(name: &'static str) -> HealthReporter {
    let (health, _) = tonic_health::server::health_reporter();
    for name in [name, "", LIVENESS] {
        health.set_service_status(name, ServingStatus::Serving).await;
    }
    health
}

/// Keeps the health status in step with `check` until shutdown.
async fn follow_readiness(
    check: Arc<dyn Readiness>,
    health: HealthReporter,
    name: &'static str,
    shutdown: CancellationToken,
) {
    let mut serving = true;
    let mut every = tokio::time::interval(READINESS_INTERVAL);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let ready = check.is_ready().await;
        // The drain owns the health status once it has begun.
        if ready == serving || shutdown.is_cancelled() {
            continue;
        }
        serving = ready;
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        match ready {
            true => tracing::info!("dependencies answer again; SERVING"),
            false => tracing::warn!("dependencies do not answer; NOT_SERVING"),
        }
        for name in [name, ""] {
            health.set_service_status(name, status).await;
        }
    }
}

/// Adds health and both reflection versions to a service's routes.
fn with_standard_services(
    routes: Routes,
    name: &'static str,
    health: &HealthReporter,
) -> Result<Routes, ServeError> {
    // grpcurl before 1.8.8 only speaks v1alpha. The health descriptors are registered too, or
    // grpcurl cannot call Health/Check by reflection. Only the services this binary serves
    // are listed, though every proto file is known.
    let reflection = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(meshwork_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(meshwork_proto::ERROR_DETAILS_DESCRIPTOR_SET);
        [name, HEALTH_SERVICE, REFLECTION_V1, REFLECTION_V1ALPHA]
            .into_iter()
            .fold(builder, |builder, name| builder.with_service_name(name))
    };
    Ok(routes
        .add_service(health_service(health))
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?))
}

fn health_service(
    health: &HealthReporter,
) -> tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService> {
    tonic_health::pb::health_server::HealthServer::from_arc(Arc::new(
        tonic_health::server::HealthService::from_health_reporter(health.clone()),
    ))
}

/// Health turns `NOT_SERVING` for every name; then the statuses are cleared, which ends
/// open `Watch` streams (each has seen `NOT_SERVING` first) so they do not hold the drain.
async fn stop_serving(mut health: HealthReporter, name: &'static str) {
    for name in [name, "", LIVENESS] {
        health.set_service_status(name, ServingStatus::NotServing).await;
    }
    for name in [name, "", LIVENESS] {
        health.clear_service_status(name).await;
    }
}
