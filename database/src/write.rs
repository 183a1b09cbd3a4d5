//! One write transaction, written once, run on either backend: [`Db::begin`] gives a
//! [`Tx`]; its statements take the SQL (`$1`-style placeholders), its values as a tuple
//! ([`Params`]) and, for rows, the type each becomes ([`FromColumns`]). On SQLite the
//! statements run on the calling thread on the one writer connection ([`crate::sqlite`] says
//! why); on PostgreSQL on a connection of sqlx's pool.
//!
//! ```text
//! let mut tx = db.begin().await?;
//! tx.execute(INSERT, (id.as_str(), now)).await?;
//! let user: Option<User> = tx.fetch_optional(UPDATE_RETURNING, (name, id.as_str())).await?;
//! tx.commit().await?;
//! ```
//!
//! A `Tx` dropped before its commit (an error returned with `?`, a cancelled call) is
//! rolled back.

use sqlx::{PgConnection, Postgres, Transaction};

use crate::{Db, FromColumns, Params, SqliteTx, postgres, sqlite};

/// A write transaction on either backend.
#[derive(Debug)]
pub enum Tx {
    Sqlite(SqliteTx),
    Postgres(Transaction<'static, Postgres>),
}

impl Db {
    /// Begins a write transaction. On SQLite it waits for the writers before it (at most
    /// `DATABASE_ACQUIRE_TIMEOUT`, as a PostgreSQL connection is waited for).
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match self {
            Self::Sqlite(sqlite) => sqlite.writer.begin().await.map(Tx::Sqlite),
            // Boxed, as sqlx's pool futures are (see `crate::read`).
            Self::Postgres(pool) => Box::pin(pool.begin()).await.map(Tx::Postgres),
        }
    }
}

impl Tx {
    /// Runs `sql`, which returns no rows; how many rows it changed.
    pub async fn execute(&mut self, sql: &'static str, params: impl Params<'_>) -> Result<u64, sqlx::Error> {
        match self {
            Self::Sqlite(tx) => sqlite::execute(tx.connection(), sql, &params),
            Self::Postgres(tx) => postgres::execute(&mut **tx, sql, params).await,
        }
    }

    /// The row `sql` returns, if any (the first, if it returns several).
    pub async fn fetch_optional<T: FromColumns>(
        &mut self,
        sql: &'static str,
        params: impl Params<'_>,
    ) -> Result<Option<T>, T::Error> {
        match self {
            Self::Sqlite(tx) => sqlite::fetch(tx.connection(), sql, &params, 1).map(|mut rows| rows.pop()),
            Self::Postgres(tx) => postgres::fetch_optional(&mut **tx, sql, params).await,
        }
    }

    /// Every row `sql` returns, in its order.
    pub async fn fetch_all<T: FromColumns>(
        &mut self,
        sql: &'static str,
        params: impl Params<'_>,
    ) -> Result<Vec<T>, T::Error> {
        match self {
            Self::Sqlite(tx) => sqlite::fetch(tx.connection(), sql, &params, usize::MAX),
            Self::Postgres(tx) => postgres::fetch_all(&mut **tx, sql, params).await,
        }
    }

    /// SQLite: the rowid of the row this transaction's last `INSERT` made (an `INTEGER
    /// PRIMARY KEY` is the rowid), read without a `RETURNING` clause, for which SQLite builds
    /// a temporary table on every run. `None` on PostgreSQL, which has no rowid.
    pub fn last_insert_rowid(&self) -> Option<i64> {
        match self {
            Self::Sqlite(tx) => Some(tx.connection().last_insert_rowid()),
            Self::Postgres(_) => None,
        }
    }

    /// The PostgreSQL connection, for what only PostgreSQL has (advisory locks); `None` on
    /// SQLite.
    pub fn postgres(&mut self) -> Option<&mut PgConnection> {
        match self {
            Self::Sqlite(_) => None,
            Self::Postgres(tx) => Some(&mut **tx),
        }
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(tx) => tx.commit().await,
            Self::Postgres(tx) => tx.commit().await,
        }
    }
}
