//! Where the endpoints of a target are, as a live stream of changes for the balancer:
//! a fixed list is inserted once; a `dns:///` name is re-resolved every `refresh`, and
//! addresses that appear or disappear are inserted or removed while calls flow.

use std::{collections::HashSet, convert::Infallible, time::Duration};

use http::Uri;
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tower::discover::Change;

use crate::target::Target;

/// The change stream the balancer reads; endpoints keyed by their URI.
pub type Endpoints<S> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Change<String, S>, Infallible>> + Send>>;

/// Discovers the endpoints of `target`, building each one's service with `make`.
pub fn discover<S, F>(target: &Target, refresh: Duration, make: F) -> Endpoints<S>
where
    S: Send + 'static,
    F: Fn(&Uri) -> S + Send + 'static,
{
    let (changes, stream) = mpsc::channel(64);
    match target.clone() {
        Target::Static(uris) => {
            tokio::spawn(async move {
                for uri in uris {
                    let _ = changes.send(Change::Insert(uri.to_string(), make(&uri))).await;
                }
                // Keep the stream open: its end would read as "the endpoint set is gone".
                changes.closed().await;
            });
        }
        Target::Dns { host, port } => {
            tokio::spawn(resolve_forever(host, port, refresh, make, changes));
        }
    }
    Box::pin(ReceiverStream::new(stream).map(Ok))
}

/// Resolves `host` every `refresh` and reports which addresses came and went. Ends when
/// the balancer is dropped.
async fn resolve_forever<S, F>(
    host: String,
    port: u16,
    refresh: Duration,
    make: F,
    changes: mpsc::Sender<Change<String, S>>,
) where
    F: Fn(&Uri) -> S,
{
    let mut current: HashSet<String> = HashSet::new();
    let mut every = tokio::time::interval(refresh);
    loop {
        every.tick().await;
        let resolved: HashSet<String> = match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(addrs) => addrs.map(|addr| format!("http://{addr}")).collect(),
            Err(error) => {
                // Keep the endpoints we have: a DNS hiccup must not empty the balancer.
                tracing::warn!(%host, %error, "cannot resolve; keeping the current endpoints");
                continue;
            }
        };
        if !worth_applying(&current, &resolved) {
            tracing::warn!(%host, "DNS answered no address; keeping the current endpoints");
            continue;
        }
        for gone in current.difference(&resolved) {
            tracing::info!(endpoint = %gone, "endpoint removed by DNS");
            if changes.send(Change::Remove(gone.clone())).await.is_err() {
                return;
            }
        }
        for new in resolved.difference(&current) {
            let Ok(uri) = new.parse::<Uri>() else { continue };
            tracing::info!(endpoint = %new, "endpoint added by DNS");
            if changes
                .send(Change::Insert(new.clone(), make(&uri)))
                .await
                .is_err()
            {
                return;
            }
        }
        current = resolved;
    }
}

/// Whether a DNS answer replaces the endpoints. An empty one (every pod restarting at once, a
/// DNS server mid-update) does not: it is treated like a failed lookup, as grpc-go does, and
/// calls keep going to the last known endpoints, whose breakers eject the ones really gone.
fn worth_applying(current: &HashSet<String>, resolved: &HashSet<String>) -> bool {
    !resolved.is_empty() || current.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_dns_answer_keeps_the_endpoints() {
        let known: HashSet<String> = ["http://10.0.0.1:50052".to_owned()].into();
        assert!(!worth_applying(&known, &HashSet::new()));
        assert!(worth_applying(
            &known,
            &["http://10.0.0.2:50052".to_owned()].into()
        ));
        assert!(
            worth_applying(&HashSet::new(), &HashSet::new()),
            "nothing to keep"
        );
    }
}
