//! [`UserStore`] on SQLite.

use std::path::Path;

use async_trait::async_trait;
use meshwork::{
    database::{self, Migrations, OpenError},
    server::Readiness,
};
use sqlx::SqlitePool;

use super::{COLUMNS, StoreError, UserStore, user_from};
use crate::domain::{User, UserChanges};

const MIGRATIONS: Migrations = Migrations {
    table: "user_service_migrations",
    steps: &[(
        1,
        "create users",
        include_str!("../../migrations/sqlite/0001_create_users.sql"),
    )],
};

pub struct SqliteUserStore {
    pool: SqlitePool,
}

impl SqliteUserStore {
    pub async fn open(path: &Path) -> Result<Self, OpenError> {
        let pool = database::open_sqlite(path, &MIGRATIONS).await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Readiness for SqliteUserStore {
    async fn is_ready(&self) -> bool {
        database::answers(&self.pool).await
    }
}

#[async_trait]
impl UserStore for SqliteUserStore {
    #[tracing::instrument(name = "INSERT users", skip_all, fields(otel.kind = "client", db.system = "sqlite", db.operation = "INSERT", db.collection.name = "users"))]
    async fn create(&self, user: &User) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO users (id, name, email, create_time, update_time) VALUES (?, ?, ?, ?, ?)")
            .bind(&user.id)
            .bind(&user.name)
            .bind(&user.email)
            .bind(user.create_time)
            .bind(user.update_time)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    #[tracing::instrument(name = "SELECT users", skip_all, fields(otel.kind = "client", db.system = "sqlite", db.operation = "SELECT", db.collection.name = "users"))]
    async fn get(&self, id: &str) -> Result<User, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        user_from(row).map_err(StoreError::from_sqlx)
    }

    #[tracing::instrument(name = "SELECT users", skip_all, fields(otel.kind = "client", db.system = "sqlite", db.operation = "SELECT", db.collection.name = "users"))]
    async fn list(&self, after: Option<&str>, limit: i64) -> Result<Vec<User>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id > ? ORDER BY id LIMIT ?");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        rows.into_iter()
            .map(user_from)
            .collect::<Result<_, _>>()
            .map_err(StoreError::from_sqlx)
    }

    #[tracing::instrument(name = "UPDATE users", skip_all, fields(otel.kind = "client", db.system = "sqlite", db.operation = "UPDATE", db.collection.name = "users"))]
    async fn update(&self, changes: &UserChanges, now: i64) -> Result<User, StoreError> {
        let sql = format!(
            "UPDATE users SET name = COALESCE(?, name), email = COALESCE(?, email), update_time = ? \
             WHERE id = ? RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(changes.name.as_ref().map(|n| n.as_str()))
            .bind(changes.email.as_ref().map(|e| e.as_str()))
            .bind(now)
            .bind(changes.id.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        user_from(row).map_err(StoreError::from_sqlx)
    }

    #[tracing::instrument(name = "DELETE users", skip_all, fields(otel.kind = "client", db.system = "sqlite", db.operation = "DELETE", db.collection.name = "users"))]
    async fn delete(&self, id: &str) -> Result<(), StoreError> {
        let deleted = sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        match deleted.rows_affected() {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }
}
