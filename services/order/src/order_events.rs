//! The feed behind `WatchOrders`: every order event, read from the outbox in commit order
//! (so on PostgreSQL the other replicas' too), for any number of watchers.
//!
//! The outbox is the source of truth. One task per process, [`OrderEvents::follow`], reads
//! what was committed after what it last read, whenever this process commits one, another
//! replica's `NOTIFY` wakes it, or a second has passed, and hands each event to a
//! `tokio::sync::broadcast` channel: a publisher never waits for a slow watcher. A lost
//! notice or a database outage only delays the feed; nothing is skipped.
//!
//! A watch with `after_event_id` subscribes first, then replays from the outbox every event
//! after that one, then goes live, skipping the live events it has replayed already: no gap
//! and no duplicate between the two.
//!
//! A watcher that falls more than [`CAPACITY`] events behind has lost events; its stream is
//! ended with `ABORTED` (resume with the last event id, or re-list and watch again). An event
//! is made into its response once and shared (`Arc`) by every watcher. At most
//! `max_watchers` watches are open at once (each holds a semaphore permit for its life); one
//! more is `RESOURCE_EXHAUSTED`. At shutdown open watches end with `UNAVAILABLE`.

use std::{collections::VecDeque, pin::Pin, sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use meshwork_database::Db;
use meshwork_events::{EventId, Outbox, StoredEvent};
use meshwork_proto::order::v1 as pb;
use prost::Message as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::domain::UserId;

/// Events a watcher may fall behind by before it is cut off.
pub const CAPACITY: usize = 1024;
/// Watches open at once per process, unless configured (`MAX_WATCH_STREAMS`).
pub const DEFAULT_MAX_WATCHERS: usize = 1000;
/// Events read from the outbox at a time.
const PAGE: i64 = 256;
/// How often the outbox is read without a wake-up.
const POLL: Duration = Duration::from_secs(1);

/// One event, as watchers are sent it, with its place in commit order.
#[derive(Debug)]
struct FeedEvent {
    seq: i64,
    response: pb::WatchOrdersResponse,
}

/// The sending side, shared by the handlers. Cheap to clone.
#[derive(Clone)]
pub struct OrderEvents {
    sender: broadcast::Sender<Arc<FeedEvent>>,
    /// One permit per open watch.
    watchers: Arc<Semaphore>,
    max_watchers: usize,
    db: Db,
    outbox: Outbox,
}

/// Why a watch was not opened.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{0} watch streams are open already, the most this server allows")]
    TooManyWatchers(usize),
    #[error("event {0} is not among the events kept (at least 24 hours); list the orders, then watch")]
    NotKept(String),
    #[error("cannot read the order events: {0}")]
    Database(#[source] sqlx::Error),
}

/// What a watcher is sent: an event, or the error that ends its stream.
type Message = Result<pb::WatchOrdersResponse, Status>;

/// The stream a WatchOrders call returns.
pub type WatchStream = Pin<Box<dyn Stream<Item = Message> + Send>>;

impl OrderEvents {
    /// A feed of the events in `outbox` (in `db`), for at most `max_watchers` watches open
    /// at once. It is fed once [`follow`](Self::follow) runs.
    pub fn new(max_watchers: usize, db: Db, outbox: Outbox) -> Self {
        Self {
            sender: broadcast::channel(CAPACITY).0,
            watchers: Arc::new(Semaphore::new(max_watchers)),
            max_watchers,
            db,
            outbox,
        }
    }

    /// Starts reading the outbox into the feed, until `stop`, from its end as it is now:
    /// before the server takes a call, so that nothing a watch was promised (it skips what
    /// was committed before it began) is committed before the feed's starting point.
    pub async fn follow(self, stop: CancellationToken) -> Result<(), sqlx::Error> {
        let last = self.outbox.last_seq(&self.db).await?;
        tokio::spawn(self.read_from(last, stop));
        Ok(())
    }

    async fn read_from(self, mut last: i64, stop: CancellationToken) {
        let mut written = self.outbox.written();
        let mut failing = false;
        loop {
            if let Some(end) = self.unwatched_end().await {
                last = end;
                if !wait(&mut written, &stop).await {
                    return;
                }
                continue;
            }
            match self.outbox.after(&self.db, last, PAGE).await {
                Ok(events) => {
                    failing = false;
                    let full = events.len() as i64 == PAGE;
                    for event in events {
                        last = event.seq;
                        self.send(event);
                    }
                    if full {
                        // Catching up page after page never waits on the database (SQLite
                        // reads are answered at once): leave the other tasks their turn.
                        tokio::task::consume_budget().await;
                        continue;
                    }
                }
                Err(error) if !failing => {
                    tracing::warn!(%error, "cannot read the order events; watchers wait");
                    failing = true;
                }
                Err(_) => {}
            }
            if !wait(&mut written, &stop).await {
                return;
            }
        }
    }

    /// With no watcher, the end of the outbox as it is now: the feed moves there without
    /// reading the events (nobody would be sent them; each CreateOrder paid for that read).
    /// The end is read before the watchers are counted: a watch that subscribes after the
    /// count reads its own starting point later, so it skips everything up to `end` anyway.
    async fn unwatched_end(&self) -> Option<i64> {
        if self.sender.receiver_count() > 0 {
            return None;
        }
        let end = self.outbox.last_seq(&self.db).await.ok()?;
        (self.sender.receiver_count() == 0).then_some(end)
    }

    /// Tells every watcher. Having no watcher is normal, not an error.
    fn send(&self, event: StoredEvent) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        if let Some(event) = feed_event(&event) {
            let _no_watchers = self.sender.send(Arc::new(event));
        }
    }

    /// A stream of the events after `after` (a replay, then live) or from now on, of
    /// `user_id`'s orders when given. It ends after its first error, and when `shutdown` is
    /// cancelled (with `UNAVAILABLE`), so open watches never hold up a drain.
    pub async fn watch(
        &self,
        user_id: Option<UserId>,
        after: Option<EventId>,
        shutdown: CancellationToken,
    ) -> Result<WatchStream, WatchError> {
        let Ok(permit) = self.watchers.clone().try_acquire_owned() else {
            return Err(WatchError::TooManyWatchers(self.max_watchers));
        };
        // Subscribed before the replay is read: what commits meanwhile arrives live.
        let feed = BroadcastStream::new(self.sender.subscribe());
        // Without a resume point, what was committed before the call is not streamed, even
        // when the feed has not read it yet.
        let (replay, replayed_through) = match after {
            None => match self.outbox.last_seq(&self.db).await {
                Ok(seq) => (None, seq),
                Err(error) => return Err(WatchError::Database(error)),
            },
            Some(id) => match self.outbox.seq_of(&self.db, &id).await {
                Ok(Some(seq)) => {
                    let replay = Replay {
                        after: seq,
                        page: VecDeque::new(),
                        db: self.db.clone(),
                        outbox: self.outbox.clone(),
                    };
                    (Some(replay), seq)
                }
                Ok(None) => return Err(WatchError::NotKept(id.to_string())),
                Err(error) => return Err(WatchError::Database(error)),
            },
        };
        let watcher = Watcher {
            feed,
            replay,
            replayed_through,
            user_id,
            shutdown,
            _permit: permit,
        };
        Ok(Box::pin(futures::stream::unfold(
            Some(watcher),
            |watcher| async move {
                let mut watcher = watcher?;
                let message = watcher.next().await?;
                // The stream ends after its first error.
                let watcher = message.is_ok().then_some(watcher);
                Some((message, watcher))
            },
        )))
    }
}

/// Waits for a local commit, the poll interval or `stop`; `false` once stopped.
async fn wait(written: &mut tokio::sync::watch::Receiver<u64>, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        _ = written.changed() => true,
        () = tokio::time::sleep(POLL) => true,
    }
}

/// An outbox row as watchers see it; `None` (logged) for a row that is not an order event.
fn feed_event(event: &StoredEvent) -> Option<FeedEvent> {
    match pb::OrderEvent::decode(event.payload.as_slice()) {
        Ok(decoded) => Some(FeedEvent {
            seq: event.seq,
            response: pb::WatchOrdersResponse {
                event_type: decoded.event_type,
                order: decoded.order,
                event_id: decoded.event_id,
            },
        }),
        Err(error) => {
            tracing::error!(%error, seq = event.seq, "an outbox row is not an order event; watchers skip it");
            None
        }
    }
}

/// The events a resuming watch still has to read from the outbox.
struct Replay {
    /// The last event read.
    after: i64,
    page: VecDeque<StoredEvent>,
    db: Db,
    outbox: Outbox,
}

/// One open watch: its subscription, its replay, its filter and its slot.
struct Watcher {
    feed: BroadcastStream<Arc<FeedEvent>>,
    /// Until it has caught up with the outbox.
    replay: Option<Replay>,
    /// Live events up to here were replayed already (or committed before the watch began).
    replayed_through: i64,
    user_id: Option<UserId>,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

impl Watcher {
    /// The next message for this watcher; `None` when its stream ends.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if self.shutdown.is_cancelled() {
                return Some(Err(shutting_down()));
            }
            let event = match self.replay.as_mut() {
                Some(replay) => match tokio::select! {
                    biased;
                    () = self.shutdown.cancelled() => return Some(Err(shutting_down())),
                    next = replay.next() => next,
                } {
                    Ok(Some(event)) => event,
                    Ok(None) => {
                        self.replay = None;
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot replay order events");
                        return Some(Err(Status::unavailable(
                            "cannot read the order events now; watch again with the last event id",
                        )));
                    }
                },
                None => {
                    let item = tokio::select! {
                        biased;
                        () = self.shutdown.cancelled() => return Some(Err(shutting_down())),
                        item = self.feed.next() => item?,
                    };
                    match item {
                        Ok(event) if event.seq <= self.replayed_through => continue,
                        Ok(event) => event,
                        Err(BroadcastStreamRecvError::Lagged(missed)) => {
                            return Some(Err(Status::aborted(format!(
                                "watcher fell {missed} events behind; watch again with the last event id, or list the orders and watch again"
                            ))));
                        }
                    }
                }
            };
            if self.replay.is_some() {
                self.replayed_through = event.seq;
            }
            if self.wants(&event.response) {
                return Some(Ok(event.response.clone()));
            }
        }
    }

    fn wants(&self, event: &pb::WatchOrdersResponse) -> bool {
        match &self.user_id {
            Some(id) => event
                .order
                .as_ref()
                .is_some_and(|order| order.user_id == id.as_str()),
            None => true,
        }
    }
}

impl Replay {
    /// The next event to replay, or `None` once the outbox has no more.
    async fn next(&mut self) -> Result<Option<Arc<FeedEvent>>, sqlx::Error> {
        loop {
            if self.page.is_empty() {
                // As in `read_from`: a replay that matches nothing reads page after page.
                tokio::task::consume_budget().await;
                self.page = self.outbox.after(&self.db, self.after, PAGE).await?.into();
            }
            let Some(row) = self.page.pop_front() else {
                return Ok(None);
            };
            self.after = row.seq;
            if let Some(event) = feed_event(&row) {
                return Ok(Some(Arc::new(event)));
            }
        }
    }
}

fn shutting_down() -> Status {
    Status::unavailable("the server is shutting down; list the orders and watch again")
}

#[cfg(test)]
mod tests {
    use meshwork_database::{DatabasePoolConfig, DatabaseUrl};
    use meshwork_proto::order::v1::{CreateOrderRequest, OrderEventType};

    use super::*;
    use crate::{
        domain::{NewOrder, Order},
        store::OrderStore,
    };

    /// A store on a fresh SQLite file and a followed feed of its events.
    async fn feed(max_watchers: usize) -> (OrderStore, OrderEvents, CancellationToken, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::Sqlite(dir.path().join("order.db"));
        let store = OrderStore::open(&url, &DatabasePoolConfig::default())
            .await
            .unwrap();
        let (db, outbox) = store.outbox();
        let events = OrderEvents::new(max_watchers, db, outbox);
        let stop = CancellationToken::new();
        events.clone().follow(stop.clone()).await.unwrap();
        (store, events, stop, dir)
    }

    async fn place(store: &OrderStore, user: &str) -> Order {
        let new = NewOrder::try_from(CreateOrderRequest {
            user_id: user.into(),
            items: vec![pb::OrderItem {
                sku: "a".into(),
                quantity: 1,
                unit_price_cents: 1,
            }],
            request_id: String::new(),
        });
        let (order, _) = new.unwrap().place(meshwork::time::now_micros());
        store.insert(&order, None).await.unwrap();
        order
    }

    fn user(id: &str) -> Option<UserId> {
        Some(UserId::parse(id.into()).unwrap())
    }

    async fn next(watch: &mut WatchStream) -> Message {
        let next = tokio::time::timeout(Duration::from_secs(5), watch.next()).await;
        next.expect("a message within 5 s").expect("the stream goes on")
    }

    #[tokio::test]
    async fn a_watcher_gets_its_users_events_with_ids_and_ends_at_shutdown() {
        let (store, events, _stop, _dir) = feed(DEFAULT_MAX_WATCHERS).await;
        let shutdown = CancellationToken::new();
        let mut ada = events.watch(user("ada"), None, shutdown.clone()).await.unwrap();
        let mut all = events.watch(None, None, shutdown.clone()).await.unwrap();
        place(&store, "bob").await;
        let adas = place(&store, "ada").await;
        store
            .cancel(&adas.id, meshwork::time::now_micros())
            .await
            .unwrap();

        let created = next(&mut ada).await.unwrap();
        assert_eq!(created.event_type(), OrderEventType::Created);
        let cancelled = next(&mut ada).await.unwrap();
        assert_eq!(cancelled.event_type(), OrderEventType::Cancelled);
        assert_eq!(cancelled.order.unwrap().id, adas.id.as_str());
        assert_ne!(created.event_id, cancelled.event_id);
        assert!(
            EventId::parse(&created.event_id).is_some(),
            "{}",
            created.event_id
        );
        assert_eq!(next(&mut all).await.unwrap().order.unwrap().user_id, "bob");
        assert_eq!(next(&mut all).await.unwrap().event_id, created.event_id);

        shutdown.cancel();
        for watch in [&mut ada, &mut all] {
            let ended = next(watch).await.unwrap_err();
            assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
            assert!(watch.next().await.is_none(), "the stream ends after its error");
        }
    }

    /// The feed skips reading while nobody watches: a watch that begins later gets what is
    /// committed after it began, and nothing from before.
    #[tokio::test]
    async fn a_watch_after_unwatched_orders_gets_only_the_orders_after_it() {
        let (store, events, _stop, _dir) = feed(DEFAULT_MAX_WATCHERS).await;
        for _ in 0..3 {
            place(&store, "ada").await;
        }
        let mut watch = events.watch(None, None, CancellationToken::new()).await.unwrap();
        let later = place(&store, "bob").await;
        let first = next(&mut watch).await.unwrap();
        assert_eq!(first.order.unwrap().id, later.id.as_str());
    }

    #[tokio::test]
    async fn a_resumed_watch_replays_what_it_missed_then_goes_live_without_duplicates() {
        let (store, events, _stop, _dir) = feed(DEFAULT_MAX_WATCHERS).await;
        let shutdown = CancellationToken::new();
        let mut first = events.watch(None, None, shutdown.clone()).await.unwrap();
        place(&store, "ada").await;
        let seen = next(&mut first).await.unwrap();
        drop(first);
        // Missed while no watch was open.
        let missed = [place(&store, "ada").await, place(&store, "bob").await];

        let after = EventId::parse(&seen.event_id);
        let mut resumed = events.watch(None, after, shutdown.clone()).await.unwrap();
        for order in &missed {
            assert_eq!(
                next(&mut resumed).await.unwrap().order.unwrap().id,
                order.id.as_str()
            );
        }
        let live = place(&store, "cy").await;
        assert_eq!(
            next(&mut resumed).await.unwrap().order.unwrap().id,
            live.id.as_str()
        );
        // The next message is the next order: nothing was sent twice.
        let later = place(&store, "dee").await;
        assert_eq!(
            next(&mut resumed).await.unwrap().order.unwrap().id,
            later.id.as_str()
        );
    }

    #[tokio::test]
    async fn resuming_after_an_event_that_is_not_kept_is_refused() {
        let (_store, events, _stop, _dir) = feed(DEFAULT_MAX_WATCHERS).await;
        let unknown = EventId::generate();
        let refused = events.watch(None, Some(unknown), CancellationToken::new()).await;
        assert!(matches!(refused, Err(WatchError::NotKept(_))));
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_ends_with_aborted() {
        let (_store, events, _stop, _dir) = feed(DEFAULT_MAX_WATCHERS).await;
        let mut slow = events.watch(None, None, CancellationToken::new()).await.unwrap();
        for seq in 0..=CAPACITY as i64 {
            let response = pb::WatchOrdersResponse::default();
            events
                .sender
                .send(Arc::new(FeedEvent {
                    seq: seq + 1,
                    response,
                }))
                .unwrap();
        }
        let error = next(&mut slow).await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::Aborted);
        assert!(error.message().contains("1 events behind"), "{}", error.message());
        assert!(slow.next().await.is_none());
    }

    #[tokio::test]
    async fn at_most_max_watchers_are_open_at_once() {
        let (store, events, _stop, _dir) = feed(2).await;
        let shutdown = CancellationToken::new();
        let mut first = events.watch(None, None, shutdown.clone()).await.unwrap();
        let second = events.watch(user("ada"), None, shutdown.clone()).await.unwrap();
        let refused = events.watch(None, None, shutdown.clone()).await;
        assert!(matches!(refused, Err(WatchError::TooManyWatchers(2))));

        drop(second);
        let mut third = events
            .watch(None, None, shutdown.clone())
            .await
            .expect("a closed watch frees its slot");
        place(&store, "ada").await;
        assert_eq!(next(&mut first).await.unwrap().order.unwrap().user_id, "ada");
        assert_eq!(next(&mut third).await.unwrap().order.unwrap().user_id, "ada");
    }
}
