//! [`OrderStore`] on SQLite.

use std::path::Path;

use async_trait::async_trait;
use meshwork::{
    database::{self, Migrations, OpenError},
    server::Readiness,
};
use sqlx::{AssertSqlSafe, SqlitePool};

use super::{Inserted, OrderStore, StoreError, order_from};
use crate::domain::{Order, OrderStatus};

const MIGRATIONS: Migrations = Migrations {
    table: "order_service_migrations",
    steps: &[(
        1,
        "create orders",
        include_str!("../../migrations/sqlite/0001_create_orders.sql"),
    )],
};

const COLUMNS: &str = "id, user_id, items, total_cents, status, create_time, update_time";

pub struct SqliteOrderStore {
    pool: SqlitePool,
}

impl SqliteOrderStore {
    pub async fn open(path: &Path) -> Result<Self, OpenError> {
        let pool = database::open_sqlite(path, &MIGRATIONS).await?;
        Ok(Self { pool })
    }

    async fn fetch_optional(&self, filter: &str, value: &str) -> Result<Option<Order>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM orders WHERE {filter} = ?");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(value)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        row.map(order_from).transpose()
    }
}

#[async_trait]
impl Readiness for SqliteOrderStore {
    async fn is_ready(&self) -> bool {
        database::answers(&self.pool).await
    }
}

#[async_trait]
impl OrderStore for SqliteOrderStore {
    #[tracing::instrument(name = "INSERT orders", skip_all, fields(otel.kind = "client", db.system = "sqlite", db.operation = "INSERT", db.collection.name = "orders"))]
    async fn insert(&self, order: &Order, request_id: Option<&str>) -> Result<Inserted, StoreError> {
        let items = serde_json::to_string(&order.items).expect("items serialize to JSON");
        let inserted = sqlx::query(
            "INSERT INTO orders (id, user_id, items, total_cents, status, request_id, create_time, update_time) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING",
        )
        .bind(&order.id)
        .bind(&order.user_id)
        .bind(items)
        .bind(order.total_cents)
        .bind(order.status.as_str())
        .bind(request_id)
        .bind(order.create_time)
        .bind(order.update_time)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        if inserted.rows_affected() == 1 {
            return Ok(Inserted::Created);
        }
        let request_id = request_id.expect("only a request_id conflict skips the insert");
        match self.find_by_request_id(request_id).await? {
            Some(existing) => Ok(Inserted::Existing(existing)),
            None => Err(StoreError::NotFound),
        }
    }

    #[tracing::instrument(name = "SELECT orders", skip_all, fields(otel.kind = "client", db.system = "sqlite", db.operation = "SELECT", db.collection.name = "orders"))]
    async fn find_by_request_id(&self, request_id: &str) -> Result<Option<Order>, StoreError> {
        self.fetch_optional("request_id", request_id).await
    }

    #[tracing::instrument(name = "SELECT orders", skip_all, fields(otel.kind = "client", db.system = "sqlite", db.operation = "SELECT", db.collection.name = "orders"))]
    async fn get(&self, id: &str) -> Result<Order, StoreError> {
        self.fetch_optional("id", id).await?.ok_or(StoreError::NotFound)
    }

    #[tracing::instrument(name = "SELECT orders", skip_all, fields(otel.kind = "client", db.system = "sqlite", db.operation = "SELECT", db.collection.name = "orders"))]
    async fn list(
        &self,
        user_id: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Order>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM orders WHERE (?1 IS NULL OR user_id = ?1) AND id > ?2 ORDER BY id LIMIT ?3"
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

    #[tracing::instrument(name = "UPDATE orders", skip_all, fields(otel.kind = "client", db.system = "sqlite", db.operation = "UPDATE", db.collection.name = "orders"))]
    async fn cancel(&self, id: &str, now: i64) -> Result<Order, StoreError> {
        // One statement moves PENDING to CANCELLED, so two concurrent cancels cannot both
        // succeed; when it changes nothing, a read says why.
        let sql = format!(
            "UPDATE orders SET status = 'CANCELLED', update_time = ? WHERE id = ? AND status = 'PENDING' \
             RETURNING {COLUMNS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        match row {
            Some(row) => order_from(row),
            None => match self.get(id).await? {
                order if order.status == OrderStatus::Cancelled => Err(StoreError::AlreadyCancelled),
                _ => Err(StoreError::NotFound),
            },
        }
    }
}
