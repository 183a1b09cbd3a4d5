//! NATS JetStream for the event tests.
//!
//! - `MESHWORK_TEST_NATS_URL`: a NATS server with JetStream the tests may use, e.g.
//!   `nats://127.0.0.1:4222` (`.ci/run` sets it). The tests that need it are `#[ignore]`d
//!   and live in a module named `nats`, so a run without a server reports them as ignored,
//!   and `make test` picks them out (`--ignored nats::`) when it is set.
//! - Every service publishes to one stream with a fixed name, and order-service's durable
//!   consumer has a fixed name too (CONTRACT.md): tests that use the broker take turns
//!   ([`Broker::take`]), and each starts on an empty stream.
//! - [`BrokerProxy`] stands between the services and the broker, so a test can take the
//!   broker away and bring it back without touching the shared server.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use async_nats::jetstream::{self, stream::Stream};
use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::{Mutex, MutexGuard},
};
use tokio_util::sync::CancellationToken;

/// The stream CONTRACT.md names.
pub const STREAM: &str = "MESHWORK";

/// The broker's URL; a test that needs it is `#[ignore]`d, so this runs only when asked for.
pub fn required_nats_url() -> String {
    std::env::var("MESHWORK_TEST_NATS_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .expect("this test needs NATS with JetStream: set MESHWORK_TEST_NATS_URL, e.g. nats://127.0.0.1:4222")
}

static TURN: Mutex<()> = Mutex::const_new(());

/// The broker, for one test at a time, with an empty stream.
pub struct Broker {
    pub url: String,
    pub js: jetstream::Context,
    _turn: MutexGuard<'static, ()>,
}

/// One message as a subscriber sees it.
#[derive(Debug, Clone)]
pub struct Received {
    pub subject: String,
    pub headers: Vec<(String, String)>,
    pub payload: bytes::Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

impl Broker {
    /// Waits for this test's turn, then empties the stream (the services create it again)
    /// and removes order-service's durable consumer with it.
    pub async fn take() -> Self {
        let turn = TURN.lock().await;
        let url = required_nats_url();
        let client = async_nats::connect(&url).await.expect("NATS answers");
        let js = jetstream::new(client);
        // Not found is fine: the first test of a run, or a stream a test removed.
        let _ = js.delete_stream(STREAM).await;
        Self { url, js, _turn: turn }
    }

    /// The stream, once a service has created it.
    pub async fn stream(&self) -> Option<Stream> {
        self.js.get_stream(STREAM).await.ok()
    }

    /// Every message the stream holds, in stream order.
    pub async fn messages(&self) -> Vec<Received> {
        let Some(mut stream) = self.stream().await else {
            return Vec::new();
        };
        let Ok(info) = stream.info().await else {
            return Vec::new();
        };
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let mut messages = Vec::new();
        for seq in first.max(1)..=last {
            let Ok(message) = stream.get_raw_message(seq).await else {
                continue;
            };
            let headers = message
                .headers
                .iter()
                .flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |value| (name.to_string(), value.as_str().to_owned()))
                })
                .collect();
            messages.push(Received {
                subject: message.subject.to_string(),
                headers,
                payload: message.payload,
            });
        }
        messages
    }

    /// The messages on `subject`.
    pub async fn messages_on(&self, subject: &str) -> Vec<Received> {
        let mut messages = self.messages().await;
        messages.retain(|message| message.subject == subject);
        messages
    }
}

/// A TCP relay to the broker that can be cut (every connection closed, new ones closed at
/// once) and restored, on the same address.
pub struct BrokerProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    connections: Arc<std::sync::Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl BrokerProxy {
    /// A relay to the broker at `url` (`nats://host:port`).
    pub async fn start(url: &str) -> Self {
        let upstream = url.trim_start_matches("nats://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (up_, connections_, stop_) = (up.clone(), connections.clone(), stop.clone());
        tokio::spawn(stop_.clone().run_until_cancelled_owned(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if !up_.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let cut = connections_.lock().unwrap().clone();
                let upstream = upstream.clone();
                tokio::spawn(cut.run_until_cancelled_owned(relay(client, upstream)));
            }
        }));
        Self {
            addr,
            up,
            connections,
            stop,
        }
    }

    /// The URL services are given.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// The broker is gone: open connections close, new ones are closed at once.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut connections = self.connections.lock().unwrap();
        connections.cancel();
        *connections = CancellationToken::new();
    }

    /// The broker is back.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for BrokerProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.connections.lock().unwrap().cancel();
    }
}

async fn relay(mut client: TcpStream, upstream: String) {
    if let Ok(mut server) = TcpStream::connect(upstream).await {
        let _ = copy_bidirectional(&mut client, &mut server).await;
    }
}
