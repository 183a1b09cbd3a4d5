//! [`SqliteReaders`]: SQLite reads run on the calling thread, through connections of the
//! `rusqlite` driver.
//!
//! Why not sqlx's pool for these: sqlx gives every SQLite connection a thread of its own, and
//! a query is a message to that thread and its rows a message back; the pool then pings the
//! connection on its thread when it is returned. On a loaded core that is three to four
//! context switches and six system calls per point read (`perf stat` on `GetUser`: 3.4 and 7
//! per call, against 0.75 system calls for a call with no database), several times the cost
//! of the read itself. A read of a WAL database from its page cache takes microseconds and
//! waits for nobody (a writer never blocks a reader), so it is run where the call is, as
//! any other computation of the handler is. Writes stay on sqlx's writer connection: they
//! wait for one another, and a wait must not hold a thread.
//!
//! The bound on that time is the statement's: the stores read one row by its key or one
//! page (at most `MAX_PAGE_SIZE` rows, in key order, from an index).

use std::{
    borrow::Cow,
    ffi::CStr,
    path::{Path, PathBuf},
    sync::Mutex,
};

use rusqlite::{Connection, OpenFlags, Statement, ToSql};

/// Read-only connections to one SQLite file, one per thread reading at a time.
///
/// A read holds a connection only while it runs, never across an `.await`, so as many are
/// open as threads have read at the same time (the runtime's workers): there is nothing to
/// wait for, and so no acquire timeout.
#[derive(Debug)]
pub struct SqliteReaders {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// Statements kept prepared per connection: every read statement of a store, with room.
const STATEMENT_CACHE: usize = 32;

impl SqliteReaders {
    /// Readers of the database at `path`, which exists (the writer created it).
    pub(crate) fn open(path: &Path) -> Result<Self, sqlx::Error> {
        let readers = Self {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
        };
        // The first connection now: a file that cannot be read stops the service at start.
        let first = readers.connect()?;
        readers.idle_connections().push(first);
        Ok(readers)
    }

    /// Runs `read` on an idle connection, or a new one when every one is in use.
    pub fn read<T, E: From<sqlx::Error>>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let idle = self.idle_connections().pop();
        let connection = match idle {
            Some(connection) => connection,
            None => self.connect()?,
        };
        let result = read(&connection);
        self.idle_connections().push(connection);
        result
    }

    fn idle_connections(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // The lock is held only to push or pop; no code that could panic runs under it.
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn connect(&self) -> Result<Connection, sqlx::Error> {
        // NO_MUTEX: a connection is used by one thread at a time (it is taken out of `idle`).
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(&self.path, flags).map_err(ReadError::from_driver)?;
        // No busy timeout: in WAL mode a reader waits only on a crash recovery by another
        // process, and a wait here would hold the runtime's thread. SQLITE_BUSY answers
        // UNAVAILABLE instead ([`crate::is_transient`]), which a client retries.
        connection
            .busy_timeout(std::time::Duration::ZERO)
            .map_err(ReadError::from_driver)?;
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(connection)
    }
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
pub struct ReadError(rusqlite::Error);

impl ReadError {
    pub fn from_driver(error: rusqlite::Error) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Self(error)))
    }
}

impl sqlx::error::DatabaseError for ReadError {
    fn message(&self) -> &str {
        match &self.0 {
            rusqlite::Error::SqliteFailure(_, Some(message)) => message,
            _ => "SQLite read failed",
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

    fn kind(&self) -> sqlx::error::ErrorKind {
        sqlx::error::ErrorKind::Other
    }
}

/// A row as the stores read it ([`crate::Columns`]), from rusqlite as from sqlx.
impl crate::Columns for rusqlite::Row<'_> {
    fn text(&self, column: &str) -> Result<String, sqlx::Error> {
        self.get(column).map_err(ReadError::from_driver)
    }
    fn integer(&self, column: &str) -> Result<i64, sqlx::Error> {
        self.get(column).map_err(ReadError::from_driver)
    }
    fn optional_integer(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
        self.get(column).map_err(ReadError::from_driver)
    }
    fn optional_text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
        self.get(column).map_err(ReadError::from_driver)
    }
    fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error> {
        self.get(column).map_err(ReadError::from_driver)
    }
    /// SQLite keeps JSON as `TEXT` (sqlx binds `Json` so).
    fn json<T: serde::de::DeserializeOwned + 'static>(&self, column: &str) -> Result<T, sqlx::Error> {
        let text = self.get_ref(column).map_err(ReadError::from_driver)?;
        let bytes = text
            .as_bytes()
            .map_err(|error| ReadError::from_driver(error.into()))?;
        serde_json::from_slice(bytes).map_err(|error| sqlx::Error::Decode(Box::new(error)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read that finds the file busy is answered UNAVAILABLE (a retry may succeed), one
    /// that fails otherwise is not.
    #[test]
    fn a_busy_read_is_transient_and_a_bad_statement_is_not() {
        let busy =
            rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
        assert!(crate::is_transient(&ReadError::from_driver(busy)));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read.db");
        Connection::open(&path).unwrap();
        let readers = SqliteReaders::open(&path).unwrap();
        let error = readers
            .read(|connection| {
                connection
                    .query_row("SELECT * FROM missing", (), |_| Ok(()))
                    .map_err(ReadError::from_driver)
            })
            .unwrap_err();
        assert!(!crate::is_transient(&error));
        assert!(error.to_string().contains("no such table"), "{error}");
    }

    /// Reads on several threads at once each get a connection; none waits for another.
    #[test]
    fn reads_at_the_same_time_get_a_connection_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read.db");
        Connection::open(&path).unwrap();
        let readers = SqliteReaders::open(&path).unwrap();
        let inside = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    readers.read(|_connection| {
                        inside.wait();
                        Ok::<_, sqlx::Error>(())
                    })
                });
            }
        });
        assert_eq!(readers.idle_connections().len(), 2);
    }
}
