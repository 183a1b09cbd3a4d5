//! The feed behind `WatchOrders`: every order created or cancelled by this process (and,
//! on PostgreSQL, by the other replicas), for any number of watchers.
//!
//! A `tokio::sync::broadcast` channel: a publisher never waits for a slow watcher. A
//! watcher that falls more than [`CAPACITY`] events behind has lost events; its stream is
//! ended with `ABORTED` so it knows to re-read and watch again, rather than silently
//! missing orders. The same happens to every watcher when the feed itself had a gap
//! ([`OrderEvents::interrupted`]: the PostgreSQL relay lost its connection).

use std::{future::ready, pin::Pin};

use futures::{Stream, StreamExt};
use meshwork::proto::order::v1::{self as pb, OrderEventType};
use tokio::sync::broadcast;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::domain::{Order, UserId};

/// Events a watcher may fall behind by before it is cut off.
pub const CAPACITY: usize = 1024;

/// What the feed carries.
#[derive(Debug, Clone)]
enum FeedItem {
    /// One change to one order.
    Event { kind: OrderEventType, order: Order },
    /// Changes may have been missed here.
    Gap,
}

/// The sending side, shared by the handlers.
#[derive(Clone)]
pub struct OrderEvents {
    sender: broadcast::Sender<FeedItem>,
}

/// What a watcher is sent: an event, or the error that ends its stream.
type Message = Result<pb::WatchOrdersResponse, Status>;

/// The stream a WatchOrders call returns.
pub type WatchStream = Pin<Box<dyn Stream<Item = Message> + Send>>;

impl OrderEvents {
    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(CAPACITY).0,
        }
    }

    /// Tells every watcher. Having no watcher is normal, not an error.
    pub fn publish(&self, kind: OrderEventType, order: &Order) {
        let _no_watchers = self.sender.send(FeedItem::Event {
            kind,
            order: order.clone(),
        });
    }

    /// Changes may have been missed: every open watch ends with `ABORTED`.
    pub fn interrupted(&self) {
        let _no_watchers = self.sender.send(FeedItem::Gap);
    }

    /// A stream of the events from now on (it subscribes before it returns), of
    /// `user_id`'s orders when given. It ends after its first error, and when `shutdown` is
    /// cancelled, so open watches never hold up a drain.
    pub fn watch(&self, user_id: Option<UserId>, shutdown: CancellationToken) -> WatchStream {
        let feed = BroadcastStream::new(self.sender.subscribe());
        let messages = feed.filter_map(move |item| ready(message(item, user_id.as_ref())));
        let until_error = messages.scan(true, |open, message| {
            let next = open.then_some(message);
            *open = matches!(next, Some(Ok(_)));
            ready(next)
        });
        Box::pin(until_error.take_until(shutdown.cancelled_owned()))
    }
}

/// What a watcher of `user_id`'s orders (all, when `None`) is sent for one feed item.
fn message(item: Result<FeedItem, BroadcastStreamRecvError>, user_id: Option<&UserId>) -> Option<Message> {
    match item {
        Ok(FeedItem::Event { order, .. }) if user_id.is_some_and(|id| *id != order.user_id) => None,
        Ok(FeedItem::Event { kind, order }) => Some(Ok(pb::WatchOrdersResponse {
            event_type: kind.into(),
            order: Some(order.into()),
        })),
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
    use meshwork::proto::order::v1::CreateOrderRequest;

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
        let (events, shutdown) = (OrderEvents::new(), CancellationToken::new());
        let mut ada = events.watch(user("ada"), shutdown.clone());
        let mut all = events.watch(None, shutdown.clone());
        events.publish(OrderEventType::Created, &order_of("bob"));
        events.publish(OrderEventType::Cancelled, &order_of("ada"));

        let event = ada.next().await.unwrap().unwrap();
        assert_eq!(event.event_type(), OrderEventType::Cancelled);
        assert_eq!(event.order.unwrap().user_id, "ada");
        assert_eq!(all.next().await.unwrap().unwrap().order.unwrap().user_id, "bob");
        assert_eq!(all.next().await.unwrap().unwrap().order.unwrap().user_id, "ada");

        shutdown.cancel();
        assert!(ada.next().await.is_none());
        assert!(all.next().await.is_none());
    }

    #[tokio::test]
    async fn a_gap_or_lag_ends_a_watch_with_aborted() {
        let (events, shutdown) = (OrderEvents::new(), CancellationToken::new());
        let mut gapped = events.watch(None, shutdown.clone());
        events.interrupted();
        events.publish(OrderEventType::Created, &order_of("ada"));
        assert_eq!(
            gapped.next().await.unwrap().unwrap_err().code(),
            tonic::Code::Aborted
        );
        assert!(gapped.next().await.is_none(), "the stream ends after its error");

        let mut slow = events.watch(None, shutdown);
        for _ in 0..=CAPACITY {
            events.publish(OrderEventType::Created, &order_of("ada"));
        }
        let error = slow.next().await.unwrap().unwrap_err();
        assert_eq!(error.code(), tonic::Code::Aborted);
        assert!(error.message().contains("1 events behind"), "{}", error.message());
        assert!(slow.next().await.is_none());
    }
}
