//! The feed behind `WatchOrders`: every order created or cancelled by this process (and,
//! on PostgreSQL, by the other replicas), for any number of watchers.
//!
//! A `tokio::sync::broadcast` channel: a publisher never waits for a slow watcher. A
//! watcher that falls more than [`CAPACITY`] events behind has lost events; its stream is
//! ended with `ABORTED` so it knows to re-read and watch again, rather than silently
//! missing orders. The same happens to every watcher when the feed itself had a gap
//! ([`OrderEvents::interrupted`]: the PostgreSQL relay lost its connection).
//!
//! An event is made into its response once, when published, and shared (`Arc`) by every
//! watcher: a watcher of another user's orders only compares a user id. At most
//! `max_watchers` watches are open at once (each holds a semaphore permit for its life);
//! one more is `RESOURCE_EXHAUSTED`. At shutdown open watches end with `UNAVAILABLE`, so
//! their clients re-list and watch again elsewhere.

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt};
use meshwork_proto::order::v1::{self as pb, OrderEventType};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::domain::{Order, UserId};

/// Events a watcher may fall behind by before it is cut off.
pub const CAPACITY: usize = 1024;
/// Watches open at once per process, unless configured (`MAX_WATCH_STREAMS`).
pub const DEFAULT_MAX_WATCHERS: usize = 1000;

/// What the feed carries; cloning it clones an `Arc`.
#[derive(Debug, Clone)]
enum FeedItem {
    /// One change to one order, as watchers are sent it.
    Event(Arc<pb::WatchOrdersResponse>),
    /// Changes may have been missed here.
    Gap,
}

/// The sending side, shared by the handlers.
#[derive(Clone)]
pub struct OrderEvents {
    sender: broadcast::Sender<FeedItem>,
    /// One permit per open watch.
    watchers: Arc<Semaphore>,
    max_watchers: usize,
}

/// Why a watch was not opened.
#[derive(Debug, thiserror::Error)]
#[error("{0} watch streams are open already, the most this server allows")]
pub struct TooManyWatchers(pub usize);

/// What a watcher is sent: an event, or the error that ends its stream.
type Message = Result<pb::WatchOrdersResponse, Status>;

/// The stream a WatchOrders call returns.
pub type WatchStream = Pin<Box<dyn Stream<Item = Message> + Send>>;

impl OrderEvents {
    /// A feed for at most `max_watchers` watches open at once.
    pub fn new(max_watchers: usize) -> Self {
        Self {
            sender: broadcast::channel(CAPACITY).0,
            watchers: Arc::new(Semaphore::new(max_watchers)),
            max_watchers,
        }
    }

    /// Tells every watcher. Having no watcher is normal, not an error.
    pub fn publish(&self, kind: OrderEventType, order: &Order) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        let response = pb::WatchOrdersResponse {
            event_type: kind.into(),
            order: Some(order.clone().into()),
        };
        let _no_watchers = self.sender.send(FeedItem::Event(Arc::new(response)));
    }

    /// Changes may have been missed: every open watch ends with `ABORTED`.
    pub fn interrupted(&self) {
        let _no_watchers = self.sender.send(FeedItem::Gap);
    }

    /// A stream of the events from now on (it subscribes before it returns), of
    /// `user_id`'s orders when given; or [`TooManyWatchers`] when every slot is taken. It
    /// ends after its first error, and when `shutdown` is cancelled (with `UNAVAILABLE`),
    /// so open watches never hold up a drain.
    pub fn watch(
        &self,
        user_id: Option<UserId>,
        shutdown: CancellationToken,
    ) -> Result<WatchStream, TooManyWatchers> {
        let permit = match self.watchers.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => return Err(TooManyWatchers(self.max_watchers)),
        };
        let watcher = Watcher {
            feed: BroadcastStream::new(self.sender.subscribe()),
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

/// One open watch: its subscription, its filter and its slot.
struct Watcher {
    feed: BroadcastStream<FeedItem>,
    user_id: Option<UserId>,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

impl Watcher {
    /// The next message for this watcher; `None` when its stream ends.
    async fn next(&mut self) -> Option<Message> {
        loop {
            let item = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Some(Err(Status::unavailable(
                    "the server is shutting down; list the orders and watch again",
                ))),
                item = self.feed.next() => item?,
            };
            if let Some(message) = message(item, self.user_id.as_ref()) {
                return Some(message);
            }
        }
    }
}

/// What a watcher of `user_id`'s orders (all, when `None`) is sent for one feed item.
fn message(item: Result<FeedItem, BroadcastStreamRecvError>, user_id: Option<&UserId>) -> Option<Message> {
    match item {
        Ok(FeedItem::Event(event)) => {
            let of_user = |id: &UserId| {
                event
                    .order
                    .as_ref()
                    .is_some_and(|order| order.user_id == id.as_str())
            };
            match user_id {
                Some(id) if !of_user(id) => None,
                _ => Some(Ok(event.as_ref().clone())),
            }
        }
        Ok(FeedItem::Gap) => Some(Err(Status::aborted(
            "the order feed was interrupted and events may be missing; list the orders and watch again",
        ))),
        Err(BroadcastStreamRecvError::Lagged(missed)) => Some(Err(Status::aborted(format!(
            "watcher fell {missed} events behind; list the orders and watch again"
        )))),
    }
}

#[cfg(test)]
mod tests {
    use meshwork_proto::order::v1::CreateOrderRequest;

    use super::*;
    use crate::domain::NewOrder;

    fn order_of(user: &str) -> Order {
        let new = NewOrder::try_from(CreateOrderRequest {
            user_id: user.into(),
            items: vec![pb::OrderItem {
                sku: "a".into(),
                quantity: 1,
                unit_price_cents: 1,
            }],
            request_id: String::new(),
        });
        new.unwrap().place(0).0
    }

    fn user(id: &str) -> Option<UserId> {
        Some(UserId::parse(id.into()).unwrap())
    }

    #[tokio::test]
    async fn a_watcher_gets_its_users_events_and_ends_at_shutdown() {
        let (events, shutdown) = (OrderEvents::new(DEFAULT_MAX_WATCHERS), CancellationToken::new());
        let mut ada = events.watch(user("ada"), shutdown.clone()).unwrap();
        let mut all = events.watch(None, shutdown.clone()).unwrap();
        events.publish(OrderEventType::Created, &order_of("bob"));
        events.publish(OrderEventType::Cancelled, &order_of("ada"));

        let event = ada.next().await.unwrap().unwrap();
        assert_eq!(event.event_type(), OrderEventType::Cancelled);
        assert_eq!(event.order.unwrap().user_id, "ada");
        assert_eq!(all.next().await.unwrap().unwrap().order.unwrap().user_id, "bob");
        assert_eq!(all.next().await.unwrap().unwrap().order.unwrap().user_id, "ada");

        shutdown.cancel();
        for watch in [&mut ada, &mut all] {
            let ended = watch.next().await.unwrap().unwrap_err();
            assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
            assert!(watch.next().await.is_none(), "the stream ends after its error");
        }
    }

    #[tokio::test]
    async fn a_gap_or_lag_ends_a_watch_with_aborted() {
        let (events, shutdown) = (OrderEvents::new(DEFAULT_MAX_WATCHERS), CancellationToken::new());
        let mut gapped = events.watch(None, shutdown.clone()).unwrap();
        events.interrupted();
        events.publish(OrderEventType::Created, &order_of("ada"));
        assert_eq!(
            gapped.next().await.unwrap().unwrap_err().code(),
            tonic::Code::Aborted
        );
        assert!(gapped.next().await.is_none(), "the stream ends after its error");

        let mut slow = events.watch(None, shutdown).unwrap();
        for _ in 0..=CAPACITY {
            events.publish(OrderEventType::Created, &order_of("ada"));
        }
        let error = slow.next().await.unwrap().unwrap_err();
        assert_eq!(error.code(), tonic::Code::Aborted);
        assert!(error.message().contains("1 events behind"), "{}", error.message());
        assert!(slow.next().await.is_none());
    }

    #[tokio::test]
    async fn at_most_max_watchers_are_open_at_once() {
        let (events, shutdown) = (OrderEvents::new(2), CancellationToken::new());
        let mut first = events.watch(None, shutdown.clone()).unwrap();
        let second = events.watch(user("ada"), shutdown.clone()).unwrap();
        assert_eq!(events.watch(None, shutdown.clone()).err().unwrap().0, 2);

        drop(second);
        let mut third = events
            .watch(None, shutdown.clone())
            .expect("a closed watch frees its slot");
        events.publish(OrderEventType::Created, &order_of("ada"));
        assert_eq!(first.next().await.unwrap().unwrap().order.unwrap().user_id, "ada");
        assert_eq!(third.next().await.unwrap().unwrap().order.unwrap().user_id, "ada");
    }

    #[test]
    fn an_event_is_made_once_and_shared_by_every_watcher() {
        let events = OrderEvents::new(2);
        let (mut one, mut two) = (events.sender.subscribe(), events.sender.subscribe());
        events.publish(OrderEventType::Created, &order_of("ada"));
        match (one.try_recv(), two.try_recv()) {
            (Ok(FeedItem::Event(one)), Ok(FeedItem::Event(two))) => assert!(Arc::ptr_eq(&one, &two)),
            other => panic!("expected one event each, got {other:?}"),
        }
    }
}
