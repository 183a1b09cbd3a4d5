//! Where orders are kept: the [`OrderStore`] trait, one implementation per backend.

mod postgres;
mod sqlite;

use async_trait::async_trait;
use std::sync::Arc;

use meshwork::{
    config::{DatabasePoolConfig, DatabaseUrl},
    database::OpenError,
    error::ApiError,
    server::Readiness,
};

use crate::{
    domain::{Order, OrderStatus},
    order_events::OrderEvents,
};

/// What an insert did.
#[derive(Debug)]
pub enum Inserted {
    /// The order is new.
    Created,
    /// An order with the same `request_id` existed already: this one.
    Existing(Order),
}

/// The storage the handlers need, in domain terms; also a [`Readiness`] check (does the
/// database answer).
#[async_trait]
pub trait OrderStore: Readiness {
    /// Stores `order` unless one with the same `request_id` exists (the database enforces
    /// this, so concurrent calls with one key create one order).
    async fn insert(&self, order: &Order, request_id: Option<&str>) -> Result<Inserted, StoreError>;
    /// The order first created with this idempotency key, if any.
    async fn find_by_request_id(&self, request_id: &str) -> Result<Option<Order>, StoreError>;
    /// The order with this id.
    async fn get(&self, id: &str) -> Result<Order, StoreError>;
    /// Up to `limit` orders ordered by id, after `after`, of `user_id` when given.
    async fn list(
        &self,
        user_id: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Order>, StoreError>;
    /// Cancels a pending order at time `now` and returns it.
    async fn cancel(&self, id: &str, now: i64) -> Result<Order, StoreError>;
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("order not found")]
    NotFound,
    #[error("order already cancelled")]
    AlreadyCancelled,
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("stored order {0} is corrupt: {1}")]
    Corrupt(String, String),
}

impl StoreError {
    fn from_sqlx(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::RowNotFound => Self::NotFound,
            _ if meshwork::database::is_transient(&error) => Self::Unavailable(error),
            _ => Self::Database(error),
        }
    }

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
            Self::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                ApiError::Unavailable {
                    reason: "DATABASE_UNAVAILABLE",
                    message: "the order database is unavailable; retry later".into(),
                }
            }
            Self::Database(cause) => ApiError::internal(cause),
            corrupt @ Self::Corrupt(..) => ApiError::internal(corrupt),
        }
    }
}

/// An order from a row of either backend (whose SELECT gives `items` as JSON text).
fn order_from<R>(row: R) -> Result<Order, StoreError>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let column =
        |name: &str| -> Result<String, StoreError> { row.try_get(name).map_err(StoreError::from_sqlx) };
    let number = |name: &str| -> Result<i64, StoreError> { row.try_get(name).map_err(StoreError::from_sqlx) };
    let id = column("id")?;
    let (items, status) = (column("items")?, column("status")?);
    let corrupt = |why: String| StoreError::Corrupt(id.clone(), why);
    Ok(Order {
        items: serde_json::from_str(&items).map_err(|e| corrupt(e.to_string()))?,
        status: OrderStatus::from_stored(&status).ok_or_else(|| corrupt(format!("status {status:?}")))?,
        user_id: column("user_id")?,
        total_cents: number("total_cents")?,
        create_time: number("create_time")?,
        update_time: number("update_time")?,
        id,
    })
}

/// Opens the store `url` names, migrated and ready. With PostgreSQL, other replicas'
/// order changes are relayed into `events`; with SQLite there are no other replicas.
pub async fn open(
    url: &DatabaseUrl,
    pool: &DatabasePoolConfig,
    events: OrderEvents,
) -> Result<Arc<dyn OrderStore>, OpenError> {
    Ok(match url {
        DatabaseUrl::Sqlite(path) => Arc::new(sqlite::SqliteOrderStore::open(path).await?),
        DatabaseUrl::Postgres(url) => Arc::new(postgres::PostgresOrderStore::open(url, pool, events).await?),
    })
}
