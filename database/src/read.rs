//! One read statement, written once, run on either backend: [`Db::fetch_optional`] and
//! [`Db::fetch_all`] take the SQL (`$1`-style placeholders), its values as a tuple
//! ([`Params`]) and the type each row becomes ([`FromColumns`]). On SQLite the statement
//! runs on the calling thread ([`crate::SqliteReaders`] says why); on PostgreSQL through
//! sqlx's pool.
//!
//! ```text
//! let user: Option<User> = db.fetch_optional(SELECT_ONE, (id.as_str(),)).await?;
//! ```

use sqlx::{
    Encode, Postgres, Type,
    postgres::{PgArguments, PgRow},
    query::Query,
};

use crate::{Columns, Db, SqliteDb, sqlite_reads::bind_numbered};

/// What a row of a read becomes: a store implements it for its domain types, with its own
/// error (which a driver's error converts into).
pub trait FromColumns: Sized {
    type Error: From<sqlx::Error>;
    fn from_columns(row: &impl Columns) -> Result<Self, Self::Error>;
}

/// A value both backends bind: `&str`, `i64`, and their `Option`s (`'a`: what it borrows).
pub trait Param<'a>: Encode<'a, Postgres> + Type<Postgres> + rusqlite::ToSql + Send {}

impl<'a, T: Encode<'a, Postgres> + Type<Postgres> + rusqlite::ToSql + Send> Param<'a> for T {}

type PgQuery<'q> = Query<'q, Postgres, PgArguments>;

/// The values of a statement's placeholders, in order: `$1` is the tuple's first.
pub trait Params<'a>: Send {
    fn bind_postgres(self, query: PgQuery<'_>) -> PgQuery<'_>;
    fn bind_sqlite(&self, statement: &mut rusqlite::Statement<'_>) -> rusqlite::Result<()>;
}

macro_rules! params_tuple {
    ($($index:tt $value:ident),+) => {
        impl<'a, $($value: Param<'a>),+> Params<'a> for ($($value,)+) {
            fn bind_postgres(self, query: PgQuery<'_>) -> PgQuery<'_> {
                query$(.bind(self.$index))+
            }
            fn bind_sqlite(&self, statement: &mut rusqlite::Statement<'_>) -> rusqlite::Result<()> {
                $(bind_numbered(statement, $index + 1, &self.$index)?;)+
                Ok(())
            }
        }
    };
}

/// A statement without placeholders.
impl Params<'_> for () {
    fn bind_postgres(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query
    }
    fn bind_sqlite(&self, _statement: &mut rusqlite::Statement<'_>) -> rusqlite::Result<()> {
        Ok(())
    }
}

params_tuple!(0 A);
params_tuple!(0 A, 1 B);
params_tuple!(0 A, 1 B, 2 C);
params_tuple!(0 A, 1 B, 2 C, 3 D);

impl Db {
    /// The row `sql` finds, if any (the first, if it finds several).
    pub async fn fetch_optional<T: FromColumns>(
        &self,
        sql: &'static str,
        params: impl Params<'_>,
    ) -> Result<Option<T>, T::Error> {
        match self {
            Self::Sqlite(sqlite) => read_sqlite(sqlite, sql, &params, 1).map(|mut rows| rows.pop()),
            Self::Postgres(pool) => {
                let row: Option<PgRow> = params
                    .bind_postgres(sqlx::query(sql))
                    .fetch_optional(pool)
                    .await?;
                row.as_ref().map(T::from_columns).transpose()
            }
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
            Self::Postgres(pool) => {
                let rows: Vec<PgRow> = params.bind_postgres(sqlx::query(sql)).fetch_all(pool).await?;
                rows.iter().map(T::from_columns).collect()
            }
        }
    }
}

/// The first `most` rows `sql` finds, read on the calling thread: the statement prepared
/// (or taken from the connection's cache), `params` bound, the rows stepped through.
fn read_sqlite<'a, T: FromColumns>(
    sqlite: &SqliteDb,
    sql: &str,
    params: &impl Params<'a>,
    most: usize,
) -> Result<Vec<T>, T::Error> {
    sqlite.reads.read(|connection| {
        let mut statement = connection.prepare_cached(sql).map_err(driver)?;
        params.bind_sqlite(&mut statement).map_err(driver)?;
        let mut rows = statement.raw_query();
        let mut found = Vec::new();
        while found.len() < most
            && let Some(row) = rows.next().map_err(driver)?
        {
            found.push(T::from_columns(row)?);
        }
        Ok(found)
    })
}

fn driver(error: rusqlite::Error) -> sqlx::Error {
    crate::sqlite_reads::ReadError::from_driver(error)
}
