//! The transactional outbox: one table per service, written in the transaction of the change
//! each row describes, so a committed change always has its event and a rolled-back one
//! never does.
//!
//! `seq` is commit order. SQLite has one writer at a time, so its `AUTOINCREMENT` rowid is.
//! On PostgreSQL a sequence value is taken at insert time, not at commit, so two concurrent
//! transactions could commit out of `seq` order and a reader that has passed `seq` 6 would
//! miss a 5 that commits later. So [`Append`] takes a transaction-level advisory lock
//! before it inserts (the last statement of each change): between taking the value and
//! committing, no other writer of this outbox can take one, and `seq` order is commit order.
//! That serialises only the tail of each write (one insert and the commit), not the change.

use std::sync::Arc;

use meshwork_database::{Columns, Db, FromColumns, Tx};
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// An event's id: a UUIDv7, so ids sort by creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventId(Uuid);

impl EventId {
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// An id a client sent back (`after_event_id`); `None` unless it is a UUID.
    pub fn parse(text: &str) -> Option<Self> {
        Uuid::try_parse(text).ok().map(Self)
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An event to write, with its payload already encoded (a protobuf message of `proto/`).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    /// `meshwork.user.v1.created`, ...
    pub subject: &'static str,
    pub payload: Vec<u8>,
    /// When the change was made, in microseconds since the Unix epoch.
    pub occur_time: i64,
}

impl NewEvent {
    /// An event with a new id, on `subject`, made at `occur_time`; `payload` encodes the
    /// message, which carries the same id.
    pub fn new(subject: &'static str, occur_time: i64, payload: impl FnOnce(&EventId) -> Vec<u8>) -> Self {
        let id = EventId::generate();
        Self {
            payload: payload(&id),
            id,
            subject,
            occur_time,
        }
    }
}

/// An event as the outbox holds it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its place in commit order.
    pub seq: i64,
    pub event_id: String,
    pub subject: String,
    pub payload: Vec<u8>,
    pub occur_time: i64,
    /// The W3C `traceparent` of the change that wrote it.
    pub traceparent: Option<String>,
}

/// One service's outbox: its table, and the wake-up its readers (the relay, a feed of
/// watchers) wait on. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    /// `user_outbox`, `order_outbox`: services may share one PostgreSQL database.
    table: &'static str,
    /// The service's full name (`user.v1.UserService`): CloudEvents' `ce-source`.
    source: &'static str,
    /// The advisory lock the relaying replica holds: another key, or holding it would block
    /// every writer.
    relay_key: i64,
    /// Bumped after each local commit that wrote a row, so readers need not poll for them.
    written: watch::Sender<u64>,
    sql: Sql,
}

/// The statements, made once per process from the table's name. `&'static` (leaked, a few
/// hundred bytes once) because sqlx takes only static text as a query without an audit
/// wrapper: these are built from a table name chosen in code, never from input.
struct Sql {
    /// SQLite: the insert alone; its `seq` is the connection's last rowid. (`RETURNING seq`
    /// made SQLite build and drop a temporary B-tree for the one value on every event:
    /// about 11k of callgrind's instructions per CreateOrder, 3% of order-service's.)
    insert: &'static str,
    /// PostgreSQL: the lock (its key derived from the table's name), the insert and (when
    /// others listen) the notice, in one statement, so the lock is held for one round trip
    /// and the commit.
    insert_locked: &'static str,
    unsent: &'static str,
    mark_sent: &'static str,
    after: &'static str,
    seq_of: &'static str,
    last_seq: &'static str,
    pending: &'static str,
    prune_boundary: &'static str,
    prune: &'static str,
}

/// The columns of a row; a macro, not a `const`, because `concat!` takes literals.
macro_rules! columns {
    () => {
        "seq, event_id, subject, payload, occur_time, traceparent"
    };
}

impl Sql {
    fn new(table: &str, notify: bool) -> Self {
        let leak = |sql: String| -> &'static str { sql.leak() };
        Self {
            insert: leak(format!(
                "INSERT INTO {table} (event_id, subject, payload, occur_time, traceparent) VALUES ($1, $2, $3, $4, $5)"
            )),
            insert_locked: leak(format!(
                "INSERT INTO {table} (event_id, subject, payload, occur_time, traceparent) \
                 SELECT $1, $2, $3, $4, $5 FROM (SELECT pg_advisory_xact_lock({}){}) AS locked RETURNING seq",
                lock_key(table),
                if notify {
                    format!(", pg_notify('{table}', '')")
                } else {
                    String::new()
                }
            )),
            // `LIMIT CAST($n AS BIGINT)`, not `LIMIT $n`: SQLite reads a bare parameter's
            // value into the plan, and prepares the statement again at every call.
            unsent: leak(format!(
                "SELECT {} FROM {table} WHERE sent_time IS NULL ORDER BY seq LIMIT CAST($1 AS BIGINT)",
                columns!()
            )),
            mark_sent: leak(format!(
                "UPDATE {table} SET sent_time = $1 WHERE seq <= $2 AND sent_time IS NULL"
            )),
            after: leak(format!(
                "SELECT {} FROM {table} WHERE seq > $1 ORDER BY seq LIMIT CAST($2 AS BIGINT)",
                columns!()
            )),
            seq_of: leak(format!("SELECT seq FROM {table} WHERE event_id = $1")),
            last_seq: leak(format!("SELECT COALESCE(MAX(seq), 0) AS seq FROM {table}")),
            pending: leak(format!(
                "SELECT COUNT(*) AS pending FROM {table} WHERE sent_time IS NULL"
            )),
            // The first event kept, found by walking `seq` from the start: what it walks
            // past is what the prune then deletes, so no index of `occur_time` is needed
            // (one B-tree fewer written by every event; see `prune_by_seq_migration!`).
            // When every event may go, the one after the last: an event committed after
            // this read is never in the prune's range (`seq` is commit order, see `Append`).
            // NULL: the outbox is empty.
            prune_boundary: leak(format!(
                "SELECT COALESCE(\
                   (SELECT seq FROM {table} WHERE sent_time IS NULL OR occur_time >= $1 ORDER BY seq LIMIT 1), \
                   (SELECT MAX(seq) + 1 FROM {table})) AS keep_from"
            )),
            prune: leak(format!(
                "DELETE FROM {table} WHERE seq IN (SELECT seq FROM {table} WHERE seq <= $1 ORDER BY seq LIMIT CAST($2 AS BIGINT))"
            )),
        }
    }
}

/// The migration that creates a service's outbox on SQLite: `sqlite_migration!("user_outbox")`.
#[macro_export]
macro_rules! sqlite_migration {
    ($table:literal) => {
        concat!(
            "-- The transactional outbox (meshwork-events): one row per committed change, in commit order.\n",
            "CREATE TABLE ",
            $table,
            " (\n",
            "    seq         INTEGER PRIMARY KEY AUTOINCREMENT, -- commit order; never reused\n",
            "    event_id    TEXT    NOT NULL UNIQUE,\n",
            "    subject     TEXT    NOT NULL,\n",
            "    payload     BLOB    NOT NULL,                  -- the protobuf event\n",
            "    occur_time  INTEGER NOT NULL,                  -- microseconds since the Unix epoch\n",
            "    traceparent TEXT,\n",
            "    sent_time   INTEGER                            -- NULL until JetStream acknowledged it\n",
            ");\n",
            "CREATE INDEX ",
            $table,
            "_unsent ON ",
            $table,
            " (seq) WHERE sent_time IS NULL;\n",
            "CREATE INDEX ",
            $table,
            "_by_time ON ",
            $table,
            " (occur_time);\n",
        )
    };
}

/// The migration that creates a service's outbox on PostgreSQL.
#[macro_export]
macro_rules! postgres_migration {
    ($table:literal) => {
        concat!(
            "-- The transactional outbox (meshwork-events): one row per committed change, in commit order\n",
            "-- (writers take an advisory lock before inserting; see meshwork-events' outbox.rs).\n",
            "CREATE TABLE ",
            $table,
            " (\n",
            "    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n",
            "    event_id    TEXT   COLLATE \"C\" NOT NULL UNIQUE,\n",
            "    subject     TEXT   NOT NULL,\n",
            "    payload     BYTEA  NOT NULL,\n",
            "    occur_time  BIGINT NOT NULL,\n",
            "    traceparent TEXT,\n",
            "    sent_time   BIGINT\n",
            ");\n",
            "CREATE INDEX ",
            $table,
            "_unsent ON ",
            $table,
            " (seq) WHERE sent_time IS NULL;\n",
            "CREATE INDEX ",
            $table,
            "_by_time ON ",
            $table,
            " (occur_time);\n",
        )
    };
}

/// The outbox's second migration, on either backend: `sqlite_migration!` and
/// `postgres_migration!` made an index of `occur_time` for the prune, which now walks `seq`
/// instead; every event wrote that index for nothing. (The first migrations stay as they
/// were: sqlx checks that an applied migration's text has not changed.) Never edit its
/// text either, comment included: it is applied in every service's database.
#[macro_export]
macro_rules! prune_by_seq_migration {
    ($table:literal) => {
        concat!(
            "-- Pruning walks seq (meshwork-events' outbox.rs): the index of occur_time goes.\n",
            "DROP INDEX IF EXISTS ",
            $table,
            "_by_time;\n",
        )
    };
}

impl Outbox {
    /// The outbox in `table` (created by the service's migration) of the service `source`.
    pub fn new(table: &'static str, source: &'static str) -> Self {
        Self::build(table, source, false)
    }

    /// The same, for an outbox that other processes read as it grows (the `WatchOrders` feed
    /// on every replica): on PostgreSQL each append also sends a `NOTIFY` that wakes them
    /// ([`Outbox::wake_on_notify`]). It has a cost (PostgreSQL serialises the commits of
    /// notifying transactions), so an outbox only the relay reads does without.
    pub fn notifying(table: &'static str, source: &'static str) -> Self {
        Self::build(table, source, true)
    }

    fn build(table: &'static str, source: &'static str, notify: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                table,
                source,
                relay_key: lock_key(&format!("{table}.relay")),
                written: watch::Sender::new(0),
                sql: Sql::new(table, notify),
            }),
        }
    }

    pub fn table(&self) -> &'static str {
        self.inner.table
    }

    pub fn source(&self) -> &'static str {
        self.inner.source
    }

    /// The lock of the one replica that relays this outbox.
    pub(crate) fn relay_key(&self) -> i64 {
        self.inner.relay_key
    }

    /// Tells this process's readers that a transaction that appended has committed.
    pub fn committed(&self) {
        self.inner.written.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes when this process commits an event (see [`Outbox::committed`]).
    pub fn written(&self) -> watch::Receiver<u64> {
        self.inner.written.subscribe()
    }

    /// Wakes this process's readers when another process commits an event (PostgreSQL's
    /// `NOTIFY`, sent by [`Append`]), until `stop`. Only a wake-up: the readers poll as well,
    /// so a notice lost while reconnecting delays them, it loses nothing. A SQLite file
    /// has one process, so there is nobody else to hear from.
    pub fn wake_on_notify(&self, db: &Db, stop: CancellationToken) {
        let Db::Postgres(pool) = db else {
            return;
        };
        let (pool, outbox) = (pool.clone(), self.clone());
        tokio::spawn(stop.run_until_cancelled_owned(async move {
            loop {
                let listening = async {
                    let mut listener = PgListener::connect_with(&pool).await?;
                    listener.listen(outbox.inner.table).await?;
                    loop {
                        listener.recv().await?;
                        outbox.committed();
                    }
                };
                let error: sqlx::Error = match listening.await {
                    Ok(never) => never,
                    Err(error) => error,
                };
                tracing::debug!(%error, "outbox listener lost its connection; reconnecting");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }));
    }

    /// Up to `limit` events after `seq`, in commit order.
    pub async fn after(&self, db: &Db, seq: i64, limit: i64) -> Result<Vec<StoredEvent>, sqlx::Error> {
        db.fetch_all(self.inner.sql.after, (seq, limit)).await
    }

    /// The place of the event `event_id` in commit order, if it is still kept.
    pub async fn seq_of(&self, db: &Db, event_id: &EventId) -> Result<Option<i64>, sqlx::Error> {
        let id = event_id.to_string();
        let seq: Option<Seq> = db.fetch_optional(self.inner.sql.seq_of, (id.as_str(),)).await?;
        Ok(seq.map(|seq| seq.0))
    }

    /// The place of the newest event (0 when there is none).
    pub async fn last_seq(&self, db: &Db) -> Result<i64, sqlx::Error> {
        let seq: Option<Seq> = db.fetch_optional(self.inner.sql.last_seq, ()).await?;
        Ok(seq.map_or(0, |seq| seq.0))
    }

    /// Events not yet acknowledged by the broker.
    pub async fn pending(&self, db: &Db) -> Result<i64, sqlx::Error> {
        let pending: Option<Pending> = db.fetch_optional(self.inner.sql.pending, ()).await?;
        Ok(pending.map_or(0, |pending| pending.0))
    }

    pub(crate) fn sql_unsent(&self) -> &'static str {
        self.inner.sql.unsent
    }

    pub(crate) fn sql_mark_sent(&self) -> &'static str {
        self.inner.sql.mark_sent
    }

    pub(crate) fn sql_prune_boundary(&self) -> &'static str {
        self.inner.sql.prune_boundary
    }

    pub(crate) fn sql_prune(&self) -> &'static str {
        self.inner.sql.prune
    }
}

/// Writing an event inside the transaction of the change it describes.
pub trait Append {
    /// Appends `event` and returns its place in commit order. Make it the last statement
    /// before the commit (on PostgreSQL it takes the outbox's lock until then), and call
    /// [`Outbox::committed`] after the commit.
    fn append(
        &mut self,
        outbox: &Outbox,
        event: &NewEvent,
    ) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;
}

impl Append for Tx {
    async fn append(&mut self, outbox: &Outbox, event: &NewEvent) -> Result<i64, sqlx::Error> {
        let (id, traceparent) = (event.id.to_string(), current_traceparent());
        let row = (
            id.as_str(),
            event.subject,
            event.payload.as_slice(),
            event.occur_time,
            traceparent.as_deref(),
        );
        let seq: Option<Seq> = match self {
            Tx::Sqlite(_) => {
                self.execute(outbox.inner.sql.insert, row).await?;
                self.last_insert_rowid().map(Seq)
            }
            // The lock is taken before the row (and so its `seq`) is made. A notice, when
            // sent, is delivered at commit and dropped on rollback; it is only a wake-up (a
            // lost one delays a reader until its next poll, it loses nothing).
            Tx::Postgres(_) => self.fetch_optional(outbox.inner.sql.insert_locked, row).await?,
        };
        seq.map(|seq| seq.0).ok_or(sqlx::Error::RowNotFound)
    }
}

/// The trace the current change runs in, to carry on to the event's consumers.
fn current_traceparent() -> Option<String> {
    crate::wire::traceparent(&meshwork_rpc::trace::current())
}

/// A row of either backend.
impl FromColumns for StoredEvent {
    type Error = sqlx::Error;
    fn from_columns(row: &impl Columns) -> Result<Self, sqlx::Error> {
        Ok(StoredEvent {
            seq: row.integer("seq")?,
            event_id: row.text("event_id")?,
            subject: row.text("subject")?,
            payload: row.bytes("payload")?,
            occur_time: row.integer("occur_time")?,
            traceparent: row.optional_text("traceparent")?,
        })
    }
}

/// The column `seq` of a row.
struct Seq(i64);

impl FromColumns for Seq {
    type Error = sqlx::Error;
    fn from_columns(row: &impl Columns) -> Result<Self, sqlx::Error> {
        row.integer("seq").map(Self)
    }
}

/// The column `pending` of a row.
struct Pending(i64);

impl FromColumns for Pending {
    type Error = sqlx::Error;
    fn from_columns(row: &impl Columns) -> Result<Self, sqlx::Error> {
        row.integer("pending").map(Self)
    }
}

/// A stable 64-bit key from the table's name (FNV-1a), the same in every replica and build.
const fn lock_key(table: &str) -> i64 {
    let bytes = table.as_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash as i64
}

/// A fresh SQLite database holding the outbox `test_outbox`, for this crate's tests.
#[cfg(test)]
pub(crate) async fn test_outbox(dir: &tempfile::TempDir) -> (Db, Outbox) {
    use meshwork_database::{DatabasePoolConfig, DatabaseUrl, Migrations};
    const MIGRATIONS: Migrations = Migrations {
        table: "test_migrations",
        sqlite: &[
            (1, "outbox", sqlite_migration!("test_outbox")),
            (2, "prune by seq", prune_by_seq_migration!("test_outbox")),
        ],
        postgres: &[
            (1, "outbox", postgres_migration!("test_outbox")),
            (2, "prune by seq", prune_by_seq_migration!("test_outbox")),
        ],
    };
    let url = DatabaseUrl::Sqlite(dir.path().join("outbox.db"));
    let db = Db::open(&url, &DatabasePoolConfig::default(), &MIGRATIONS)
        .await
        .unwrap();
    (db, Outbox::new("test_outbox", "test.v1.TestService"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u8) -> NewEvent {
        NewEvent {
            id: EventId::generate(),
            subject: "meshwork.test.v1.happened",
            payload: vec![n],
            occur_time: 1_000 + i64::from(n),
        }
    }

    #[tokio::test]
    async fn committed_events_are_kept_in_commit_order_and_rolled_back_ones_never() {
        let dir = tempfile::tempdir().unwrap();
        let (db, outbox) = test_outbox(&dir).await;
        let written = outbox.written();

        let (first, second, dropped) = (event(1), event(2), event(3));
        let mut appended = Vec::new();
        for event in [&first, &second] {
            let mut tx = db.begin().await.unwrap();
            appended.push(tx.append(&outbox, event).await.unwrap());
            tx.commit().await.unwrap();
            outbox.committed();
        }
        let mut tx = db.begin().await.unwrap();
        tx.append(&outbox, &dropped).await.unwrap();
        drop(tx);

        assert!(written.has_changed().unwrap(), "readers are woken");
        let events = outbox.after(&db, 0, 10).await.unwrap();
        let ids: Vec<_> = events.iter().map(|e| e.event_id.clone()).collect();
        assert_eq!(ids, [first.id.to_string(), second.id.to_string()]);
        assert_eq!(events[1].payload, [2]);
        // What `append` answers is the place the row was given.
        assert_eq!(appended, [events[0].seq, events[1].seq]);
        assert_eq!(outbox.seq_of(&db, &second.id).await.unwrap(), Some(events[1].seq));
        assert_eq!(outbox.seq_of(&db, &dropped.id).await.unwrap(), None);
        assert_eq!(outbox.last_seq(&db).await.unwrap(), events[1].seq);
        assert_eq!(outbox.pending(&db).await.unwrap(), 2);
        assert_eq!(outbox.after(&db, events[0].seq, 10).await.unwrap().len(), 1);
    }

    /// Applied migrations are checked against their text when a service starts: a changed
    /// byte (a comment too) stops every database that has applied it.
    #[test]
    fn the_applied_outbox_migrations_keep_their_text() {
        assert_eq!(
            prune_by_seq_migration!("t"),
            "-- Pruning walks seq (meshwork-events' outbox.rs): the index of occur_time goes.\n\
             DROP INDEX IF EXISTS t_by_time;\n"
        );
    }

    #[test]
    fn each_table_has_its_own_lock() {
        assert_ne!(lock_key("user_outbox"), lock_key("order_outbox"));
        assert_eq!(lock_key("user_outbox"), lock_key("user_outbox"));
        let outbox = Outbox::new("user_outbox", "user.v1.UserService");
        assert_ne!(
            lock_key(outbox.table()),
            outbox.relay_key(),
            "relaying never blocks writing"
        );
    }
}
