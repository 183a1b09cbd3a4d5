//! Where orders are kept: [`OrderStore`], one store over SQLite and PostgreSQL.
//!
//! Every statement is the same text on both backends (`$n` placeholders, `ON CONFLICT`,
//! `RETURNING`; `items` is bound and read as JSON: PostgreSQL's `JSONB`, SQLite's `TEXT`). What really differs is written in [`backend`]. The schemas
//! differ too, in `migrations/<backend>/`.
//!
//! Every change writes its event (`order.v1.OrderEvent`) to the outbox `order_outbox` in
//! its own transaction (CONTRACT.md, Events): `meshwork-events` relays it to the broker, and
//! [`crate::order_events`] feeds it to the watchers, from the outbox, so every committed
//! change reaches them whatever happened to the call that made it.

mod backend;

use async_trait::async_trait;
use meshwork::{error::ApiError, server::Readiness};
use meshwork_database::{
    Columns, DatabasePoolConfig, DatabaseUrl, Db, FromColumns, Json, Migrations, OpenError,
};
use meshwork_events::{Append, NewEvent, Outbox};
use meshwork_proto::order::v1::{self as pb, OrderEventType};
use prost::Message;

use crate::domain::{Fingerprint, Idempotency, Order, OrderId, OrderStatus, RequestId, StoredOrder, UserId};
use backend::LockUser;

/// This service's outbox table (services may share one PostgreSQL database).
const OUTBOX: &str = "order_outbox";

const MIGRATIONS: Migrations = Migrations {
    table: "order_service_migrations",
    sqlite: &[
        (
            1,
            "create orders",
            include_str!("../../migrations/sqlite/0001_create_orders.sql"),
        ),
        (
            2,
            "request_id per user, with a fingerprint",
            include_str!("../../migrations/sqlite/0002_request_id_per_user.sql"),
        ),
        (3, "outbox", meshwork_events::sqlite_migration!("order_outbox")),
        (
            4,
            "deleted users",
            include_str!("../../migrations/sqlite/0004_deleted_users.sql"),
        ),
        (
            5,
            "a partial index of request_id",
            include_str!("../../migrations/sqlite/0005_partial_request_id_index.sql"),
        ),
        (
            6,
            "outbox pruned by seq",
            meshwork_events::prune_by_seq_migration!("order_outbox"),
        ),
    ],
    postgres: &[
        (
            1,
            "create orders",
            include_str!("../../migrations/postgres/0001_create_orders.sql"),
        ),
        (
            2,
            "request_id per user, with a fingerprint",
            include_str!("../../migrations/postgres/0002_request_id_per_user.sql"),
        ),
        (3, "outbox", meshwork_events::postgres_migration!("order_outbox")),
        (
            4,
            "deleted users",
            include_str!("../../migrations/postgres/0004_deleted_users.sql"),
        ),
        (
            5,
            "a partial index of request_id",
            include_str!("../../migrations/postgres/0005_partial_request_id_index.sql"),
        ),
        (
            6,
            "outbox pruned by seq",
            meshwork_events::prune_by_seq_migration!("order_outbox"),
        ),
    ],
};

/// The columns of an order row; a macro, not a `const`, because `concat!` takes literals.
macro_rules! columns {
    () => {
        "id, user_id, items, total_cents, status, create_time, update_time"
    };
}

/// Inserts unless the user's deletion has been seen (`deleted_users`) or the user used the
/// `request_id` already; one statement, so SQLite takes its write lock before the check.
const INSERT: &str = concat!(
    "INSERT INTO orders (",
    columns!(),
    ", request_id, request_fingerprint) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 ",
    "WHERE NOT EXISTS (SELECT 1 FROM deleted_users WHERE user_id = $2) ",
    "ON CONFLICT (user_id, request_id) WHERE request_id IS NOT NULL DO NOTHING"
);
const SELECT_BY_ID: &str = concat!("SELECT ", columns!(), " FROM orders WHERE id = $1");
const SELECT_BY_REQUEST_ID: &str = concat!(
    "SELECT ",
    columns!(),
    ", COALESCE(request_fingerprint, '') AS request_fingerprint FROM orders WHERE user_id = $1 AND request_id = $2"
);
/// `LIMIT CAST($3 AS BIGINT)`: a bare `LIMIT $3` makes SQLite prepare the statement again
/// on every call (see the user store's `SELECT_PAGE`).
const SELECT_PAGE: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM orders WHERE ($1 IS NULL OR user_id = $1) AND id > $2 ORDER BY id LIMIT CAST($3 AS BIGINT)"
);
/// One statement moves PENDING to CANCELLED, so two concurrent cancels cannot both
/// succeed; when it changes nothing, a read says why.
const CANCEL: &str = concat!(
    "UPDATE orders SET status = 'CANCELLED', update_time = $1 WHERE id = $2 AND status = 'PENDING' ",
    "RETURNING ",
    columns!()
);
/// The first statement of a deletion's cancellations (on SQLite it takes the write lock).
const MARK_DELETED: &str =
    "INSERT INTO deleted_users (user_id, delete_time) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING";
const CANCEL_ALL_OF_USER: &str = concat!(
    "UPDATE orders SET status = 'CANCELLED', update_time = $1 WHERE user_id = $2 AND status = 'PENDING' ",
    "RETURNING ",
    columns!()
);

/// What an insert did.
#[derive(Debug)]
pub enum Inserted {
    /// The order is new.
    Created,
    /// An order with the same user and `request_id` existed already: this one.
    Existing(Keyed),
}

/// An order found by its user and idempotency key, with the fingerprint of the request
/// that created it (empty when it was stored before fingerprints were).
#[derive(Debug)]
pub struct Keyed {
    pub order: Order,
    pub fingerprint: Fingerprint,
}

/// The storage the handlers need, in domain terms.
pub struct OrderStore {
    db: Db,
    outbox: Outbox,
}

impl OrderStore {
    /// Opens the database `url` names, migrated and ready.
    pub async fn open(url: &DatabaseUrl, pool: &DatabasePoolConfig) -> Result<Self, OpenError> {
        Ok(Self {
            db: Db::open(url, pool, &MIGRATIONS).await?,
            outbox: Outbox::notifying(OUTBOX, pb::order_service_server::SERVICE_NAME),
        })
    }

    /// The database and the outbox in it, for the relay and the watchers' feed.
    pub fn outbox(&self) -> (Db, Outbox) {
        (self.db.clone(), self.outbox.clone())
    }

    /// Stores `order` unless one of the same user with the same `request_id` exists (the
    /// database enforces this, so concurrent calls with one key create one order), or the
    /// user's deletion has been seen ([`StoreError::UserDeleted`]).
    #[tracing::instrument(name = "INSERT orders", skip_all, fields(otel.kind = "client", db.system = self.db.system(), db.operation = "INSERT", db.collection.name = "orders"))]
    pub async fn insert(&self, order: &Order, key: Option<&Idempotency>) -> Result<Inserted, StoreError> {
        let event = order_event(OrderEventType::Created, order, order.create_time);
        let row = (
            order.id.as_str(),
            order.user_id.as_str(),
            Json(&order.items),
            order.total_cents.get(),
            order.status.as_str(),
            order.create_time,
            order.update_time,
            key.map(|key| key.request_id.as_str()),
            key.map(|key| key.fingerprint.as_str()),
        );
        let mut tx = self.db.begin().await?;
        // Against a deletion's cancellations running at the same time (PostgreSQL).
        tx.lock_user(&order.user_id).await?;
        let created = tx.execute(INSERT, row).await? == 1;
        if created {
            tx.append(&self.outbox, &event).await?;
        }
        tx.commit().await?;
        if created {
            self.outbox.committed();
            return Ok(Inserted::Created);
        }
        let existing = match key {
            Some(key) => self.find_by_request_id(&order.user_id, &key.request_id).await?,
            None => None,
        };
        existing.map(Inserted::Existing).ok_or(StoreError::UserDeleted)
    }
    /// The order of `user_id` first created with this idempotency key, if any.
    #[tracing::instrument(name = "SELECT orders", skip_all, fields(otel.kind = "client", db.system = self.db.system(), db.operation = "SELECT", db.collection.name = "orders"))]
    pub async fn find_by_request_id(
        &self,
        user_id: &UserId,
        request_id: &RequestId,
    ) -> Result<Option<Keyed>, StoreError> {
        let keyed = (user_id.as_str(), request_id.as_str());
        self.db.fetch_optional(SELECT_BY_REQUEST_ID, keyed).await
    }

    /// The order with this id.
    #[tracing::instrument(name = "SELECT orders", skip_all, fields(otel.kind = "client", db.system = self.db.system(), db.operation = "SELECT", db.collection.name = "orders"))]
    pub async fn get(&self, id: &OrderId) -> Result<Order, StoreError> {
        let order = self.db.fetch_optional(SELECT_BY_ID, (id.as_str(),)).await?;
        order.ok_or(StoreError::NotFound)
    }

    /// Up to `limit` orders ordered by id, after the id `after`, of `user_id` when given.
    #[tracing::instrument(name = "SELECT orders", skip_all, fields(otel.kind = "client", db.system = self.db.system(), db.operation = "SELECT", db.collection.name = "orders"))]
    pub async fn list(
        &self,
        user_id: Option<&UserId>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Order>, StoreError> {
        let page = (user_id.map(UserId::as_str), after.unwrap_or(""), limit);
        self.db.fetch_all(SELECT_PAGE, page).await
    }

    /// Cancels a pending order at time `now` and returns it.
    #[tracing::instrument(name = "UPDATE orders", skip_all, fields(otel.kind = "client", db.system = self.db.system(), db.operation = "UPDATE", db.collection.name = "orders"))]
    pub async fn cancel(&self, id: &OrderId, now: i64) -> Result<Order, StoreError> {
        let mut tx = self.db.begin().await?;
        let cancelled: Option<Order> = tx.fetch_optional(CANCEL, (now, id.as_str())).await?;
        let Some(order) = cancelled else {
            // Nothing changed: the transaction is rolled back as it is dropped.
            drop(tx);
            return match self.get(id).await? {
                order if order.status == OrderStatus::Cancelled => Err(StoreError::AlreadyCancelled),
                _ => Err(StoreError::NotFound),
            };
        };
        tx.append(&self.outbox, &order_event(OrderEventType::Cancelled, &order, now))
            .await?;
        tx.commit().await?;
        self.outbox.committed();
        Ok(order)
    }

    /// The saga's step for a deleted user: records the deletion (later orders for the user
    /// are refused) and cancels the user's pending orders at time `now`, each with its
    /// event, in one transaction. Doing it again changes nothing and returns no order.
    #[tracing::instrument(name = "UPDATE orders", skip_all, fields(otel.kind = "client", db.system = self.db.system(), db.operation = "UPDATE", db.collection.name = "orders"))]
    pub async fn user_deleted(&self, user_id: &UserId, now: i64) -> Result<Vec<Order>, StoreError> {
        let mut tx = self.db.begin().await?;
        tx.lock_user(user_id).await?;
        tx.execute(MARK_DELETED, (user_id.as_str(), now)).await?;
        let cancelled: Vec<Order> = tx.fetch_all(CANCEL_ALL_OF_USER, (now, user_id.as_str())).await?;
        for order in &cancelled {
            tx.append(&self.outbox, &order_event(OrderEventType::Cancelled, order, now))
                .await?;
        }
        tx.commit().await?;
        self.outbox.committed();
        Ok(cancelled)
    }
}

/// The outbox row of one change to `order` (the order after it).
fn order_event(kind: OrderEventType, order: &Order, occur_time: i64) -> NewEvent {
    let subject = match kind {
        OrderEventType::Cancelled => "meshwork.order.v1.cancelled",
        OrderEventType::Created | OrderEventType::Unspecified => "meshwork.order.v1.created",
    };
    NewEvent::new(subject, occur_time, |id| {
        let event = pb::OrderEvent {
            event_id: id.to_string(),
            event_type: kind.into(),
            order: Some(order.clone().into()),
            occur_time: Some(meshwork::time::timestamp(occur_time)),
        };
        event.encode_to_vec()
    })
}

/// Readiness follows the database: does it answer?
#[async_trait]
impl Readiness for OrderStore {
    async fn is_ready(&self) -> bool {
        self.db.answers().await
    }
}

/// An order from a row of either backend.
impl FromColumns for Order {
    type Error = StoreError;
    fn from_columns(row: &impl Columns) -> Result<Self, StoreError> {
        let id = row.text("id")?;
        let status = row.text("status")?;
        let Some(status) = OrderStatus::from_stored(&status) else {
            return Err(StoreError::Corrupt(id, format!("status {status:?}")));
        };
        Ok(Order::from(StoredOrder {
            user_id: row.text("user_id")?,
            items: row.json("items")?,
            total_cents: row.integer("total_cents")?,
            status,
            create_time: row.integer("create_time")?,
            update_time: row.integer("update_time")?,
            id,
        }))
    }
}

/// An order and its request's fingerprint, from a row of [`SELECT_BY_REQUEST_ID`].
impl FromColumns for Keyed {
    type Error = StoreError;
    fn from_columns(row: &impl Columns) -> Result<Self, StoreError> {
        Ok(Keyed {
            order: Order::from_columns(row)?,
            fingerprint: Fingerprint::from_stored(row.text("request_fingerprint")?),
        })
    }
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("order not found")]
    NotFound,
    #[error("order already cancelled")]
    AlreadyCancelled,
    #[error("the user has been deleted")]
    UserDeleted,
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("stored order {0} is corrupt: {1}")]
    Corrupt(String, String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::RowNotFound => Self::NotFound,
            _ if meshwork_database::is_transient(&error) => Self::Unavailable(error),
            _ => Self::Database(error),
        }
    }
}

impl StoreError {
    /// The caller's view of this failure, for an order named `id`.
    pub fn into_api(self, id: &str) -> ApiError {
        match self {
            Self::NotFound => ApiError::NotFound {
                resource: "order",
                id: id.to_owned(),
            },
            Self::AlreadyCancelled => ApiError::FailedPrecondition {
                reason: "ORDER_ALREADY_CANCELLED",
                message: format!("order {id:?} is already cancelled"),
            },
            Self::UserDeleted => ApiError::FailedPrecondition {
                reason: "USER_NOT_FOUND",
                message: "the user of this order does not exist".into(),
            },
            Self::Unavailable(cause) => ApiError::database_unavailable("order", &cause),
            Self::Database(cause) => ApiError::internal(cause),
            corrupt @ Self::Corrupt(..) => ApiError::internal(corrupt),
        }
    }
}

#[cfg(test)]
mod tests {
    use meshwork_proto::order::v1::CreateOrderRequest;

    use super::*;
    use crate::domain::NewOrder;

    async fn store() -> (OrderStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::Sqlite(dir.path().join("order.db"));
        let pool = DatabasePoolConfig::default();
        (OrderStore::open(&url, &pool).await.unwrap(), dir)
    }

    /// A database with the schema of `version` (its first migrations only), for a test of
    /// the migrations after it: the database, its URL, and the directory that holds it.
    async fn migrated_to(version: usize) -> (Db, DatabaseUrl, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::Sqlite(dir.path().join("order.db"));
        let old = Migrations {
            sqlite: &MIGRATIONS.sqlite[..version],
            ..MIGRATIONS
        };
        let db = Db::open(&url, &DatabasePoolConfig::default(), &old)
            .await
            .unwrap();
        (db, url, dir)
    }

    fn order(user: &str, request_id: &str) -> (Order, Option<Idempotency>) {
        let new = NewOrder::try_from(CreateOrderRequest {
            user_id: user.into(),
            items: vec![pb::OrderItem {
                sku: "book".into(),
                quantity: 2,
                unit_price_cents: 1250,
            }],
            request_id: request_id.into(),
        });
        new.unwrap().place(1)
    }

    #[tokio::test]
    async fn orders_are_stored_once_per_request_id_listed_and_cancelled() {
        let (store, _dir) = store().await;
        let (first, key) = order("ada", "r-1");
        assert!(matches!(
            store.insert(&first, key.as_ref()).await,
            Ok(Inserted::Created)
        ));
        let (again, _) = order("ada", "r-1");
        match store.insert(&again, key.as_ref()).await {
            Ok(Inserted::Existing(existing)) => {
                assert_eq!(existing.order, first);
                assert_eq!(Some(existing.fingerprint), key.map(|key| key.fingerprint));
            }
            other => panic!("expected the first order, got {other:?}"),
        }
        assert_eq!(
            store.get(&first.id).await.unwrap(),
            first,
            "items round-trip as JSON"
        );
        let (bobs, _) = order("bob", "");
        store.insert(&bobs, None).await.unwrap();

        let ada = UserId::parse("ada".into()).unwrap();
        assert_eq!(
            store.list(Some(&ada), None, 10).await.unwrap(),
            std::slice::from_ref(&first)
        );
        assert_eq!(store.list(None, None, 10).await.unwrap().len(), 2);
        assert_eq!(
            store.list(None, Some(first.id.as_str()), 10).await.unwrap(),
            [bobs]
        );

        let cancelled = store.cancel(&first.id, 2).await.unwrap();
        assert_eq!(
            (cancelled.status, cancelled.update_time),
            (OrderStatus::Cancelled, 2)
        );
        assert!(matches!(
            store.cancel(&first.id, 3).await,
            Err(StoreError::AlreadyCancelled)
        ));
        let unknown = OrderId::parse("nope".into()).unwrap();
        assert!(matches!(
            store.cancel(&unknown, 3).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(store.get(&unknown).await, Err(StoreError::NotFound)));
        assert!(store.is_ready().await);
    }

    #[tokio::test]
    async fn a_request_id_is_scoped_to_its_user_and_stored_with_a_fingerprint() {
        let (store, _dir) = store().await;
        let (adas, ada_key) = order("ada", "r-1");
        store.insert(&adas, ada_key.as_ref()).await.unwrap();
        let (bobs, bob_key) = order("bob", "r-1");
        assert!(
            matches!(store.insert(&bobs, bob_key.as_ref()).await, Ok(Inserted::Created)),
            "another user's key is another request"
        );
        let ada = UserId::parse("ada".into()).unwrap();
        let first = store
            .find_by_request_id(&ada, &ada_key.as_ref().unwrap().request_id)
            .await;
        let first = first.unwrap().unwrap();
        assert_eq!(first.order, adas);
        assert_eq!(first.fingerprint, ada_key.unwrap().fingerprint);
        assert_ne!(first.fingerprint, bob_key.unwrap().fingerprint);
    }

    #[tokio::test]
    async fn each_change_writes_its_event_in_commit_order() {
        let (store, _dir) = store().await;
        let (placed, key) = order("ada", "r-1");
        store.insert(&placed, key.as_ref()).await.unwrap();
        store.insert(&placed, key.as_ref()).await.unwrap();
        store.cancel(&placed.id, 2).await.unwrap();
        let (db, outbox) = store.outbox();
        let events = outbox.after(&db, 0, 10).await.unwrap();
        let subjects: Vec<_> = events.iter().map(|event| event.subject.as_str()).collect();
        assert_eq!(
            subjects,
            ["meshwork.order.v1.created", "meshwork.order.v1.cancelled"],
            "a repeated insert changes nothing and writes nothing"
        );
        let cancelled = pb::OrderEvent::decode(events[1].payload.as_slice()).unwrap();
        assert_eq!(cancelled.event_id, events[1].event_id);
        assert_eq!(cancelled.event_type(), OrderEventType::Cancelled);
        let order = cancelled.order.unwrap();
        assert_eq!(
            (order.id.as_str(), order.status()),
            (placed.id.as_str(), pb::OrderStatus::Cancelled)
        );
    }

    #[tokio::test]
    async fn a_deleted_users_pending_orders_are_cancelled_once_and_new_ones_refused() {
        let (store, _dir) = store().await;
        let ada = UserId::parse("ada".into()).unwrap();
        let (pending, _) = order("ada", "");
        let (cancelled, _) = order("ada", "");
        let (bobs, _) = order("bob", "");
        for placed in [&pending, &cancelled, &bobs] {
            store.insert(placed, None).await.unwrap();
        }
        store.cancel(&cancelled.id, 2).await.unwrap();

        let done = store.user_deleted(&ada, 3).await.unwrap();
        assert_eq!(done.iter().map(|o| &o.id).collect::<Vec<_>>(), [&pending.id]);
        assert_eq!(
            store.get(&pending.id).await.unwrap().status,
            OrderStatus::Cancelled
        );
        assert_eq!(store.get(&bobs.id).await.unwrap().status, OrderStatus::Pending);
        assert!(
            store.user_deleted(&ada, 4).await.unwrap().is_empty(),
            "a redelivery changes nothing"
        );

        let (late, _) = order("ada", "");
        assert!(matches!(
            store.insert(&late, None).await,
            Err(StoreError::UserDeleted)
        ));
        assert!(matches!(store.get(&late.id).await, Err(StoreError::NotFound)));
        let (db, outbox) = store.outbox();
        let events = outbox.after(&db, 0, 10).await.unwrap();
        assert_eq!(
            events.len(),
            5,
            "3 created, 2 cancelled: nothing for the redelivery or the refusal"
        );
    }

    /// Version 5 rebuilds the table with a partial index of `request_id`: the orders stored
    /// before it are kept, a key stored before it still names its order, and orders without
    /// a key (not in that index) never conflict.
    #[tokio::test]
    async fn orders_stored_before_the_partial_key_index_keep_their_keys() {
        let (old, url, _dir) = migrated_to(4).await;
        let insert = concat!(
            "INSERT INTO orders (",
            columns!(),
            ", request_id, request_fingerprint) VALUES ($1, 'ada', '[]', 0, 'PENDING', 1, 1, $2, $3)"
        );
        let (keyed, key) = order("ada", "r-1");
        let key = key.unwrap();
        let fingerprint = key.fingerprint.as_str();
        old.execute(insert, (keyed.id.as_str(), "r-1", fingerprint))
            .await
            .unwrap();
        old.execute(insert, ("o-unkeyed", None::<&str>, None::<&str>))
            .await
            .unwrap();
        drop(old);

        let store = OrderStore::open(&url, &DatabasePoolConfig::default())
            .await
            .unwrap();
        let ada = UserId::parse("ada".into()).unwrap();
        assert_eq!(store.list(Some(&ada), None, 10).await.unwrap().len(), 2);
        let (again, _) = order("ada", "r-1");
        match store.insert(&again, Some(&key)).await {
            Ok(Inserted::Existing(existing)) => {
                assert_eq!(existing.order.id, keyed.id);
                assert_eq!(existing.fingerprint, key.fingerprint);
            }
            other => panic!("expected the order stored before, got {other:?}"),
        }
        for _ in 0..2 {
            let (unkeyed, _) = order("ada", "");
            assert!(matches!(
                store.insert(&unkeyed, None).await,
                Ok(Inserted::Created)
            ));
        }
        assert_eq!(store.list(Some(&ada), None, 10).await.unwrap().len(), 4);
    }

    #[tokio::test]
    async fn orders_stored_before_fingerprints_keep_their_key_and_accept_a_repeat() {
        let (old, url, _dir) = migrated_to(1).await;
        let insert = concat!(
            "INSERT INTO orders (",
            columns!(),
            ", request_id) VALUES ('o-1', 'ada', '[]', 0, 'PENDING', 1, 1, 'r-1')"
        );
        old.execute(insert, ()).await.unwrap();
        drop(old);

        let store = OrderStore::open(&url, &DatabasePoolConfig::default())
            .await
            .unwrap();
        let ada = UserId::parse("ada".into()).unwrap();
        let (_, key) = order("ada", "r-1");
        let key = key.unwrap();
        let first = store
            .find_by_request_id(&ada, &key.request_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.order.id.as_str(), "o-1");
        assert_eq!(first.fingerprint.as_str(), "", "unknown");
        assert!(key.fingerprint.repeats(&first.fingerprint));
        let (bobs, bob_key) = order("bob", "r-1");
        assert!(matches!(
            store.insert(&bobs, bob_key.as_ref()).await,
            Ok(Inserted::Created)
        ));
    }
}
