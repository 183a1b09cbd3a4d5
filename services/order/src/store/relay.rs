//! What differs between the backends: order events between replicas.
//!
//! Several replicas share one PostgreSQL database, and a watcher on replica A must see the
//! orders created through replica B. So each change sends a `NOTIFY order_events` in its
//! own transaction (delivered only if the change commits, and in commit order), and each
//! replica `LISTEN`s in a relay task and feeds what other replicas did into its own
//! [`OrderEvents`]. A SQLite file belongs to one process: nobody else to tell.

use std::time::Duration;

use meshwork_database::Db;
use meshwork_proto::order::v1::OrderEventType;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, Sqlite, Transaction, postgres::PgListener};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{SELECT_BY_ID, select_one};
use crate::{
    domain::{Order, OrderStatus},
    order_events::OrderEvents,
};

const CHANNEL: &str = "order_events";
/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; larger orders are sent by id.
const MAX_PAYLOAD_BYTES: usize = 7900;

/// Telling the other replicas about a change, inside the change's transaction.
pub(super) trait Announce {
    /// `origin` is this replica; `order` is the order after the change.
    async fn announce(&mut self, origin: &str, order: &Order) -> Result<(), sqlx::Error>;
}

impl Announce for Transaction<'_, Sqlite> {
    async fn announce(&mut self, _origin: &str, _order: &Order) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

impl Announce for Transaction<'_, Postgres> {
    async fn announce(&mut self, origin: &str, order: &Order) -> Result<(), sqlx::Error> {
        let mut notice = Notice {
            origin: origin.to_owned(),
            cancelled: order.status == OrderStatus::Cancelled,
            order_id: order.id.as_str().to_owned(),
            order: Some(order.clone()),
        };
        let mut payload = serde_json::to_string(&notice).expect("a notice serializes");
        if payload.len() > MAX_PAYLOAD_BYTES {
            notice.order = None;
            payload = serde_json::to_string(&notice).expect("a notice serializes");
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&mut **self)
            .await?;
        Ok(())
    }
}

/// What one replica tells the others.
#[derive(Debug, Serialize, Deserialize)]
struct Notice {
    /// The replica that made the change (it has told its own watchers already).
    origin: String,
    cancelled: bool,
    order_id: String,
    /// The order after the change, unless it was too large for a notification.
    order: Option<Order>,
}

/// Starts relaying other replicas' notices into `events` until `stop` is cancelled or the
/// returned guard is dropped, whichever comes first.
pub(super) fn start(pool: PgPool, origin: String, events: OrderEvents, stop: CancellationToken) -> DropGuard {
    tokio::spawn(
        stop.clone()
            .run_until_cancelled_owned(relay_notices(pool, origin, events)),
    );
    stop.drop_guard()
}

/// Listens for other replicas' notices. `PgListener` reconnects by itself, but notices sent
/// while it was disconnected are lost: open watches are then ended (`ABORTED`), so their
/// clients re-list and watch again instead of silently missing orders.
async fn relay_notices(pool: PgPool, origin: String, events: OrderEvents) {
    let mut listener = loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => break listener,
                Err(error) => tracing::warn!(%error, "cannot LISTEN; retrying"),
            },
            Err(error) => tracing::warn!(%error, "cannot connect the order-event listener; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let db = Db::Postgres(pool);
    loop {
        // `try_recv`, not `recv`: `recv` reconnects silently, hiding the gap from us.
        let notification = match listener.try_recv().await {
            Ok(Some(notification)) => notification,
            Ok(None) => {
                tracing::warn!("order-event listener lost its connection; reconnecting");
                events.interrupted();
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "order-event listener lost its connection; reconnecting");
                events.interrupted();
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // A notice that cannot be read, or whose order cannot be read back, is a change the
        // watchers would miss: a gap (they end with ABORTED, re-list and watch again).
        let notice = match serde_json::from_str::<Notice>(notification.payload()) {
            Ok(notice) => notice,
            Err(error) => {
                let payload: String = notification.payload().chars().take(200).collect();
                tracing::warn!(%error, %payload, "unreadable order notice; watchers may miss an event");
                events.interrupted();
                continue;
            }
        };
        if notice.origin == origin {
            continue;
        }
        let order = match notice.order {
            Some(order) => order,
            None => match select_one(&db, SELECT_BY_ID, &notice.order_id).await {
                Ok(Some(order)) => order,
                Ok(None) => {
                    tracing::warn!(order_id = %notice.order_id, "noticed order not found; watchers may miss an event");
                    events.interrupted();
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, order_id = %notice.order_id, "cannot read a noticed order; watchers may miss an event");
                    events.interrupted();
                    continue;
                }
            },
        };
        let kind = if notice.cancelled {
            OrderEventType::Cancelled
        } else {
            OrderEventType::Created
        };
        events.publish(kind, &order);
    }
}
