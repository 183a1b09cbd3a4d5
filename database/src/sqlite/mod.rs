//! SQLite through the `rusqlite` driver, on the calling thread: reads ([`SqliteReaders`]) and
//! the one writer ([`SqliteWriter`]).
//!
//! Why not sqlx's SQLite driver: it gives every connection a thread of its own, a statement
//! is a message to that thread and its rows a message back, and its pool pings a connection
//! on that thread whenever it is returned. On a loaded core that was three to four context
//! switches and six system calls per point read (`perf stat` on `GetUser`: 3.4 and 7 per
//! call, against 0.75 system calls for a call with no database), and five round trips per
//! write transaction (begin, two statements, commit, the ping), several times the cost of
//! the statements themselves. A statement on a local file in WAL mode takes microseconds,
//! so it is run where the call is. Waiting is what must not hold a thread: readers never
//! wait (WAL), and writers wait for one another asynchronously, on [`SqliteWriter`]'s lock.
//!
//! sqlx still opens the file and runs the migrations (`crate::open`), before either of these.

mod reads;
mod writer;

use std::{borrow::Cow, ffi::CStr};

use rusqlite::{Connection, Statement, ToSql};

pub use reads::SqliteReaders;
pub use writer::{SqliteTx, SqliteWriter};

use crate::{FromColumns, Params};

/// The first `most` rows `sql` finds on `connection`: the statement prepared (or taken from
/// the connection's cache), `params` bound, the rows stepped through.
pub(crate) fn fetch<'a, T: FromColumns>(
    connection: &Connection,
    sql: &str,
    params: &impl Params<'a>,
    most: usize,
) -> Result<Vec<T>, T::Error> {
    let mut statement = connection.prepare_cached(sql).map_err(SqliteError::from_driver)?;
    params
        .bind_sqlite(&mut statement)
        .map_err(SqliteError::from_driver)?;
    let mut rows = statement.raw_query();
    let mut found = Vec::new();
    while found.len() < most
        && let Some(row) = rows.next().map_err(SqliteError::from_driver)?
    {
        found.push(T::from_columns(row)?);
    }
    Ok(found)
}

/// Runs `sql`, which returns no rows, on `connection`; how many rows it changed.
pub(crate) fn execute<'a>(
    connection: &Connection,
    sql: &str,
    params: &impl Params<'a>,
) -> Result<u64, sqlx::Error> {
    let run = || {
        let mut statement = connection.prepare_cached(sql)?;
        params.bind_sqlite(&mut statement)?;
        statement.raw_execute()
    };
    run()
        .map(|changed| changed as u64)
        .map_err(SqliteError::from_driver)
}

/// The names SQLite gives the placeholders `$1` … `$9` of the stores' SQL (shared with
/// PostgreSQL, which numbers them the same way).
const PLACEHOLDERS: [&CStr; 9] = [c"$1", c"$2", c"$3", c"$4", c"$5", c"$6", c"$7", c"$8", c"$9"];

/// Binds `value` to the placeholder `$number` of `statement` (1-based).
pub(crate) fn bind_numbered(
    statement: &mut Statement<'_>,
    number: usize,
    value: &dyn ToSql,
) -> rusqlite::Result<()> {
    statement.raw_bind_parameter(PLACEHOLDERS[number - 1], value)
}

/// A rusqlite error as a sqlx one, so a store sorts both drivers' errors in one place
/// ([`crate::is_transient`] reads SQLite's result code from it, as from sqlx's own).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SqliteError(rusqlite::Error);

impl SqliteError {
    pub fn from_driver(error: rusqlite::Error) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Self(error)))
    }
}

impl sqlx::error::DatabaseError for SqliteError {
    fn message(&self) -> &str {
        match &self.0 {
            rusqlite::Error::SqliteFailure(_, Some(message)) => message,
            _ => "SQLite statement failed",
        }
    }

    /// The primary result code, as sqlx's SQLite driver gives it ("5" is SQLITE_BUSY).
    fn code(&self) -> Option<Cow<'_, str>> {
        self.0
            .sqlite_error()
            .map(|error| Cow::Owned((error.extended_code & 0xff).to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    /// From the extended result code, as sqlx's SQLite driver sorts it: a store tells a
    /// taken email by `is_unique_violation`.
    fn kind(&self) -> sqlx::error::ErrorKind {
        use rusqlite::ffi;
        use sqlx::error::ErrorKind;
        match self.0.sqlite_error().map(|error| error.extended_code) {
            Some(ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => {
                ErrorKind::UniqueViolation
            }
            Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => ErrorKind::ForeignKeyViolation,
            Some(ffi::SQLITE_CONSTRAINT_NOTNULL) => ErrorKind::NotNullViolation,
            Some(ffi::SQLITE_CONSTRAINT_CHECK) => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

/// A row as the stores read it ([`crate::Columns`]), from rusqlite as from sqlx.
impl crate::Columns for rusqlite::Row<'_> {
    fn text(&self, column: &str) -> Result<String, sqlx::Error> {
        self.get(column).map_err(SqliteError::from_driver)
    }
    fn integer(&self, column: &str) -> Result<i64, sqlx::Error> {
        self.get(column).map_err(SqliteError::from_driver)
    }
    fn optional_integer(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
        self.get(column).map_err(SqliteError::from_driver)
    }
    fn optional_text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
        self.get(column).map_err(SqliteError::from_driver)
    }
    fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error> {
        self.get(column).map_err(SqliteError::from_driver)
    }
    /// SQLite keeps JSON as `TEXT` (sqlx binds `Json` so).
    fn json<T: serde::de::DeserializeOwned + 'static>(&self, column: &str) -> Result<T, sqlx::Error> {
        let text = self.get_ref(column).map_err(SqliteError::from_driver)?;
        let bytes = text
            .as_bytes()
            .map_err(|error| SqliteError::from_driver(error.into()))?;
        serde_json::from_slice(bytes).map_err(|error| sqlx::Error::Decode(Box::new(error)))
    }
}
