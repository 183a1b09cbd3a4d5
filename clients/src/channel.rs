//! [`connect`]: the one place a client channel is built.
//!
//! The stack, outermost first:
//! 1. [`ClientTraceLayer`]: a client span per call, and the trace context injected into
//!    the outgoing metadata, so the callee's span joins the caller's trace;
//! 2. [`MetricsLayer::client`]: `grpc_client_*` golden signals;
//! 3. the channel: lazy connect (a service can start before its dependencies), automatic
//!    reconnect, HTTP/2 keepalive. Several endpoints, or a `dns:///` name, go through
//!    tonic's balanced channel (tower's power-of-two-choices balancer), which adds and
//!    removes endpoints while calls flow.

use std::{collections::HashSet, time::Duration};

use http::Uri;
use meshwork::layers::{ClientTraceLayer, MetricsLayer, metrics::Metrics, trace::ClientTrace};
use tokio::sync::mpsc::Sender;
use tonic::transport::{Channel, Endpoint, channel::Change};
use tower::ServiceBuilder;

use crate::target::Target;

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
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            dns_refresh: Duration::from_secs(5),
        }
    }
}

/// What [`connect`] returns: give it to a generated client, `UserServiceClient::new(..)`.
pub type MeshChannel = ClientTrace<Metrics<Channel>>;

/// A channel to `target` with the client stack above. Must be called inside a tokio runtime
/// (`dns:///` spawns its resolver task there). Never waits for a connection.
pub fn connect(target: &Target, options: &ChannelOptions) -> MeshChannel {
    ServiceBuilder::new()
        .layer(ClientTraceLayer)
        .layer(MetricsLayer::client())
        .service(channel(target, options))
}

fn channel(target: &Target, options: &ChannelOptions) -> Channel {
    match target {
        Target::Static(uris) if uris.len() == 1 => endpoint(&uris[0], options).connect_lazy(),
        Target::Static(uris) => Channel::balance_list(uris.iter().map(|uri| endpoint(uri, options))),
        Target::Dns { host, port } => {
            let (channel, changes) = Channel::balance_channel(64);
            tokio::spawn(resolve_forever(host.clone(), *port, options.clone(), changes));
            channel
        }
    }
}

fn endpoint(uri: &Uri, options: &ChannelOptions) -> Endpoint {
    Endpoint::from(uri.clone())
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(options.keepalive_interval)
        .keep_alive_timeout(options.keepalive_timeout)
        .keep_alive_while_idle(true)
}

/// Resolves `host` every `dns_refresh` and tells the balancer which addresses came and
/// went. Ends when the channel is dropped.
async fn resolve_forever(
    host: String,
    port: u16,
    options: ChannelOptions,
    changes: Sender<Change<Uri, Endpoint>>,
) {
    let mut current: HashSet<Uri> = HashSet::new();
    let mut every = tokio::time::interval(options.dns_refresh);
    loop {
        every.tick().await;
        let resolved: HashSet<Uri> = match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(addrs) => addrs
                .filter_map(|addr| format!("http://{addr}").parse().ok())
                .collect(),
            Err(error) => {
                // Keep the endpoints we have: a DNS hiccup must not empty the balancer.
                tracing::warn!(%host, %error, "cannot resolve; keeping the current endpoints");
                continue;
            }
        };
        for gone in current.difference(&resolved) {
            if changes.send(Change::Remove(gone.clone())).await.is_err() {
                return;
            }
        }
        for new in resolved.difference(&current) {
            if changes
                .send(Change::Insert(new.clone(), endpoint(new, &options)))
                .await
                .is_err()
            {
                return;
            }
        }
        current = resolved;
    }
}
