//! [`UserStore`] on PostgreSQL: the same statements as `sqlite.rs`, in PostgreSQL's
//! dialect (`$n` placeholders).

use async_trait::async_trait;
use meshwork::{
    config::DatabasePoolConfig,
    database::{self, Migrations, OpenError},
    server::Readiness,
};
use sqlx::{AssertSqlSafe, PgPool};

use super::{COLUMNS, StoreError, UserStore, user_from};
use crate::domain::{User, UserChanges};

const MIGRATIONS: Migrations = Migrations {
    table: "user_service_migrations",
    steps: &[(
        1,
        "create users",
        include_str!("../../migrations/postgres/0001_create_users.sql"),
    )],
};

pub struct PostgresUserStore {
    pool: PgPool,
}

impl PostgresUserStore {
    pub async fn open(url: &str, pool: &DatabasePoolConfig) -> Result<Self, OpenError> {
        let pool = database::open_postgres(url, pool, &MIGRATIONS).await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Readiness for PostgresUserStore {
    async fn is_ready(&self) -> bool {
        database::answers(&self.pool).await
    }
}

#[async_trait]
impl UserStore for PostgresUserStore {
    #[tracing::instrument(name = "INSERT users", skip_all, fields(otel.kind = "client", db.system = "postgresql", db.operation = "INSERT", db.collection.name = "users"))]
    async fn create(&self, user: &User) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, name, email, create_time, update_time) VALUES ($1, $2, $3, $4, $5)",
        )
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

    #[tracing::instrument(name = "SELECT users", skip_all, fields(otel.kind = "client", db.system = "postgresql", db.operation = "SELECT", db.collection.name = "users"))]
    async fn get(&self, id: &str) -> Result<User, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        user_from(row).map_err(StoreError::from_sqlx)
    }

    #[tracing::instrument(name = "SELECT users", skip_all, fields(otel.kind = "client", db.system = "postgresql", db.operation = "SELECT", db.collection.name = "users"))]
    async fn list(&self, after: Option<&str>, limit: i64) -> Result<Vec<User>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2");
        let rows = sqlx::query(AssertSqlSafe(sql))
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

    #[tracing::instrument(name = "UPDATE users", skip_all, fields(otel.kind = "client", db.system = "postgresql", db.operation = "UPDATE", db.collection.name = "users"))]
    async fn update(&self, changes: &UserChanges, now: i64) -> Result<User, StoreError> {
        let sql = format!(
            "UPDATE users SET name = COALESCE($1, name), email = COALESCE($2, email), update_time = $3 \
             WHERE id = $4 RETURNING {COLUMNS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(changes.name.as_ref().map(|n| n.as_str()))
            .bind(changes.email.as_ref().map(|e| e.as_str()))
            .bind(now)
            .bind(changes.id.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        user_from(row).map_err(StoreError::from_sqlx)
    }

    #[tracing::instrument(name = "DELETE users", skip_all, fields(otel.kind = "client", db.system = "postgresql", db.operation = "DELETE", db.collection.name = "users"))]
    async fn delete(&self, id: &str) -> Result<(), StoreError> {
        let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
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
