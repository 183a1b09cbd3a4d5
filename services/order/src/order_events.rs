//! The feed behind `WatchOrders`: every order created or cancelled by this process, for
//! any number of watchers.
//!
//! A `tokio::sync::broadcast` channel: a publisher never waits for a slow watcher. A
//! watcher that falls more than [`CAPACITY`] events behind has lost events; its stream is
//! ended with `ABORTED` so it knows to re-read and watch again, rather than silently
//! missing orders. The same happens to every watcher when the feed itself had a gap
//! ([`OrderEvents::interrupted`]: the PostgreSQL relay lost its connection).

use meshwork::proto::order::v1::{self as pb, OrderEventType};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::domain::Order;

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

/// The stream a WatchOrders call returns.
pub type WatchStream = ReceiverStream<Result<pb::WatchOrdersResponse, Status>>;

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

    /// A stream of the events from now on, of `user_id`'s orders when given. It ends when
    /// `shutdown` is cancelled, so open watches never hold up a drain.
    pub fn watch(&self, user_id: Option<String>, shutdown: CancellationToken) -> WatchStream {
        let mut events = self.sender.subscribe();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tx.closed() => return, // the watcher went away
                    event = events.recv() => event,
                };
                let message = match event {
                    Ok(FeedItem::Event { order, .. })
                        if user_id.as_ref().is_some_and(|id| *id != order.user_id) =>
                    {
                        continue;
                    }
                    Ok(FeedItem::Event { kind, order }) => Ok(pb::WatchOrdersResponse {
                        event_type: kind.into(),
                        order: Some(order.into()),
                    }),
                    Ok(FeedItem::Gap) => Err(Status::aborted(
                        "the order feed was interrupted and events may be missing; list the orders and watch again",
                    )),
                    Err(broadcast::error::RecvError::Lagged(missed)) => Err(Status::aborted(format!(
                        "watcher fell {missed} events behind; list the orders and watch again"
                    ))),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let ended = message.is_err();
                if tx.send(message).await.is_err() || ended {
                    return;
                }
            }
        });
        ReceiverStream::new(rx)
    }
}
