//! [`connect`]: the one place a client channel is built, and [`ChannelOptions`], how it
//! behaves. The stack, outermost first (each layer's module in the source explains its
//! choices):
//!
//! 1. Observe (`observe.rs`): the method resolved once; one client call in the trace per
//!    call (retries included), whose trace context goes into the outgoing metadata, so the
//!    callee joins the trace; `grpc_client_*` golden signals; one end-of-call hook for both.
//! 2. Retry (`retry.rs`): retries of `UNAVAILABLE` under a budget, with backoff, within the
//!    call's deadline, which each attempt passes on as what is left. Only the methods the
//!    protos declare safe to repeat (`idempotency_level`), unless
//!    [`ChannelOptions::retry_writes()`] says every method is.
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
//!
//! ```no_run
//! use meshwork_clients::{ChannelOptions, OrderServiceClient, connect};
//! use std::time::Duration;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // Two replicas, balanced; calls capped at 2 s, retries included.
//! let target = "http://order-0:50053,http://order-1:50053".parse()?;
//! let orders = OrderServiceClient::new(connect(&target, &ChannelOptions::default().timeout(Duration::from_secs(2))));
//! # Ok(()) }
//! ```

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
///
/// Set what differs with the builder methods, one per field (the fields stay public):
///
/// ```
/// use meshwork_clients::ChannelOptions;
/// use std::time::Duration;
///
/// let options = ChannelOptions::default()
///     .timeout(Duration::from_secs(2))
///     .max_attempts(5)
///     .connect_timeout(Duration::from_millis(500));
/// assert_eq!(options.timeout, Some(Duration::from_secs(2)));
/// assert_eq!(options.max_attempts, 5);
/// ```
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
    /// The longest backoff between two attempts.
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

impl ChannelOptions {
    /// Sets the `timeout` field: the longest a call may take, retries included.
    ///
    /// ```
    /// use meshwork_clients::ChannelOptions;
    /// use std::time::Duration;
    ///
    /// let options = ChannelOptions::default().timeout(Duration::from_secs(2));
    /// assert_eq!(options.timeout, Some(Duration::from_secs(2)));
    /// ```
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Clears the `timeout` field: calls are bounded only by their own [`Deadline`].
    ///
    /// [`Deadline`]: meshwork_rpc::Deadline
    ///
    /// ```
    /// use meshwork_clients::ChannelOptions;
    /// use std::time::Duration;
    ///
    /// let options = ChannelOptions::default().timeout(Duration::from_secs(2)).no_timeout();
    /// assert_eq!(options.timeout, None);
    /// ```
    #[must_use]
    pub fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// Sets the `min_backoff` field and the `max_backoff` field: the
    /// backoff before the first retry, and the longest one (`min` at most `max`).
    ///
    /// ```
    /// use meshwork_clients::ChannelOptions;
    /// use std::time::Duration;
    ///
    /// let options = ChannelOptions::default().backoff(Duration::from_millis(50), Duration::from_secs(2));
    /// assert_eq!((options.min_backoff, options.max_backoff), (Duration::from_millis(50), Duration::from_secs(2)));
    /// ```
    #[must_use]
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max;
        self
    }

    /// Sets the `connect_timeout` field: the limit for establishing one connection.
    ///
    /// ```
    /// use meshwork_clients::ChannelOptions;
    /// use std::time::Duration;
    ///
    /// let options = ChannelOptions::default().connect_timeout(Duration::from_millis(250));
    /// assert_eq!(options.connect_timeout, Duration::from_millis(250));
    /// ```
    #[must_use]
    pub fn connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// Sets the `keepalive_interval` field: how often HTTP/2 pings check an idle connection.
    ///
    /// ```
    /// use meshwork_clients::ChannelOptions;
    /// use std::time::Duration;
    ///
    /// let options = ChannelOptions::default().keepalive_interval(Duration::from_secs(10));
    /// assert_eq!(options.keepalive_interval, Duration::from_secs(10));
    /// ```
    #[must_use]
    pub fn keepalive_interval(mut self, keepalive_interval: Duration) -> Self {
        self.keepalive_interval = keepalive_interval;
        self
    }

    /// Sets the `keepalive_timeout` field: how long a ping may go unanswered.
    ///
    /// ```
    /// use meshwork_clients::ChannelOptions;
    /// use std::time::Duration;
    ///
    /// let options = ChannelOptions::default().keepalive_timeout(Duration::from_secs(5));
    /// assert_eq!(options.keepalive_timeout, Duration::from_secs(5));
    /// ```
    #[must_use]
    pub fn keepalive_timeout(mut self, keepalive_timeout: Duration) -> Self {
        self.keepalive_timeout = keepalive_timeout;
        self
    }

    /// Sets the `dns_refresh` field: how often a `dns:///` target is re-resolved.
    ///
    /// ```
    /// use meshwork_clients::ChannelOptions;
    /// use std::time::Duration;
    ///
    /// let options = ChannelOptions::default().dns_refresh(Duration::from_secs(30));
    /// assert_eq!(options.dns_refresh, Duration::from_secs(30));
    /// ```
    #[must_use]
    pub fn dns_refresh(mut self, dns_refresh: Duration) -> Self {
        self.dns_refresh = dns_refresh;
        self
    }

    /// Sets the `max_attempts` field: attempts per call, the first included (1: no retries).
    ///
    /// ```
    /// use meshwork_clients::ChannelOptions;
    ///
    /// let options = ChannelOptions::default().max_attempts(5);
    /// assert_eq!(options.max_attempts, 5);
    /// ```
    #[must_use]
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets the `retry_budget` field: retries allowed as a share of recent calls.
    ///
    /// ```
    /// use meshwork_clients::ChannelOptions;
    ///
    /// let options = ChannelOptions::default().retry_budget(0.1);
    /// assert_eq!(options.retry_budget, 0.1);
    /// ```
    #[must_use]
    pub fn retry_budget(mut self, retry_budget: f32) -> Self {
        self.retry_budget = retry_budget;
        self
    }

    /// Sets the `min_retries_per_second` field: retries allowed per second whatever the budget.
    ///
    /// ```
    /// use meshwork_clients::ChannelOptions;
    ///
    /// let options = ChannelOptions::default().min_retries_per_second(2);
    /// assert_eq!(options.min_retries_per_second, 2);
    /// ```
    #[must_use]
    pub fn min_retries_per_second(mut self, min_retries_per_second: u32) -> Self {
        self.min_retries_per_second = min_retries_per_second;
        self
    }

    /// Sets the `tls` field: every connection speaks TLS (mutual TLS when `tls` has a client
    /// certificate); the target's URLs are `https://`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use meshwork_clients::{ChannelOptions, ClientTls};
    ///
    /// let provider = Arc::new(rustls::crypto::ring::default_provider());
    /// let roots = rustls::RootCertStore::empty(); // the CA bundle's certificates, in real use
    /// let tls = ClientTls::with_roots(provider, roots, None, Some("user-service"))?;
    /// let options = ChannelOptions::default().tls(tls);
    /// assert!(options.tls.is_some());
    /// # Ok::<(), rustls::Error>(())
    /// ```
    #[must_use]
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the `retry_writes` field: retry every method, for callers whose writes carry idempotency keys (`request_id`).
    ///
    /// ```
    /// use meshwork_clients::ChannelOptions;
    ///
    /// let options = ChannelOptions::default().retry_writes(true);
    /// assert_eq!(options.retry_writes, true);
    /// ```
    #[must_use]
    pub fn retry_writes(mut self, retry_writes: bool) -> Self {
        self.retry_writes = retry_writes;
        self
    }

    /// Sets the `eject_after` field: consecutive failures that eject an endpoint.
    ///
    /// ```
    /// use meshwork_clients::ChannelOptions;
    ///
    /// let options = ChannelOptions::default().eject_after(3);
    /// assert_eq!(options.eject_after, 3);
    /// ```
    #[must_use]
    pub fn eject_after(mut self, eject_after: u32) -> Self {
        self.eject_after = eject_after;
        self
    }

    /// Sets the `eject_for` field: how long the first ejection lasts.
    ///
    /// ```
    /// use meshwork_clients::ChannelOptions;
    /// use std::time::Duration;
    ///
    /// let options = ChannelOptions::default().eject_for(Duration::from_secs(1));
    /// assert_eq!(options.eject_for, Duration::from_secs(1));
    /// ```
    #[must_use]
    pub fn eject_for(mut self, eject_for: Duration) -> Self {
        self.eject_for = eject_for;
        self
    }

    /// Sets the `max_eject_for` field: the longest ejection.
    ///
    /// ```
    /// use meshwork_clients::ChannelOptions;
    /// use std::time::Duration;
    ///
    /// let options = ChannelOptions::default().max_eject_for(Duration::from_secs(30));
    /// assert_eq!(options.max_eject_for, Duration::from_secs(30));
    /// ```
    #[must_use]
    pub fn max_eject_for(mut self, max_eject_for: Duration) -> Self {
        self.max_eject_for = max_eject_for;
        self
    }
}

/// The balanced, shed, buffered part of the stack, boxed so that it has a name. Its error is
/// a `Status`: with a boxed `dyn Error` there, rustc cannot prove a generated client's
/// future `Send` (a higher-ranked lifetime bug), which `async_trait` callers need.
type Balanced = BoxCloneSyncService<Request<Body>, Response<Body>, Status>;

/// What [`connect`] returns: give it to a generated client. Cloning it is cheap, and every
/// clone shares the one balancer, retry budget and connections.
///
/// ```no_run
/// use meshwork_clients::{ChannelOptions, MeshChannel, UserServiceClient, connect};
///
/// /// A handler's view of the User service: the client type names the channel.
/// struct Users {
///     client: UserServiceClient<MeshChannel>,
/// }
///
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let channel: MeshChannel = connect(&"http://127.0.0.1:50052".parse()?, &ChannelOptions::default());
/// let users = Users { client: UserServiceClient::new(channel) };
/// # Ok(()) }
/// ```
pub type MeshChannel = Observe<Retry<Balanced>, ClientObserver>;

/// A channel to `target` with the stack above. Must be called inside a tokio runtime
/// (discovery runs as a task there). Never waits for a connection: the first call does,
/// within its deadline.
///
/// ```no_run
/// use meshwork_clients::{ChannelOptions, HelloServiceClient, Target, connect};
/// use meshwork_clients::proto::hello::v1::SayHelloRequest;
/// use std::time::Duration;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let target: Target = "http://127.0.0.1:50051".parse()?;
/// let channel = connect(&target, &ChannelOptions::default().timeout(Duration::from_secs(1)));
/// let reply = HelloServiceClient::new(channel)
///     .say_hello(SayHelloRequest { name: "Ada".into() })
///     .await?;
/// assert_eq!(reply.into_inner().message, "Hello, Ada!");
/// # Ok(()) }
/// ```
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
        .layer(ObserveLayer::new(ClientObserver::for_target(target)))
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
