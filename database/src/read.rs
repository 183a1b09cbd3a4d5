//! One statement, written once, run on either backend: [`Db::fetch_optional`] and
//! [`Db::fetch_all`] take the SQL (`$1`-style placeholders), its values as a tuple
//! ([`Params`]) and the type each row becomes ([`FromColumns`]). On SQLite the statement
//! runs on the calling thread ([`crate::sqlite`] says why); on PostgreSQL through
//! sqlx's pool.
//!
//! ```text
//! let user: Option<User> = db.fetch_optional(SELECT_ONE, (id.as_str(),)).await?;
//! ```

use crate::{Db, FromColumns, Params, SqliteDb, postgres};

// The PostgreSQL arms box their futures: a future of sqlx's pool (it waits for a connection)
// is kilobytes (`pool.begin()`'s is 8.7 KB), and an async fn's future is as large as the
// largest future it awaits, so unboxed, every call on SQLite would carry PostgreSQL's size
// through each async fn up to the handler (CreateOrder's future was 38 KB), and allocate and
// copy it. One allocation more per statement on PostgreSQL, where a statement is a round trip.

impl Db {
    /// The row `sql` finds, if any (the first, if it finds several).
    pub async fn fetch_optional<T: FromColumns>(
        &self,
        sql: &'static str,
        params: impl Params<'_>,
    ) -> Result<Option<T>, T::Error> {
        match self {
            Self::Sqlite(sqlite) => read_sqlite(sqlite, sql, &params, 1).map(|mut rows| rows.pop()),
            Self::Postgres(pool) => Box::pin(postgres::fetch_optional(pool, sql, params)).await,
        }
    }

    /// Every row `sql` finds, in its order.
    pub async fn fetch_all<T: FromColumns>(
        &self,
        sql: &'static str,
        params: impl Params<'_>,
    ) -> Result<Vec<T>, T::Error> {
        match self {
            Self::Sqlite(sqlite) => read_sqlite(sqlite, sql, &params, usize::MAX),
            Self::Postgres(pool) => Box::pin(postgres::fetch_all(pool, sql, params)).await,
        }
    }
}

impl Db {
    /// Runs `sql`, which writes and returns no rows, in a transaction of its own; how many
    /// rows it changed.
    pub async fn execute(&self, sql: &'static str, params: impl Params<'_>) -> Result<u64, sqlx::Error> {
        match self {
            Self::Sqlite(_) => {
                let mut tx = self.begin().await?;
                let changed = tx.execute(sql, params).await?;
                tx.commit().await?;
                Ok(changed)
            }
            Self::Postgres(pool) => Box::pin(postgres::execute(pool, sql, params)).await,
        }
    }
}

/// The first `most` rows `sql` finds, read on the calling thread by one of the readers.
fn read_sqlite<'a, T: FromColumns>(
    sqlite: &SqliteDb,
    sql: &str,
    params: &impl Params<'a>,
    most: usize,
) -> Result<Vec<T>, T::Error> {
    sqlite
        .reads
        .read(|connection| crate::sqlite::fetch(connection, sql, params, most))
}
