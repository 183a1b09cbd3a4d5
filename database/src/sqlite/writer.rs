//! [`SqliteWriter`]: the one connection that writes a SQLite file, and [`SqliteTx`], a
//! transaction on it.
//!
//! SQLite lets one connection write at a time. Writers take turns on an async lock: in
//! order, each woken the moment the one before is done, none holding a thread while it
//! waits (with writers on several connections, the others would sleep in SQLite's busy
//! handler, in steps of milliseconds, each on a thread). The holder runs its statements on
//! its own thread with no `.await` that waits between them, so the lock is held for the
//! statements' time only.
//!
//! Another process on the same file (two replicas on one volume) is waited for the same
//! way: a `BEGIN IMMEDIATE` answered busy is tried again after a pause, up to
//! `DATABASE_ACQUIRE_TIMEOUT`, and then the write is `UNAVAILABLE`.
//!
//! Group commit: a transaction is a savepoint in the writer's open transaction, and the
//! COMMIT, which writes the WAL frames of every page changed, is shared by the writers that
//! came while it was open. A writer that has released its savepoint gives up its turn,
//! lets the tasks already woken run, and queues for the lock again, behind the writers that
//! were waiting; when its turn comes, either one of them has committed (its answer is that
//! commit's) or it commits them all. A first writer needs no savepoint: alone in the
//! transaction, its rollback is the transaction's. The lock is fair, so a commit waits for
//! at most the writers queued before it, and nobody is answered before their rows are
//! committed. Under load the pages a write changes
//! (the table's last leaf, its indexes', the outbox's) are written once per commit, not once
//! per call.
//!
//! Checkpoints (the WAL copied back into the file, with its `fsync`s) run every
//! [`CHECKPOINT_EVERY`] writes on a thread of their own, not inside a call's commit, in two
//! passes. The first copies, and syncs the file, while the writers go on. The second takes
//! its turn on the writers' lock: a checkpoint that only ever races the writer never finds
//! the WAL fully copied, so SQLite never starts it again from the beginning and it grows
//! without end (2 GB in a minute of `CreateOrder`s). Between two writes, the rest is copied
//! and the next write starts the WAL again.

use std::{
    path::Path,
    sync::{Arc, OnceLock, Weak, mpsc},
    thread::JoinHandle,
    time::Duration,
};

use rusqlite::{Connection, OpenFlags, ffi};
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
    /// The open transaction's batch: the writers whose savepoints it holds.
    batch: Option<Arc<Batch>>,
    /// Writes released into a batch, for the checkpoint's pace.
    writes: u64,
    /// The checkpoint after the commit that takes `writes` to this.
    checkpoint_after: u64,
    /// Asks the checkpoint thread for a checkpoint; it ends when this is dropped.
    checkpoint: mpsc::SyncSender<()>,
    /// The checkpoint thread, waited for when this is dropped.
    checkpointer: Option<JoinHandle<()>>,
    /// Checkpoints run to their end (both passes), whatever they could copy.
    checkpoints: u64,
}

/// The outcome of one shared COMMIT, set once by whoever ends it.
#[derive(Debug, Default)]
struct Batch {
    outcome: OnceLock<Result<(), ffi::Error>>,
}

/// Writes between two checkpoints. A write of the stores changes a handful of pages, and a
/// shared commit writes a page once for all its writes: the WAL stays at a few MB (SQLite's
/// own default is 1,000 pages). Counted in writes, not commits, whose size varies with the
/// load. Measured side by side with 128: as many `CreateOrder`s a second, a fifth more
/// `CreateUser`s (a checkpoint `fsync`s the WAL and the file in each of its two passes), the same p99.
const CHECKPOINT_EVERY: u64 = 512;

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
            batch: None,
            writes: 0,
            checkpoint_after: CHECKPOINT_EVERY,
            checkpoint,
            checkpointer: None,
            checkpoints: 0,
        }));
        // Weak: the thread must not keep the writer (and so its own channel) alive.
        let turns = Arc::downgrade(&writing);
        let copier = connect(path).map_err(SqliteError::from_driver)?;
        let checkpointer = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_when_asked(&copier, &turns, &asked))
            .map_err(sqlx::Error::Io)?;
        writing
            .try_lock()
            .expect("nobody else has the writer yet")
            .checkpointer = Some(checkpointer);
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
        let mut writing = tokio::time::timeout_at(deadline, self.writing.clone().lock_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?;
        writing.settle();
        // The first writer of a batch needs no savepoint: if it fails, it is alone in the
        // transaction, and the whole of it is rolled back.
        let first = writing.batch.is_none();
        if first {
            begin_immediate(&mut writing, deadline).await?;
        } else if let Err(error) = run(&writing.connection, "SAVEPOINT write") {
            return Err(SqliteError::from_driver(error));
        }
        let batch = writing.batch.get_or_insert_default().clone();
        Ok(SqliteTx {
            writing: Some(writing),
            batch,
            savepoint: !first,
        })
    }
}

/// `BEGIN IMMEDIATE`, tried again after a pause while another process writes the file, up
/// to `deadline`. (`&mut Writing`, not `&Connection`: a future that holds a shared
/// reference to the connection across an `.await` is not `Send`.)
async fn begin_immediate(writing: &mut Writing, deadline: Instant) -> Result<(), sqlx::Error> {
    let mut pause = Duration::from_millis(1);
    loop {
        match run(&writing.connection, "BEGIN IMMEDIATE") {
            Ok(()) => return Ok(()),
            Err(error) if is_busy(&error) && Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_BUSY_PAUSE);
            }
            Err(error) if is_busy(&error) => return Err(sqlx::Error::PoolTimedOut),
            Err(error) => return Err(SqliteError::from_driver(error)),
        }
    }
}

impl Writing {
    /// Makes the connection's state agree with `batch` before a writer starts: a batch
    /// whose transaction SQLite has already ended (rolled back by an error whose writer went
    /// on) is told so, and a transaction left open by a failed `ROLLBACK` is ended, so that
    /// neither a later savepoint runs outside the batch nor the writer stays locked.
    fn settle(&mut self) {
        let open = !self.connection.is_autocommit();
        if self.batch.is_some() && !open {
            self.batch_rolled_back();
        } else if self.batch.is_none() && open {
            let _ = run(&self.connection, "ROLLBACK");
        }
    }

    /// Commits the open transaction, if any, and gives every writer in it the outcome.
    fn end_batch(&mut self) {
        let Some(batch) = self.batch.take() else {
            return;
        };
        let outcome = run(&self.connection, "COMMIT").map_err(|error| {
            error
                .sqlite_error()
                .copied()
                .unwrap_or(ffi::Error::new(ffi::SQLITE_ERROR))
        });
        if outcome.is_err() && !self.connection.is_autocommit() {
            let _ = run(&self.connection, "ROLLBACK");
        }
        let _ = batch.outcome.set(outcome);
        if self.writes >= self.checkpoint_after {
            self.checkpoint_after = self.writes + CHECKPOINT_EVERY;
            // Asked after the commit, so the checkpoint queues behind the writers waiting
            // for this one. Full: one is asked for already.
            let _ = self.checkpoint.try_send(());
        }
    }

    /// SQLite rolled the whole transaction back (an I/O error, a full disk): the writes of
    /// the batch are gone, and their writers are told so.
    fn batch_rolled_back(&mut self) {
        if let Some(batch) = self.batch.take() {
            // BUSY: transient, the caller may try again.
            let _ = batch.outcome.set(Err(ffi::Error::new(ffi::SQLITE_BUSY)));
        }
    }
}

/// A write transaction on the [`SqliteWriter`]: a savepoint in the writer's open
/// transaction. Rolled back if dropped before [`SqliteTx::commit`] (a failed statement, a
/// cancelled call).
#[derive(Debug)]
pub struct SqliteTx {
    /// Held from `begin` to the savepoint's release.
    writing: Option<OwnedMutexGuard<Writing>>,
    batch: Arc<Batch>,
    /// False for the batch's first writer, whose rollback is the transaction's.
    savepoint: bool,
}

impl SqliteTx {
    pub(crate) fn connection(&self) -> &Connection {
        &self.writing.as_ref().expect("held until commit").connection
    }

    /// Releases the savepoint, then waits for the commit that holds it (see the module's
    /// documentation): its outcome is this transaction's. A caller that stops waiting (a
    /// deadline) is committed all the same; to it the outcome is unknown, as for any call
    /// cut off after it was sent.
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        let committed = self.release()?;
        committed.wait().await
    }

    /// Releases the savepoint and the writers' lock. Not async: the future of `commit`
    /// must not hold a reference to the connection, which is `Send` but not `Sync`.
    fn release(&mut self) -> Result<Committed, sqlx::Error> {
        let mut writing = self.writing.take().expect("held until commit");
        if self.savepoint
            && let Err(error) = run(&writing.connection, "RELEASE write")
        {
            self.writing = Some(writing);
            return Err(SqliteError::from_driver(error));
        }
        writing.writes += 1;
        Ok(Committed {
            turns: OwnedMutexGuard::mutex(&writing).clone(),
            batch: self.batch.clone(),
        })
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        let Some(writing) = self.writing.as_mut() else {
            return;
        };
        // After an error that made SQLite roll back by itself, there is no transaction
        // left: the batch's other writes went with it.
        if writing.connection.is_autocommit() {
            writing.batch_rolled_back();
            return;
        }
        if !self.savepoint
            || run(&writing.connection, "ROLLBACK TO write").is_err()
            || run(&writing.connection, "RELEASE write").is_err()
        {
            let _ = run(&writing.connection, "ROLLBACK");
            writing.batch_rolled_back();
        }
    }
}

/// A released savepoint waiting for its commit. If the caller stops waiting (a cancelled
/// call), a task takes its place, so a batch is never left open with nobody to commit it.
struct Committed {
    turns: Arc<Mutex<Writing>>,
    batch: Arc<Batch>,
}

impl Committed {
    async fn wait(self) -> Result<(), sqlx::Error> {
        // Let the tasks already woken run first: on a busy worker some are about to write,
        // and they join this commit instead of waiting for the next one (measured: 1.6 times
        // the writes a second under load; a lone writer pays one trip through the scheduler).
        tokio::task::yield_now().await;
        commit_unless_ended(&mut *self.turns.lock().await, &self.batch);
        let outcome = *self.batch.outcome.get().expect("the batch has ended");
        outcome.map_err(|code| SqliteError::from_driver(rusqlite::Error::SqliteFailure(code, None)))
    }
}

impl Drop for Committed {
    fn drop(&mut self) {
        if self.batch.outcome.get().is_some() {
            return;
        }
        let (turns, batch) = (self.turns.clone(), self.batch.clone());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Dropped outside a runtime: a thread waits its turn instead.
            std::thread::spawn(move || commit_unless_ended(&mut turns.blocking_lock(), &batch));
            return;
        };
        runtime.spawn(async move { commit_unless_ended(&mut *turns.lock().await, &batch) });
    }
}

/// Ends `batch` with a commit, unless someone already has.
fn commit_unless_ended(writing: &mut Writing, batch: &Batch) {
    if batch.outcome.get().is_none() {
        writing.end_batch();
    }
}

/// Runs a statement without values or rows, prepared once.
fn run(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute(()).map(drop)
}

fn is_busy(error: &rusqlite::Error) -> bool {
    error.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
}

/// A connection to write with (the writer's) or to checkpoint with (the checkpoint thread's).
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    // NO_MUTEX: the connection is used by one thread at a time: the writer's under the
    // writers' lock, the checkpoint thread's by that thread only.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)?;
    // The file is in WAL mode already (sqlx set it when it opened the file). `NORMAL`:
    // a commit is durable once the WAL is synced at the next checkpoint; a crash of the
    // process loses nothing, a power loss may lose the last commits, never consistency.
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.pragma_update(None, "foreign_keys", true)?;
    // A savepoint's and a statement's journal in memory: on disk (SQLite's default past
    // 64 KiB) it was a temporary file written on every change to a page.
    connection.pragma_update(None, "temp_store", "MEMORY")?;
    // Checkpoints are the checkpoint thread's (see the module's documentation).
    connection.pragma_update(None, "wal_autocheckpoint", 0)?;
    // No busy handler: `begin` waits for another process without holding the thread.
    connection.busy_timeout(Duration::ZERO)?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(connection)
}

impl Drop for Writing {
    /// Ends the checkpoint thread and waits for it (at most the first pass it is in), so its
    /// connection closes before the writer's: the last connection to close copies the rest
    /// of the WAL into the file and removes it, and this one's close is waited for. (When
    /// the thread itself holds the last reference, the writer's closes first and the
    /// thread's right after: then that one does it.)
    fn drop(&mut self) {
        let (closed, _) = mpsc::sync_channel(1);
        drop(std::mem::replace(&mut self.checkpoint, closed));
        let Some(checkpointer) = self.checkpointer.take() else {
            return;
        };
        // Unless the thread is the one dropping this (its turn held the last reference):
        // then it ends right after.
        if checkpointer.thread().id() != std::thread::current().id() {
            let _ = checkpointer.join();
        }
    }
}

/// The checkpoint thread: each time one is asked for, a checkpoint in two passes, until
/// the writer is dropped. Both are passive: they copy what no reader still needs and wait
/// for no reader; what one still needs is copied next time.
///
/// The first pass, on the thread's own connection (`copier`), copies the WAL and syncs the
/// file while the writers go on. The second, in a writer's turn on the writer's connection,
/// copies the pages written meanwhile, so the WAL is all copied and the next write starts it
/// again; its two `fsync`s (the WAL's, the file's) find little left to write. With the whole
/// checkpoint in the writers' turn, they waited out both `fsync`s (6 and 10 ms here) every
/// few hundred writes, and under CreateOrder core 0 sat idle 17% of the time a checkpoint
/// ran (`perf record -C 0`, 20 ms buckets).
fn checkpoint_when_asked(copier: &Connection, turns: &Weak<Mutex<Writing>>, asked: &mpsc::Receiver<()>) {
    while asked.recv().is_ok() {
        // A request left in the channel by a writer since dropped: its drop waits for this.
        if turns.strong_count() == 0 {
            return;
        }
        // SQLite syncs the file only when a checkpoint finds, once it has copied, that the
        // WAL holds nothing more, which under load the first pass never does (the writers
        // add to it meanwhile): then the second pass's sync, in the writers' turn, would
        // write out all the first copied. (The pragma's counts are of the WAL as it was when
        // the copy began, so they cannot tell; a sync with nothing to write costs little.)
        if checkpoint(copier, "copying while the writers go on")
            && let Err(error) = sync_database_file(copier)
        {
            tracing::warn!(%error, "syncing the SQLite file after a checkpoint's copy failed");
        }
        let Some(writing) = turns.upgrade() else {
            return;
        };
        let mut writing = writing.blocking_lock();
        // A checkpoint needs no transaction open on its connection: the writers waiting for
        // the open one's commit get it now.
        writing.end_batch();
        checkpoint(&writing.connection, "in a writer's turn");
        writing.checkpoints += 1;
    }
}

/// A passive checkpoint on `connection`; false if it could not run (logged).
fn checkpoint(connection: &Connection, pass: &str) -> bool {
    // The first column is 1 when the checkpoint could not start: another process is
    // checkpointing the file, or a commit was changing the WAL's index as it read it.
    let busy = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", (), |row| row.get::<_, bool>(0));
    match busy {
        Ok(false) => true,
        Ok(true) => {
            tracing::debug!(pass, "SQLite checkpoint busy; the next one catches up");
            false
        }
        Err(error) => {
            tracing::warn!(%error, pass, "SQLite checkpoint failed; the next one catches up");
            false
        }
    }
}

/// `fsync`s the database file through SQLite's own handle on `connection` (its VFS's
/// `xSync`, as a checkpoint does). Not through a file of our own: closing any descriptor of
/// the file would drop the POSIX locks SQLite holds on it in this process ("How To Corrupt
/// An SQLite Database File", 2.2). rusqlite has no safe call for this.
fn sync_database_file(connection: &Connection) -> rusqlite::Result<()> {
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: `handle()` is this open connection's, and no other thread uses it meanwhile
    // (`Connection` is not `Sync`); FILE_POINTER writes the main database's `sqlite3_file`
    // (owned by the connection, alive while it is open) to `file`.
    let code = unsafe {
        ffi::sqlite3_file_control(
            connection.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&raw mut file).cast(),
        )
    };
    if code != ffi::SQLITE_OK || file.is_null() {
        return Err(rusqlite::Error::SqliteFailure(ffi::Error::new(code), None));
    }
    // SAFETY: `file` is the open database file SQLite just returned, with its VFS's methods;
    // nothing else uses this connection (and so this file object) meanwhile. `xSync` takes
    // the file and the sync flags, as SQLite's own `sqlite3OsSync` calls it.
    let code = unsafe {
        match (*file).pMethods.as_ref().and_then(|methods| methods.xSync) {
            Some(sync) => sync(file, ffi::SQLITE_SYNC_NORMAL),
            None => ffi::SQLITE_MISUSE,
        }
    };
    if code != ffi::SQLITE_OK {
        return Err(rusqlite::Error::SqliteFailure(ffi::Error::new(code), None));
    }
    Ok(())
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

    /// A writer of a new database; the directory holds the file while it is kept.
    fn writer() -> (tempfile::TempDir, PathBuf, SqliteWriter) {
        let dir = tempfile::tempdir().unwrap();
        let path = database(&dir);
        let writer = SqliteWriter::open(&path, Duration::from_secs(1)).unwrap();
        (dir, path, writer)
    }

    fn insert(tx: &SqliteTx, n: i64) {
        tx.connection()
            .execute("INSERT INTO things (n) VALUES (?1)", (n,))
            .unwrap();
    }

    /// A transaction dropped without its commit (a cancelled call) leaves nothing behind,
    /// and the next writer gets the connection.
    #[tokio::test]
    async fn a_dropped_transaction_is_rolled_back() {
        let (_dir, path, writer) = writer();
        let tx = writer.begin().await.unwrap();
        insert(&tx, 1);
        drop(tx);
        let tx = writer.begin().await.unwrap();
        insert(&tx, 2);
        tx.commit().await.unwrap();
        assert_eq!(count(&path), 1);
    }

    /// A write that arrives while another waits for its commit joins that commit; one of
    /// them rolled back leaves the others, and each is on the file when its commit returns.
    #[tokio::test]
    async fn writes_waiting_together_share_one_commit() {
        let (_dir, path, writer) = writer();
        // This test's runtime has one thread: a spawned commit starts when the next
        // `begin` waits for the writers' lock, and then queues behind it.
        let first = writer.begin().await.unwrap();
        insert(&first, 1);
        let first_batch = first.batch.clone();
        let first = tokio::spawn(first.commit());
        let second = writer.begin().await.unwrap();
        insert(&second, 2);
        assert!(
            Arc::ptr_eq(&second.batch, &first_batch),
            "in the first's transaction"
        );
        drop(second);
        first.await.unwrap().unwrap();
        assert_eq!(count(&path), 1, "the first write, not the second");

        let third = writer.begin().await.unwrap();
        insert(&third, 3);
        let third_batch = third.batch.clone();
        let third = tokio::spawn(third.commit());
        let fourth = writer.begin().await.unwrap();
        insert(&fourth, 4);
        assert!(Arc::ptr_eq(&fourth.batch, &third_batch), "one commit for both");
        let fourth = tokio::spawn(fourth.commit());
        third.await.unwrap().unwrap();
        fourth.await.unwrap().unwrap();

        let things = Connection::open(&path).unwrap();
        let mut rows = things.prepare("SELECT n FROM things ORDER BY n").unwrap();
        let found: Vec<i64> = rows
            .query_map((), |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(found, [1, 3, 4]);
    }

    /// A transaction SQLite ended by itself (as it does on a full disk) fails the writers
    /// in it, and the next writer starts a transaction of its own, told its own outcome.
    #[tokio::test]
    async fn a_transaction_sqlite_rolled_back_fails_its_writers_only() {
        let (_dir, path, writer) = writer();
        let first = writer.begin().await.unwrap();
        insert(&first, 1);
        first.connection().execute_batch("ROLLBACK").unwrap();
        let first = tokio::spawn(first.commit());
        let second = writer.begin().await.unwrap();
        insert(&second, 2);
        second.commit().await.unwrap();
        let error = first.await.unwrap().unwrap_err();
        assert!(crate::is_transient(&error), "{error}");
        assert_eq!(count(&path), 1);
    }

    /// A writer that stops waiting for its commit (a cancelled call) does not leave the
    /// transaction open: it is committed for it.
    #[tokio::test]
    async fn a_commit_nobody_waits_for_still_happens() {
        let (_dir, path, writer) = writer();
        let tx = writer.begin().await.unwrap();
        insert(&tx, 1);
        let waiting = tokio::spawn(tx.commit());
        let next = writer.begin().await.unwrap();
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        drop(next);
        // Behind the task that committed in its place.
        drop(writer.begin().await.unwrap());
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
        tx.commit().await.unwrap();
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

    /// The file syncs through SQLite's own handle on it (what the first pass does after its
    /// copy): the pointer and the call are right, or this crashes or fails. (That an `fsync`
    /// happened shows in `strace`, not here.)
    #[test]
    fn the_database_file_syncs_through_sqlites_own_handle() {
        let dir = tempfile::tempdir().unwrap();
        let copier = connect(&database(&dir)).unwrap();
        sync_database_file(&copier).unwrap();
    }

    /// A checkpoint copies the WAL while a writer holds the writers' turn (they do not wait
    /// for its copy and `fsync`s), and ends once the turn is free.
    #[tokio::test]
    async fn a_checkpoint_copies_the_wal_while_a_writer_holds_the_turn() {
        let (_dir, path, writer) = writer();
        let size = |path: &Path| std::fs::metadata(path).map_or(0, |file| file.len());
        let before = size(&path);
        let rows = 200;
        for n in 0..rows {
            // A page's worth a row: the file grows by a page a row once checkpointed.
            let tx = writer.begin().await.unwrap();
            tx.connection()
                .execute("INSERT INTO things VALUES (?1, zeroblob(4000))", (n,))
                .unwrap();
            tx.commit().await.unwrap();
        }
        // A writer holds the turn, and a checkpoint is asked for meanwhile.
        let held = writer.begin().await.unwrap();
        let writing = held.writing.as_ref().unwrap();
        assert_eq!(writing.checkpoints, 0);
        writing.checkpoint.try_send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while size(&path) < before + rows as u64 * 4000 {
            assert!(
                std::time::Instant::now() < deadline,
                "nothing copied while the turn was held"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(held);
        while writer.writing.lock().await.checkpoints < 1 {
            assert!(std::time::Instant::now() < deadline, "the checkpoint did not end");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(count(&path), rows);
    }

    /// Every [`CHECKPOINT_EVERY`] writes the WAL is copied into the file, by the
    /// checkpoint thread (the writer never checkpoints, and nobody else does here), and the
    /// next write starts the WAL again from its beginning: it does not grow.
    #[tokio::test]
    async fn commits_are_checkpointed_and_the_wal_is_reused() {
        let (_dir, path, writer) = writer();
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
                tx.commit().await.unwrap();
            }
            // Both passes done: the first copies while the writers go on, the second ends
            // in their turn.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while writer.writing.lock().await.checkpoints < round {
                assert!(std::time::Instant::now() < deadline, "no checkpoint");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(size(&path) >= checkpointed + 100 * 4000, "the WAL was copied");
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
