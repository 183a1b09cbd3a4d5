//! [`connect`]: the one place a client channel is built. The stack, outermost first:
//!
//! 1. [`ObserveLayer`]: the method resolved once; one client span per call (retries
//!    included) whose trace context goes into the outgoing metadata, so the callee's span
//!    joins the trace; `grpc_client_*` golden signals; one end-of-call hook for both.
//! 2. [`RetryLayer`]: retries of `UNAVAILABLE` under a budget, with backoff, within the
//!    call's deadline, which each attempt passes on as what is left (see `retry.rs`).
//! 3. A buffer, so the one balancer below is shared by every clone of the channel.
//! 4. Load shedding: when no endpoint is ready (all ejected, none resolved) a call fails at
//!    once instead of queueing for an endpoint that may never come.
//! 5. tower's power-of-two-choices balancer over the endpoints, weighted by peak-EWMA
//!    latency, fed live by discovery (`discovery.rs`: a fixed list, or DNS re-resolved).
//! 6. Per endpoint, a circuit breaker (`breaker.rs`) that ejects an endpoint that keeps
//!    failing and probes it again later.
//! 7. Per endpoint, a tonic channel: lazy connect (a service may start before what it
//!    calls), connect timeout, HTTP/2 keepalive, automatic reconnect; over TLS when
//!    [`ChannelOptions::tls`] says so (`tls.rs`).

use std::{sync::Arc, time::Duration};

use http::{Request, Response};
use meshwork_rpc::observe::{Observe, ObserveLayer};
use tonic::{Status, body::Body, transport::Endpoint};
use tower::{
    BoxError, ServiceBuilder,
    balance::p2c::Balance,
    buffer::Buffer,
    load::{CompleteOnResponse, PeakEwmaDiscover},
    load_shed::LoadShed,
    retry::{backoff::ExponentialBackoffMaker, budget::TpsBudget},
    util::{BoxCloneSyncService, rng::HasherRng},
};

use crate::{
    breaker::{Breaker, BreakerPolicy},
    discovery,
    observe::ClientObserver,
    retry::{Retry, RetryLayer, RetryPolicy},
    target::Target,
    tls::ClientTls,
};

/// How a client channel behaves. The defaults suit calls inside one cluster.
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    /// Limit for establishing one connection.
    pub connect_timeout: Duration,
    /// How often HTTP/2 pings check an idle connection.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is dropped.
    pub keepalive_timeout: Duration,
    /// How often a `dns:///` target is re-resolved.
    pub dns_refresh: Duration,
    /// The longest a call may take, retries included; a call's own [`Deadline`] may be
    /// shorter (a handler passes on the one of the call it serves).
    ///
    /// [`Deadline`]: meshwork_rpc::Deadline
    pub timeout: Option<Duration>,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Retries allowed on top of calls, as a share of recent calls (0.2: at most 20% more).
    pub retry_budget: f32,
    /// Retries allowed per second whatever the budget, so a quiet client can still retry.
    pub min_retries_per_second: u32,
    /// Backoff before the first retry; doubling, with jitter, up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Retry every method, not only reads: for callers whose writes carry idempotency keys.
    pub retry_writes: bool,
    /// Consecutive failures that eject an endpoint.
    pub eject_after: u32,
    /// How long the first ejection lasts (each one in a row lasts twice the last).
    pub eject_for: Duration,
    /// The longest ejection.
    pub max_eject_for: Duration,
    /// TLS (and the client certificate, for mutual TLS) on every connection; `None`: plaintext.
    pub tls: Option<ClientTls>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            dns_refresh: Duration::from_secs(5),
            timeout: None,
            max_attempts: 3,
            retry_budget: 0.2,
            min_retries_per_second: 10,
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(500),
            retry_writes: false,
            eject_after: 5,
            eject_for: Duration::from_secs(5),
            max_eject_for: Duration::from_secs(60),
            tls: None,
        }
    }
}

/// The balanced, shed, buffered part of the stack, boxed so that it has a name. Its error is
/// a `Status`: with a boxed `dyn Error` there, rustc cannot prove a generated client's
/// future `Send` (a higher-ranked lifetime bug), which `async_trait` callers need.
type Balanced = BoxCloneSyncService<Request<Body>, Response<Body>, Status>;

/// What [`connect`] returns: give it to a generated client, `UserServiceClient::new(..)`.
pub type MeshChannel = Observe<Retry<Balanced>, ClientObserver>;

/// A channel to `target` with the stack above. Must be called inside a tokio runtime
/// (discovery runs as a task there). Never waits for a connection.
pub fn connect(target: &Target, options: &ChannelOptions) -> MeshChannel {
    let tls = options.tls.as_ref().map(|tls| tls.for_target(target));
    let endpoints = discovery::discover(target, options.dns_refresh, {
        let options = options.clone();
        move |uri: &http::Uri| {
            let policy = BreakerPolicy {
                eject_after: options.eject_after,
                eject_for: options.eject_for,
                max_eject_for: options.max_eject_for,
            };
            let endpoint = endpoint(uri, &options);
            let channel = match &tls {
                Some(tls) => endpoint.connect_with_connector_lazy(tls.connector(uri)),
                None => endpoint.connect_lazy(),
            };
            Breaker::new(channel, policy, uri.to_string())
        }
    });
    let balancer = Balance::new(PeakEwmaDiscover::new(
        endpoints,
        Duration::from_millis(30),
        Duration::from_secs(10),
        CompleteOnResponse::default(),
    ));
    let balanced: Balanced = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .map_err(|error: BoxError| Status::unavailable(crate::retry::describe(error)))
            .service(Buffer::new(LoadShed::new(balancer), 1024)),
    );

    ServiceBuilder::new()
        .layer(ObserveLayer::new(ClientObserver))
        .layer(RetryLayer::new(retry_policy(options)))
        .service(balanced)
}

fn retry_policy(options: &ChannelOptions) -> RetryPolicy {
    RetryPolicy {
        max_attempts: options.max_attempts.max(1),
        budget: Arc::new(TpsBudget::new(
            Duration::from_secs(10),
            options.min_retries_per_second,
            options.retry_budget,
        )),
        backoff: ExponentialBackoffMaker::new(
            options.min_backoff,
            options.max_backoff,
            1.0,
            HasherRng::default(),
        )
        .expect("backoff bounds are positive and ordered"),
        retry_writes: options.retry_writes,
        timeout: options.timeout,
    }
}

fn endpoint(uri: &http::Uri, options: &ChannelOptions) -> Endpoint {
    Endpoint::from(uri.clone())
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(options.keepalive_interval)
        .keep_alive_timeout(options.keepalive_timeout)
        .keep_alive_while_idle(true)
}
