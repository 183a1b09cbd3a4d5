//! [`SqliteWriter`]: the one connection that writes a SQLite file, and [`SqliteTx`], a
//! transaction on it.
//!
//! SQLite lets one connection write at a time. Writers take turns on an async lock: in
//! order, each woken the moment the one before commits, none holding a thread while it
//! waits (with writers on several connections, the others would sleep in SQLite's busy
//! handler, in steps of milliseconds, each on a thread). The holder runs its statements on
//! its own thread with no `.await` that waits between them, so the lock is held for the
//! statements' time only.
//!
//! Another process on the same file (two replicas on one volume) is waited for the same
//! way: a `BEGIN IMMEDIATE` answered busy is tried again after a pause, up to
//! `DATABASE_ACQUIRE_TIMEOUT`, and then the write is `UNAVAILABLE`.
//!
//! Checkpoints (the WAL copied back into the file, with its `fsync`s) run every
//! [`CHECKPOINT_EVERY`] commits on a thread of their own, not inside a call's commit, but
//! they take their turn on the writers' lock: a checkpoint that races the writer never
//! finds the WAL fully copied, so SQLite never starts it again from the beginning and it
//! grows without end (2 GB in a minute of `CreateOrder`s). Between two writes, it is all
//! copied and the next write starts it again.

use std::{
    path::Path,
    sync::{Arc, Weak, mpsc},
    time::Duration,
};

use rusqlite::{Connection, OpenFlags};
use tokio::{
    sync::{Mutex, OwnedMutexGuard},
    time::Instant,
};

use super::SqliteError;

/// The connection that writes a SQLite file, shared by every writer of the process.
#[derive(Debug)]
pub struct SqliteWriter {
    writing: Arc<Mutex<Writing>>,
    acquire_timeout: Duration,
}

/// What a transaction holds while it writes.
#[derive(Debug)]
struct Writing {
    connection: Connection,
    commits: u64,
    /// Asks the checkpoint thread for a checkpoint; it ends when this is dropped.
    checkpoint: mpsc::SyncSender<()>,
}

/// Commits between two checkpoints. A write of the stores changes a handful of pages, so
/// this keeps the WAL near SQLite's own default of 1,000 pages.
const CHECKPOINT_EVERY: u64 = 128;

/// Statements kept prepared: every write statement of a store, with room.
const STATEMENT_CACHE: usize = 32;

/// The longest pause between two tries at a file another process is writing.
const MAX_BUSY_PAUSE: Duration = Duration::from_millis(20);

impl SqliteWriter {
    /// The writer of the database at `path`, which exists (migrated, in WAL mode). A write
    /// waits at most `acquire_timeout` for its turn.
    pub(crate) fn open(path: &Path, acquire_timeout: Duration) -> Result<Self, sqlx::Error> {
        let connection = connect(path).map_err(SqliteError::from_driver)?;
        let (checkpoint, asked) = mpsc::sync_channel(1);
        let writing = Arc::new(Mutex::new(Writing {
            connection,
            commits: 0,
            checkpoint,
        }));
        // Weak: the thread must not keep the writer (and so its own channel) alive.
        let turns = Arc::downgrade(&writing);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_when_asked(&turns, &asked))
            .map_err(sqlx::Error::Io)?;
        Ok(Self {
            writing,
            acquire_timeout,
        })
    }

    /// Begins a write transaction, once the writers before it are done and no other
    /// process writes the file; `PoolTimedOut` (answered `UNAVAILABLE`) after the acquire
    /// timeout.
    pub async fn begin(&self) -> Result<SqliteTx, sqlx::Error> {
        let deadline = Instant::now() + self.acquire_timeout;
        let writing = tokio::time::timeout_at(deadline, self.writing.clone().lock_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?;
        let mut pause = Duration::from_millis(1);
        loop {
            match run(&writing.connection, "BEGIN IMMEDIATE") {
                Ok(()) => return Ok(SqliteTx { writing }),
                Err(error) if is_busy(&error) && Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_BUSY_PAUSE);
                }
                Err(error) if is_busy(&error) => return Err(sqlx::Error::PoolTimedOut),
                Err(error) => return Err(SqliteError::from_driver(error)),
            }
        }
    }
}

/// A write transaction on the [`SqliteWriter`]; rolled back if dropped before
/// [`SqliteTx::commit`] (a failed statement, a cancelled call).
#[derive(Debug)]
pub struct SqliteTx {
    writing: OwnedMutexGuard<Writing>,
}

impl SqliteTx {
    pub(crate) fn connection(&self) -> &Connection {
        &self.writing.connection
    }

    pub(crate) fn commit(mut self) -> Result<(), sqlx::Error> {
        run(&self.writing.connection, "COMMIT").map_err(SqliteError::from_driver)?;
        self.writing.commits += 1;
        if self.writing.commits.is_multiple_of(CHECKPOINT_EVERY) {
            // Full: one is asked for already.
            let _ = self.writing.checkpoint.try_send(());
        }
        Ok(())
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        // After a commit, or after an error that made SQLite roll back by itself, there is
        // no transaction left to end.
        if !self.writing.connection.is_autocommit() {
            let _ = run(&self.writing.connection, "ROLLBACK");
        }
    }
}

/// Runs a statement without values or rows, prepared once.
fn run(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute(()).map(drop)
}

fn is_busy(error: &rusqlite::Error) -> bool {
    error.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    // NO_MUTEX: the connection is used by one thread at a time (under the writers' lock).
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)?;
    // The file is in WAL mode already (sqlx set it when it opened the file). `NORMAL`:
    // a commit is durable once the WAL is synced at the next checkpoint; a crash of the
    // process loses nothing, a power loss may lose the last commits, never consistency.
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.pragma_update(None, "foreign_keys", true)?;
    // Checkpoints are the checkpoint thread's (see the module's documentation).
    connection.pragma_update(None, "wal_autocheckpoint", 0)?;
    // No busy handler: `begin` waits for another process without holding the thread.
    connection.busy_timeout(Duration::ZERO)?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(connection)
}

/// The checkpoint thread: each time one is asked for, a checkpoint in a writer's turn,
/// until the writer is dropped. Passive: it copies what no reader still needs and waits for
/// no reader; what one still needs is copied next time.
fn checkpoint_when_asked(turns: &Weak<Mutex<Writing>>, asked: &mpsc::Receiver<()>) {
    while asked.recv().is_ok() {
        let Some(writing) = turns.upgrade() else {
            return;
        };
        let writing = writing.blocking_lock();
        let checkpoint = writing
            .connection
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", (), |_| Ok(()));
        if let Err(error) = checkpoint {
            tracing::warn!(%error, "SQLite checkpoint failed; the next one catches up");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn database(dir: &tempfile::TempDir) -> PathBuf {
        let path = dir.path().join("write.db");
        let connection = Connection::open(&path).unwrap();
        connection.pragma_update(None, "journal_mode", "WAL").unwrap();
        connection
            .execute_batch("CREATE TABLE things (n INTEGER NOT NULL, pad BLOB)")
            .unwrap();
        path
    }

    fn count(path: &Path) -> i64 {
        let connection = Connection::open(path).unwrap();
        connection
            .query_row("SELECT count(*) FROM things", (), |row| row.get(0))
            .unwrap()
    }

    /// A transaction dropped without its commit (a cancelled call) leaves nothing behind,
    /// and the next writer gets the connection.
    #[tokio::test]
    async fn a_dropped_transaction_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(&dir);
        let writer = SqliteWriter::open(&path, Duration::from_secs(1)).unwrap();
        let tx = writer.begin().await.unwrap();
        tx.connection()
            .execute("INSERT INTO things (n) VALUES (1)", ())
            .unwrap();
        drop(tx);
        let tx = writer.begin().await.unwrap();
        tx.connection()
            .execute("INSERT INTO things (n) VALUES (2)", ())
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(count(&path), 1);
    }

    /// While another process holds the file's write lock, a write waits for it without a
    /// thread, up to the acquire timeout, and then is transient (`UNAVAILABLE`).
    #[tokio::test]
    async fn another_writer_of_the_file_is_waited_for_then_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(&dir);
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let writer = SqliteWriter::open(&path, Duration::from_millis(50)).unwrap();
        let error = writer.begin().await.unwrap_err();
        assert!(matches!(error, sqlx::Error::PoolTimedOut), "{error}");
        assert!(crate::is_transient(&error));

        other.execute_batch("COMMIT").unwrap();
        let tx = writer.begin().await.unwrap();
        tx.commit().unwrap();
    }

    /// Writers queue for the connection: one that waits longer than the acquire timeout
    /// for the others is `UNAVAILABLE`.
    #[tokio::test]
    async fn a_writer_waits_its_turn_up_to_the_acquire_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let writer = SqliteWriter::open(&database(&dir), Duration::from_millis(50)).unwrap();
        let first = writer.begin().await.unwrap();
        assert!(matches!(writer.begin().await, Err(sqlx::Error::PoolTimedOut)));
        drop(first);
        writer.begin().await.unwrap();
    }

    /// Every [`CHECKPOINT_EVERY`] commits the WAL is copied into the file, by the
    /// checkpoint thread (the writer never checkpoints, and nobody else does here), and the
    /// next write starts the WAL again from its beginning: it does not grow.
    #[tokio::test]
    async fn commits_are_checkpointed_and_the_wal_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(&dir);
        let writer = SqliteWriter::open(&path, Duration::from_secs(1)).unwrap();
        let size = |path: &Path| std::fs::metadata(path).map_or(0, |file| file.len());
        let wal = path.with_extension("db-wal");
        let mut checkpointed = size(&path);
        let mut wal_after_first = 0;
        for round in 1..=4 {
            // A page's worth a row: the file grows by a page a row once checkpointed.
            for n in 0..CHECKPOINT_EVERY {
                if n == CHECKPOINT_EVERY - 1 {
                    assert_eq!(size(&path), checkpointed, "all in the WAL until then");
                }
                let tx = writer.begin().await.unwrap();
                tx.connection()
                    .execute("INSERT INTO things VALUES (?1, zeroblob(4000))", (n as i64,))
                    .unwrap();
                tx.commit().unwrap();
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while size(&path) < checkpointed + 100 * 4000 {
                assert!(std::time::Instant::now() < deadline, "no checkpoint");
                std::thread::sleep(Duration::from_millis(10));
            }
            checkpointed = size(&path);
            if round == 1 {
                wal_after_first = size(&wal);
            }
        }
        assert_eq!(count(&path), 4 * CHECKPOINT_EVERY as i64);
        assert!(
            size(&wal) <= wal_after_first * 3 / 2,
            "the WAL grew from {wal_after_first} to {} bytes",
            size(&wal)
        );
    }
}
