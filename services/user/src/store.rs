//! Where users are kept: [`UserStore`], one store over SQLite and PostgreSQL.
//!
//! Every statement is the same text on both backends (`$n` placeholders, `RETURNING`,
//! `COALESCE`): the backends differ only in their migrations (column types, PostgreSQL's
//! `"C"` collation of ids), which live under `migrations/<backend>/`.
//!
//! Every change writes its event (`user.v1.UserEvent`) to the outbox `user_outbox` in its
//! own transaction (CONTRACT.md, Events); `meshwork-events` relays it to the broker. The
//! outbox's schema is that crate's, so both services' outboxes are the same table.

use async_trait::async_trait;
use meshwork::{error::ApiError, server::Readiness};
use meshwork_database::{Columns, DatabasePoolConfig, DatabaseUrl, Db, FromColumns, Migrations, OpenError};
use meshwork_events::{Append, NewEvent, Outbox};
use meshwork_proto::user::v1::{self as pb, UserEventType};
use prost::Message;

use crate::domain::{User, UserChanges, UserId};

/// This service's outbox table (services may share one PostgreSQL database).
const OUTBOX: &str = "user_outbox";

const MIGRATIONS: Migrations = Migrations {
    table: "user_service_migrations",
    sqlite: &[
        (
            1,
            "create users",
            include_str!("../migrations/sqlite/0001_create_users.sql"),
        ),
        (2, "outbox", meshwork_events::sqlite_migration!("user_outbox")),
        (
            3,
            "outbox pruned by seq",
            meshwork_events::prune_by_seq_migration!("user_outbox"),
        ),
    ],
    postgres: &[
        (
            1,
            "create users",
            include_str!("../migrations/postgres/0001_create_users.sql"),
        ),
        (2, "outbox", meshwork_events::postgres_migration!("user_outbox")),
        (
            3,
            "outbox pruned by seq",
            meshwork_events::prune_by_seq_migration!("user_outbox"),
        ),
    ],
};

/// The columns of a user row; a macro, not a `const`, because `concat!` takes literals.
macro_rules! columns {
    () => {
        "id, name, email, create_time, update_time"
    };
}

const INSERT: &str = concat!("INSERT INTO users (", columns!(), ") VALUES ($1, $2, $3, $4, $5)");
const SELECT_ONE: &str = concat!("SELECT ", columns!(), " FROM users WHERE id = $1");
/// `LIMIT CAST($2 AS BIGINT)`, not `LIMIT $2`: SQLite reads a bare parameter's value into
/// the plan, so every new binding of it expired the cached statement and each page was
/// parsed and planned again (`sqlite3Reprepare`, a ninth of a ListUsers call by callgrind).
const SELECT_PAGE: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM users WHERE id > $1 ORDER BY id LIMIT CAST($2 AS BIGINT)"
);
const UPDATE: &str = concat!(
    "UPDATE users SET name = COALESCE($1, name), email = COALESCE($2, email), update_time = $3 ",
    "WHERE id = $4 RETURNING ",
    columns!()
);
const DELETE: &str = concat!("DELETE FROM users WHERE id = $1 RETURNING ", columns!());

/// The storage the handlers need, in domain terms. Email uniqueness is enforced by the
/// database itself (a unique index), so concurrent calls cannot both take one email.
pub struct UserStore {
    db: Db,
    outbox: Outbox,
}

impl UserStore {
    /// Opens the database `url` names, migrated and ready.
    pub async fn open(url: &DatabaseUrl, pool: &DatabasePoolConfig) -> Result<Self, OpenError> {
        Ok(Self {
            db: Db::open(url, pool, &MIGRATIONS).await?,
            outbox: Outbox::new(OUTBOX, pb::user_service_server::SERVICE_NAME),
        })
    }

    /// The database and the outbox in it, for the relay.
    pub fn outbox(&self) -> (Db, Outbox) {
        (self.db.clone(), self.outbox.clone())
    }

    /// Stores a new user; [`StoreError::EmailTaken`] if its email is in use.
    #[tracing::instrument(name = "INSERT users", skip_all, fields(otel.kind = "client", db.system = self.db.system(), db.operation = "INSERT", db.collection.name = "users"))]
    pub async fn create(&self, user: &User) -> Result<(), StoreError> {
        let event = user_event(UserEventType::Created, user, user.create_time);
        let row = (
            user.id.as_str(),
            user.name.as_str(),
            user.email.as_str(),
            user.create_time,
            user.update_time,
        );
        let mut tx = self.db.begin().await?;
        tx.execute(INSERT, row).await?;
        tx.append(&self.outbox, &event).await?;
        tx.commit().await?;
        self.outbox.committed();
        Ok(())
    }

    /// The user with this id.
    #[tracing::instrument(name = "SELECT users", skip_all, fields(otel.kind = "client", db.system = self.db.system(), db.operation = "SELECT", db.collection.name = "users"))]
    pub async fn get(&self, id: &UserId) -> Result<User, StoreError> {
        let user = self.db.fetch_optional(SELECT_ONE, (id.as_str(),)).await?;
        user.ok_or(StoreError::NotFound)
    }

    /// Up to `limit` users ordered by id, after the id `after` when given.
    #[tracing::instrument(name = "SELECT users", skip_all, fields(otel.kind = "client", db.system = self.db.system(), db.operation = "SELECT", db.collection.name = "users"))]
    pub async fn list(&self, after: Option<&str>, limit: i64) -> Result<Vec<User>, StoreError> {
        self.db.fetch_all(SELECT_PAGE, (after.unwrap_or(""), limit)).await
    }

    /// Applies `changes` at time `now` and returns the changed user.
    #[tracing::instrument(name = "UPDATE users", skip_all, fields(otel.kind = "client", db.system = self.db.system(), db.operation = "UPDATE", db.collection.name = "users"))]
    pub async fn update(&self, changes: &UserChanges, now: i64) -> Result<User, StoreError> {
        let name = changes.name.as_ref().map(|name| name.as_str());
        let email = changes.email.as_ref().map(|email| email.as_str());
        let mut tx = self.db.begin().await?;
        let updated: Option<User> = tx
            .fetch_optional(UPDATE, (name, email, now, changes.id.as_str()))
            .await?;
        let user = updated.ok_or(StoreError::NotFound)?;
        tx.append(&self.outbox, &user_event(UserEventType::Updated, &user, now))
            .await?;
        tx.commit().await?;
        self.outbox.committed();
        Ok(user)
    }

    /// Removes the user with this id at time `now`; its event carries the user as it was.
    #[tracing::instrument(name = "DELETE users", skip_all, fields(otel.kind = "client", db.system = self.db.system(), db.operation = "DELETE", db.collection.name = "users"))]
    pub async fn delete(&self, id: &UserId, now: i64) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        let deleted: Option<User> = tx.fetch_optional(DELETE, (id.as_str(),)).await?;
        let user = deleted.ok_or(StoreError::NotFound)?;
        tx.append(&self.outbox, &user_event(UserEventType::Deleted, &user, now))
            .await?;
        tx.commit().await?;
        self.outbox.committed();
        Ok(())
    }
}

/// Readiness follows the database: does it answer?
#[async_trait]
impl Readiness for UserStore {
    async fn is_ready(&self) -> bool {
        self.db.answers().await
    }
}

/// The outbox row of one change to `user` (the user after it; for a deletion, as it was).
fn user_event(kind: UserEventType, user: &User, occur_time: i64) -> NewEvent {
    let subject = match kind {
        UserEventType::Created => "meshwork.user.v1.created",
        UserEventType::Updated => "meshwork.user.v1.updated",
        UserEventType::Deleted | UserEventType::Unspecified => "meshwork.user.v1.deleted",
    };
    NewEvent::new(subject, occur_time, |id| {
        let event = pb::UserEvent {
            event_id: id.to_string(),
            event_type: kind.into(),
            user: Some(user.clone().into()),
            occur_time: Some(meshwork::time::timestamp(occur_time)),
        };
        event.encode_to_vec()
    })
}

/// A user from a row of either backend: the columns and their types are the same.
impl FromColumns for User {
    type Error = StoreError;
    fn from_columns(row: &impl Columns) -> Result<Self, StoreError> {
        Ok(User::from_stored(
            row.text("id")?,
            row.text("name")?,
            row.text("email")?,
            row.integer("create_time")?,
            row.integer("update_time")?,
        ))
    }
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

impl From<sqlx::Error> for StoreError {
    /// Sorts a driver error: a unique-index violation is a taken email (the only unique
    /// column besides the server-chosen id), a lost connection is transient.
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::EmailTaken,
            _ if meshwork_database::is_transient(&error) => Self::Unavailable(error),
            _ => Self::Database(error),
        }
    }
}

impl StoreError {
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
            Self::Unavailable(cause) => ApiError::database_unavailable("user", &cause),
            Self::Database(cause) => ApiError::internal(cause),
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::domain::{Email, UserName};

    async fn store() -> (UserStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::Sqlite(dir.path().join("user.db"));
        let pool = DatabasePoolConfig::default();
        (UserStore::open(&url, &pool).await.unwrap(), dir)
    }

    fn user(email: &str) -> User {
        User {
            id: UserId::generate(),
            name: UserName::parse("Ada".into()).unwrap(),
            email: Email::parse(email.into()).unwrap(),
            create_time: 1,
            update_time: 1,
        }
    }

    #[tokio::test]
    async fn users_are_stored_changed_paged_and_deleted() {
        let (store, _dir) = store().await;
        let (ada, bob) = (user("ada@example.com"), user("bob@example.com"));
        store.create(&ada).await.unwrap();
        store.create(&bob).await.unwrap();
        assert!(matches!(
            store.create(&user("ada@example.com")).await,
            Err(StoreError::EmailTaken)
        ));
        assert_eq!(store.get(&ada.id).await.unwrap(), ada);

        assert_eq!(store.list(None, 1).await.unwrap(), std::slice::from_ref(&ada));
        assert_eq!(store.list(Some(ada.id.as_str()), 10).await.unwrap(), [bob]);

        let changes = UserChanges {
            id: ada.id.clone(),
            name: None,
            email: Some(Email::parse("ada@lovelace.org".into()).unwrap()),
        };
        let changed = store.update(&changes, 2).await.unwrap();
        assert_eq!(
            (changed.name.as_str(), changed.email.as_str()),
            ("Ada", "ada@lovelace.org")
        );
        assert_eq!(changed.update_time, 2);

        store.delete(&ada.id, 3).await.unwrap();
        assert!(matches!(store.get(&ada.id).await, Err(StoreError::NotFound)));
        assert!(matches!(
            store.delete(&ada.id, 3).await,
            Err(StoreError::NotFound)
        ));
        assert!(store.is_ready().await);
    }
}
