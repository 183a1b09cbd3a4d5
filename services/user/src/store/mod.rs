//! Where users are kept: the [`UserStore`] trait, one implementation per backend.

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use meshwork::{
    config::{DatabasePoolConfig, DatabaseUrl},
    database::OpenError,
    error::ApiError,
    server::Readiness,
};

use crate::domain::{User, UserChanges};

/// The storage the handlers need, in domain terms. Implementations enforce email
/// uniqueness in the database itself, and are [`Readiness`] checks (does the database answer).
#[async_trait]
pub trait UserStore: Readiness {
    /// Stores a new user; [`StoreError::EmailTaken`] if its email is in use.
    async fn create(&self, user: &User) -> Result<(), StoreError>;
    /// The user with this id.
    async fn get(&self, id: &str) -> Result<User, StoreError>;
    /// Up to `limit` users ordered by id, after `after` when given.
    async fn list(&self, after: Option<&str>, limit: i64) -> Result<Vec<User>, StoreError>;
    /// Applies `changes` at time `now` and returns the changed user.
    async fn update(&self, changes: &UserChanges, now: i64) -> Result<User, StoreError>;
    /// Removes the user with this id.
    async fn delete(&self, id: &str) -> Result<(), StoreError>;
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("user not found")]
    NotFound,
    #[error("email already taken")]
    EmailTaken,
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl StoreError {
    /// Sorts a driver error: a unique-index violation is a taken email (the only unique
    /// column besides the server-chosen id), a lost connection is transient.
    fn from_sqlx(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::EmailTaken,
            _ if meshwork::database::is_transient(&error) => Self::Unavailable(error),
            _ => Self::Database(error),
        }
    }

    /// The caller's view of this failure, for a user named `id`.
    pub fn into_api(self, id: &str) -> ApiError {
        match self {
            Self::NotFound => ApiError::NotFound {
                resource: "user",
                id: id.to_owned(),
            },
            Self::EmailTaken => ApiError::AlreadyExists {
                reason: "EMAIL_ALREADY_EXISTS",
                message: "a user with this email already exists".into(),
            },
            Self::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                ApiError::Unavailable {
                    reason: "DATABASE_UNAVAILABLE",
                    message: "the user database is unavailable; retry later".into(),
                }
            }
            Self::Database(cause) => ApiError::internal(cause),
        }
    }
}

/// The columns of a user row, in every backend.
const COLUMNS: &str = "id, name, email, create_time, update_time";

/// A user from a row of either backend: the columns and their types are the same.
fn user_from<R>(row: R) -> Result<User, sqlx::Error>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
    })
}

/// Opens the store `url` names, migrated and ready.
pub async fn open(url: &DatabaseUrl, pool: &DatabasePoolConfig) -> Result<Arc<dyn UserStore>, OpenError> {
    Ok(match url {
        DatabaseUrl::Sqlite(path) => Arc::new(sqlite::SqliteUserStore::open(path).await?),
        DatabaseUrl::Postgres(url) => Arc::new(postgres::PostgresUserStore::open(url, pool).await?),
    })
}
