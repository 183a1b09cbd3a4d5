//! [`OrderStore`] on PostgreSQL, for several replicas on one database.
//!
//! Besides the statements of `sqlite.rs` in PostgreSQL's dialect, this store carries order
//! events between replicas: each change sends a `NOTIFY order_events` in its own
//! transaction (so it is delivered only if the change commits, and in commit order), and
//! each replica `LISTEN`s and feeds what other replicas did into its own [`OrderEvents`],
//! so a watcher on replica A sees orders created through replica B.

use async_trait::async_trait;
use meshwork::{
    config::DatabasePoolConfig,
    database::{self, Migrations, OpenError},
    proto::order::v1::OrderEventType,
    server::Readiness,
};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction, postgres::PgListener};
use uuid::Uuid;

use super::{Inserted, OrderStore, StoreError, order_from};
use crate::{
    domain::{Order, OrderStatus},
    order_events::OrderEvents,
};

const MIGRATIONS: Migrations = Migrations {
    table: "order_service_migrations",
    steps: &[(
        1,
        "create orders",
        include_str!("../../migrations/postgres/0001_create_orders.sql"),
    )],
};

const COLUMNS: &str = "id, user_id, items::text AS items, total_cents, status, create_time, update_time";
const CHANNEL: &str = "order_events";
/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; larger orders are sent by id.
const MAX_PAYLOAD_BYTES: usize = 7900;

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

pub struct PostgresOrderStore {
    pool: PgPool,
    /// This replica, in notices.
    origin: String,
}

impl PostgresOrderStore {
    /// Opens the store and starts relaying other replicas' changes into `events`.
    pub async fn open(url: &str, pool: &DatabasePoolConfig, events: OrderEvents) -> Result<Self, OpenError> {
        let pool = database::open_postgres(url, pool, &MIGRATIONS).await?;
        let origin = Uuid::now_v7().to_string();
        tokio::spawn(relay_notices(pool.clone(), origin.clone(), events));
        Ok(Self { pool, origin })
    }

    async fn notify(&self, tx: &mut Transaction<'_, Postgres>, order: &Order) -> Result<(), StoreError> {
        let mut notice = Notice {
            origin: self.origin.clone(),
            cancelled: order.status == OrderStatus::Cancelled,
            order_id: order.id.clone(),
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
            .execute(&mut **tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn fetch_optional(&self, filter: &str, value: &str) -> Result<Option<Order>, StoreError> {
        fetch_optional(&self.pool, filter, value).await
    }
}

async fn fetch_optional(pool: &PgPool, filter: &str, value: &str) -> Result<Option<Order>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM orders WHERE {filter} = $1");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(value)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::from_sqlx)?;
    row.map(order_from).transpose()
}

/// Listens for other replicas' notices until the process ends. `PgListener` reconnects by
/// itself, but notices sent while it was disconnected are lost: open watches are then ended
/// (`ABORTED`), so their clients re-list and watch again instead of silently missing orders.
async fn relay_notices(pool: PgPool, origin: String, events: OrderEvents) {
    let mut listener = loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => break listener,
                Err(error) => tracing::warn!(%error, "cannot LISTEN; retrying"),
            },
            Err(error) => tracing::warn!(%error, "cannot connect the order-event listener; retrying"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    };
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
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        let Ok(notice) = serde_json::from_str::<Notice>(notification.payload()) else {
            tracing::warn!(payload = notification.payload(), "unreadable order notice");
            continue;
        };
        if notice.origin == origin {
            continue;
        }
        let order = match notice.order {
            Some(order) => order,
            None => match fetch_optional(&pool, "id", &notice.order_id).await {
                Ok(Some(order)) => order,
                _ => continue,
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

#[async_trait]
impl Readiness for PostgresOrderStore {
    async fn is_ready(&self) -> bool {
        database::answers(&self.pool).await
    }
}

#[async_trait]
impl OrderStore for PostgresOrderStore {
    #[tracing::instrument(name = "INSERT orders", skip_all, fields(otel.kind = "client", db.system = "postgresql", db.operation = "INSERT", db.collection.name = "orders"))]
    async fn insert(&self, order: &Order, request_id: Option<&str>) -> Result<Inserted, StoreError> {
        let items = serde_json::to_string(&order.items).expect("items serialize to JSON");
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        let inserted = sqlx::query(
            "INSERT INTO orders (id, user_id, items, total_cents, status, request_id, create_time, update_time) \
             VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8) ON CONFLICT (request_id) DO NOTHING",
        )
        .bind(&order.id)
        .bind(&order.user_id)
        .bind(items)
        .bind(order.total_cents)
        .bind(order.status.as_str())
        .bind(request_id)
        .bind(order.create_time)
        .bind(order.update_time)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        if inserted.rows_affected() == 1 {
            self.notify(&mut tx, order).await?;
            tx.commit().await.map_err(StoreError::from_sqlx)?;
            return Ok(Inserted::Created);
        }
        drop(tx);
        let request_id = request_id.expect("only a request_id conflict skips the insert");
        match self.find_by_request_id(request_id).await? {
            Some(existing) => Ok(Inserted::Existing(existing)),
            None => Err(StoreError::NotFound),
        }
    }

    #[tracing::instrument(name = "SELECT orders", skip_all, fields(otel.kind = "client", db.system = "postgresql", db.operation = "SELECT", db.collection.name = "orders"))]
    async fn find_by_request_id(&self, request_id: &str) -> Result<Option<Order>, StoreError> {
        self.fetch_optional("request_id", request_id).await
    }

    #[tracing::instrument(name = "SELECT orders", skip_all, fields(otel.kind = "client", db.system = "postgresql", db.operation = "SELECT", db.collection.name = "orders"))]
    async fn get(&self, id: &str) -> Result<Order, StoreError> {
        self.fetch_optional("id", id).await?.ok_or(StoreError::NotFound)
    }

    #[tracing::instrument(name = "SELECT orders", skip_all, fields(otel.kind = "client", db.system = "postgresql", db.operation = "SELECT", db.collection.name = "orders"))]
    async fn list(
        &self,
        user_id: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Order>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM orders WHERE ($1::text IS NULL OR user_id = $1) AND id > $2 ORDER BY id LIMIT $3"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(user_id)
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        rows.into_iter().map(order_from).collect()
    }

    #[tracing::instrument(name = "UPDATE orders", skip_all, fields(otel.kind = "client", db.system = "postgresql", db.operation = "UPDATE", db.collection.name = "orders"))]
    async fn cancel(&self, id: &str, now: i64) -> Result<Order, StoreError> {
        let sql = format!(
            "UPDATE orders SET status = 'CANCELLED', update_time = $1 WHERE id = $2 AND status = 'PENDING' \
             RETURNING {COLUMNS}"
        );
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        let Some(row) = row else {
            drop(tx);
            return match self.get(id).await? {
                order if order.status == OrderStatus::Cancelled => Err(StoreError::AlreadyCancelled),
                _ => Err(StoreError::NotFound),
            };
        };
        let order = order_from(row)?;
        self.notify(&mut tx, &order).await?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(order)
    }
}
