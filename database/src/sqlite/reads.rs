//! [`SqliteReaders`]: read-only connections, one per thread reading at a time.
//!
//! A read of a WAL database from its page cache takes microseconds and waits for nobody (a
//! writer never blocks a reader), so it is run where the call is, as any other computation
//! of the handler is. The bound on that time is the statement's: the stores read one row by
//! its key or one page (at most `MAX_PAGE_SIZE` rows, in key order, from an index).

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

use rusqlite::{Connection, OpenFlags};

use super::SqliteError;
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
        let connection = Connection::open_with_flags(&self.path, flags).map_err(SqliteError::from_driver)?;
        // No busy timeout: in WAL mode a reader waits only on a crash recovery by another
        // process, and a wait here would hold the runtime's thread. SQLITE_BUSY answers
        // UNAVAILABLE instead ([`crate::is_transient`]), which a client retries.
        connection
            .busy_timeout(std::time::Duration::ZERO)
            .map_err(SqliteError::from_driver)?;
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(connection)
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
        assert!(crate::is_transient(&SqliteError::from_driver(busy)));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read.db");
        Connection::open(&path).unwrap();
        let readers = SqliteReaders::open(&path).unwrap();
        let error = readers
            .read(|connection| {
                connection
                    .query_row("SELECT * FROM missing", (), |_| Ok(()))
                    .map_err(SqliteError::from_driver)
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
