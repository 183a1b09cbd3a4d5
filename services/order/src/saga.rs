//! The saga of a user's deletion, order-service's side: the durable consumer `order-service`
//! of `meshwork.user.v1.deleted` cancels the user's pending orders (CONTRACT.md, Events).
//!
//! Each cancellation is an ordinary change: an `order.v1.cancelled` event in the outbox and
//! a `WatchOrders` event. The message is acknowledged only after the commit (by
//! `meshwork-events`' consumer), and doing the step twice changes nothing, so redelivery is
//! harmless. The deletion is also recorded, so an order whose User check passed just before
//! the deletion cannot stay pending (see `store/backend.rs`).

use std::sync::Arc;

use meshwork::time::now_micros;
use meshwork_events::{
    EventsUrl,
    consumer::{self, Delivery, Failure, Subscription},
};
use meshwork_proto::user::v1::UserEvent;
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    domain::UserId,
    store::{OrderStore, StoreError},
};

/// What this service consumes, under the durable name CONTRACT.md gives it.
pub const USER_DELETED: Subscription = Subscription {
    durable: "order-service",
    subject: "meshwork.user.v1.deleted",
};

/// Consumes user deletions from `url` until `stop`.
pub fn start(url: EventsUrl, store: Arc<OrderStore>, stop: CancellationToken) -> JoinHandle<()> {
    consumer::start(
        url,
        "order-service",
        USER_DELETED,
        move |delivery| {
            let store = store.clone();
            async move { user_deleted(&store, delivery).await }
        },
        stop,
    )
}

/// Cancels the deleted user's pending orders.
async fn user_deleted(store: &OrderStore, delivery: Delivery) -> Result<(), Failure> {
    let event = UserEvent::decode(delivery.payload)
        .map_err(|error| Failure::Reject(format!("not a user.v1.UserEvent: {error}")))?;
    let user_id = event.user.map(|user| user.id).unwrap_or_default();
    let user_id = UserId::parse(user_id).map_err(|why| Failure::Reject(format!("bad user id: {why}")))?;
    match store.user_deleted(&user_id, now_micros()).await {
        Ok(cancelled) => {
            tracing::info!(
                user_id = user_id.as_str(),
                event_id = %delivery.event_id,
                cancelled = cancelled.len(),
                "user deleted: pending orders cancelled"
            );
            Ok(())
        }
        // The database is away: worth another try later.
        Err(error @ StoreError::Unavailable(_)) => Err(Failure::Retry(error.to_string())),
        // Anything else would fail again the same way, and hold up every later deletion
        // behind it (one message at a time): dropped, logged and counted instead.
        Err(error) => Err(Failure::Reject(error.to_string())),
    }
}
