//! The relay: publishes a service's unsent outbox rows to JetStream in commit order, one at
//! a time, waits for each acknowledgement, and marks the acknowledged ones sent.
//!
//! - Delivery is at least once. A relay stopped between the acknowledgement and the mark
//!   (a crash, a lost database) publishes those rows again; each carries its event id as
//!   `Nats-Msg-Id`, and JetStream drops the repeat within its duplicate window.
//! - One at a time keeps the stream in commit order: with several publishes in flight, a
//!   failed one followed by an acknowledged one would be re-sent after it.
//! - On PostgreSQL, several replicas share one outbox and exactly one relays it: the one
//!   holding a session advisory lock, on a connection of its own that its queries use (if
//!   that connection breaks, the lock goes with it and another replica takes over).
//! - A broker that is down fails no call: rows wait, `meshwork_outbox_pending` grows, and
//!   they are sent once it is back. Without `EVENTS_URL` the rows stay until one is set.
//! - Sent rows are kept 24 hours (`WatchOrders` replays from them), then deleted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, message::PublishMessage};
use meshwork_database::{Columns, Db, FromColumns, Params, postgres};
use meshwork_rpc::trace;
use sqlx::{Connection as _, PgConnection};
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    EventsUrl, Outbox, StoredEvent, metrics,
    wire::{self, context_from},
};

/// Rows read per pass.
const BATCH: i64 = 256;
/// How often the outbox is looked at without a local wake-up: other replicas' rows, a
/// broker that came back, a lock another replica let go.
const POLL: Duration = Duration::from_secs(1);
/// How long sent events are kept for replays (CONTRACT.md: at least 24 hours).
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How often sent events older than [`RETENTION`] are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Events deleted per statement.
const PRUNE_BATCH: u64 = 1000;

/// Starts relaying `outbox` to the broker at `url` (none: the rows stay, and only
/// `meshwork_outbox_pending` is kept up to date). When `stop` is cancelled, the relay makes
/// a last pass and the task ends: cancel it after the server's calls have drained, and
/// await the task within what is left of the grace period.
pub fn start(db: Db, outbox: Outbox, url: Option<EventsUrl>, stop: CancellationToken) -> JoinHandle<()> {
    metrics::initialize();
    tokio::spawn(async move {
        match url {
            Some(url) => relay(db, outbox, url, stop).await,
            None => {
                tracing::info!(
                    outbox = outbox.table(),
                    "EVENTS_URL is not set: events stay in the outbox until a broker is configured"
                );
                count_pending(db, outbox, stop).await;
            }
        }
    })
}

/// Without a broker: keeps the pending gauge true, once per poll interval.
async fn count_pending(db: Db, outbox: Outbox, stop: CancellationToken) {
    let mut pending = PendingGauge::default();
    loop {
        pending.refresh(&db, &outbox).await;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// `meshwork_outbox_pending`, counted at most once per [`POLL`]: the count reads every
/// unsent row, and while the broker is away those are many, so counting at each commit
/// would make each write cost more than the last (measured: `make bench`'s CreateUser fell
/// to a third).
#[derive(Default)]
struct PendingGauge {
    counted_at: Option<tokio::time::Instant>,
}

impl PendingGauge {
    async fn refresh(&mut self, db: &Db, outbox: &Outbox) {
        let now = tokio::time::Instant::now();
        if self.counted_at.is_some_and(|at| now - at < POLL) {
            return;
        }
        self.counted_at = Some(now);
        if let Ok(pending) = outbox.pending(db).await {
            metrics::PENDING.set(pending);
        }
    }
}

/// Waits for a local commit, the poll interval or `stop`; `false` once stopped.
async fn wait(written: &mut watch::Receiver<u64>, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        _ = written.changed() => true,
        () = tokio::time::sleep(POLL) => true,
    }
}

async fn relay(db: Db, outbox: Outbox, url: EventsUrl, stop: CancellationToken) {
    let client = match url.connect(outbox.source()).await {
        Ok(client) => client,
        Err(error) => {
            // Only a malformed address fails here (connecting goes on in the background).
            tracing::error!(%error, events_url = %url, "cannot use EVENTS_URL; events stay in the outbox");
            return count_pending(db, outbox, stop).await;
        }
    };
    tracing::info!(events_url = %url, outbox = outbox.table(), "relaying events");
    let mut relay = Relay {
        js: jetstream::new(client.clone()),
        client,
        outbox: outbox.clone(),
        stream_ready: false,
        failing: false,
        pruned_at: None,
    };
    let mut written = outbox.written();
    let mut candidate = None;
    let mut pending = PendingGauge::default();
    loop {
        let Some(mut lease) = Lease::take(&db, &outbox, &mut candidate).await else {
            // Another replica relays (or the database is away): look again after the poll
            // interval, not at each commit (no query per write on replicas that wait).
            pending.refresh(&db, &outbox).await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(POLL) => continue,
            }
        };
        loop {
            let result = relay.drain(&mut lease).await;
            pending.refresh(&db, &outbox).await;
            if stop.is_cancelled() {
                // Stopped while that pass ran: one more, for what committed meanwhile.
                if result.is_ok() {
                    let _ = relay.drain(&mut lease).await;
                }
                return;
            }
            if let Err(LeaseLost(error)) = result {
                tracing::warn!(%error, "the outbox relay lost its database connection");
                break;
            }
            relay.prune(&mut lease).await;
            if !wait(&mut written, &stop).await {
                // The last pass: what the drained calls committed.
                let _ = relay.drain(&mut lease).await;
                return;
            }
        }
    }
}

/// The relay's state across passes.
struct Relay {
    client: async_nats::Client,
    js: jetstream::Context,
    outbox: Outbox,
    /// The stream is known to exist (checked again after any failure).
    stream_ready: bool,
    /// The broker is failing: logged once per outage, not once per row.
    failing: bool,
    pruned_at: Option<tokio::time::Instant>,
}

/// The database went away under the relay.
struct LeaseLost(sqlx::Error);

impl Relay {
    /// Publishes unsent rows until none is left or the broker fails (they wait for the next
    /// pass); an error only when the database did.
    async fn drain(&mut self, lease: &mut Lease) -> Result<(), LeaseLost> {
        loop {
            if self.client.connection_state() != async_nats::connection::State::Connected {
                self.failed(&"the broker is not connected");
                return Ok(());
            }
            let rows = lease.unsent(&self.outbox).await.map_err(LeaseLost)?;
            if rows.is_empty() {
                return Ok(());
            }
            let mut sent = None;
            for row in &rows {
                match self.publish(row).await {
                    Ok(()) => sent = Some(row.seq),
                    Err(error) => {
                        self.failed(&error);
                        break;
                    }
                }
            }
            let Some(seq) = sent else {
                return Ok(());
            };
            lease.mark_sent(&self.outbox, seq).await.map_err(LeaseLost)?;
            if self.failing {
                tracing::info!("the broker acknowledges events again");
                self.failing = false;
            }
            if sent != rows.last().map(|row| row.seq) || (rows.len() as i64) < BATCH {
                return Ok(());
            }
        }
    }

    /// Publishes one row and waits for JetStream's acknowledgement.
    async fn publish(&mut self, row: &StoredEvent) -> Result<(), async_nats::Error> {
        if !self.stream_ready {
            wire::stream(&self.js).await?;
            self.stream_ready = true;
        }
        let span = tracing::info_span!(
            target: trace::CALL_SPANS,
            "publish",
            otel.name = %format_args!("publish {}", row.subject),
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.destination.name = %row.subject,
            messaging.message.id = %row.event_id,
        );
        let trace = trace::continue_trace(span, context_from(row.traceparent.as_deref()));
        let headers = wire::headers(
            &row.event_id,
            &row.subject,
            self.outbox.source(),
            row.occur_time,
            &trace.context(),
        );
        let publish = PublishMessage::build()
            .payload(row.payload.clone().into())
            .headers(headers);
        let acked = async {
            let ack = self.js.send_publish(row.subject.clone(), publish).await?;
            ack.await?;
            Ok::<_, async_nats::Error>(())
        };
        match trace.run(acked).await {
            Ok(()) => {
                metrics::PUBLISHED
                    .with_label_values(&[row.subject.as_str()])
                    .inc();
                Ok(())
            }
            Err(error) => {
                metrics::PUBLISH_FAILURES.inc();
                self.stream_ready = false;
                Err(error)
            }
        }
    }

    fn failed(&mut self, error: &dyn std::fmt::Display) {
        if !self.failing {
            tracing::warn!(%error, "cannot publish events; they wait in the outbox");
            self.failing = true;
        }
    }

    /// Deletes sent events older than [`RETENTION`], every [`PRUNE_EVERY`].
    async fn prune(&mut self, lease: &mut Lease) {
        let now = tokio::time::Instant::now();
        if self.pruned_at.is_some_and(|at| now - at < PRUNE_EVERY) {
            return;
        }
        self.pruned_at = Some(now);
        let before = now_micros() - RETENTION.as_micros() as i64;
        let pruned = async {
            // Only a prefix of the outbox goes (no hole a resumed watch could fall into,
            // whatever the replicas' clocks), in batches (no long lock, no timeout).
            let Some(through) = lease.prunable_through(&self.outbox, before).await? else {
                return Ok(());
            };
            while lease.prune(&self.outbox, through).await? == PRUNE_BATCH {}
            Ok::<_, sqlx::Error>(())
        };
        if let Err(error) = pruned.await {
            tracing::warn!(%error, "cannot delete old events from the outbox");
        }
    }
}

/// The right to relay, and where the relay's statements run.
enum Lease {
    /// A SQLite file has one process: always granted.
    Sqlite(Db),
    /// Holds the outbox's session advisory lock, on a connection of its own (not the pool's:
    /// it would take one from the calls for good), closed when dropped, so the lock never
    /// outlives the relay's hold on it. The relay's statements run on it too: when they fail,
    /// the lock may be gone, and the relay stops until it holds it again.
    Postgres(PgConnection),
}

impl Lease {
    /// The lease, unless another replica holds it (or the database does not answer). A
    /// replica that waits for it keeps its connection in `candidate` for the next try.
    async fn take(db: &Db, outbox: &Outbox, candidate: &mut Option<PgConnection>) -> Option<Self> {
        let pool = match db {
            Db::Sqlite(_) => return Some(Self::Sqlite(db.clone())),
            Db::Postgres(pool) => pool,
        };
        let mut connection = match candidate.take() {
            Some(connection) => connection,
            None => PgConnection::connect_with(&pool.connect_options()).await.ok()?,
        };
        // A failed query drops (closes) the connection: the next try opens another.
        let row = sqlx::query("SELECT pg_try_advisory_lock($1) AS locked")
            .bind(outbox.relay_key())
            .fetch_one(&mut connection)
            .await
            .ok()?;
        let locked: bool = sqlx::Row::try_get(&row, "locked").ok()?;
        if !locked {
            *candidate = Some(connection);
            return None;
        }
        Some(Self::Postgres(connection))
    }

    async fn unsent(&mut self, outbox: &Outbox) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let (sql, params) = (outbox.sql_unsent(), (BATCH,));
        match self {
            Self::Sqlite(db) => db.fetch_all(sql, params).await,
            Self::Postgres(connection) => postgres::fetch_all(connection, sql, params).await,
        }
    }

    async fn mark_sent(&mut self, outbox: &Outbox, through: i64) -> Result<(), sqlx::Error> {
        self.execute(outbox.sql_mark_sent(), (now_micros(), through))
            .await
            .map(drop)
    }

    /// The newest event that may go: sent, older than `before`, and with nothing unsent or
    /// newer before it.
    async fn prunable_through(&mut self, outbox: &Outbox, before: i64) -> Result<Option<i64>, sqlx::Error> {
        let (sql, params) = (outbox.sql_prune_boundary(), (before,));
        let boundary: Option<KeepFrom> = match self {
            Self::Sqlite(db) => db.fetch_optional(sql, params).await?,
            Self::Postgres(connection) => postgres::fetch_optional(connection, sql, params).await?,
        };
        // None: the outbox is empty.
        let first_kept = boundary.and_then(|boundary| boundary.0);
        Ok(first_kept.and_then(|first_kept| (first_kept > 1).then_some(first_kept - 1)))
    }

    /// Deletes up to [`PRUNE_BATCH`] of the oldest events up to `through`; how many it did.
    async fn prune(&mut self, outbox: &Outbox, through: i64) -> Result<u64, sqlx::Error> {
        self.execute(outbox.sql_prune(), (through, PRUNE_BATCH as i64))
            .await
    }

    async fn execute(&mut self, sql: &'static str, params: impl Params<'_>) -> Result<u64, sqlx::Error> {
        match self {
            Self::Sqlite(db) => db.execute(sql, params).await,
            Self::Postgres(connection) => postgres::execute(connection, sql, params).await,
        }
    }
}

/// The first event to keep: when every one may go, the one after the last (`NULL` when the
/// outbox is empty).
struct KeepFrom(Option<i64>);

impl FromColumns for KeepFrom {
    type Error = sqlx::Error;
    fn from_columns(row: &impl Columns) -> Result<Self, sqlx::Error> {
        row.optional_integer("keep_from").map(Self)
    }
}

fn now_micros() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    since_epoch.as_micros() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Append, NewEvent, outbox::test_outbox};

    #[tokio::test]
    async fn pruning_deletes_only_an_old_and_sent_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let (db, outbox) = test_outbox(&dir).await;
        // Three old events and a new one; the first and the third sent.
        for occur_time in [1, 2, 3, now_micros()] {
            append(&db, &outbox, occur_time).await;
        }
        let mut lease = Lease::Sqlite(db.clone());
        for seq in [1_i64, 3] {
            db.execute("UPDATE test_outbox SET sent_time = 1 WHERE seq = $1", (seq,))
                .await
                .unwrap();
        }
        let before = now_micros() - RETENTION.as_micros() as i64;
        let through = lease.prunable_through(&outbox, before).await.unwrap();
        assert_eq!(through, Some(1), "the unsent second event keeps the third");
        assert_eq!(lease.prune(&outbox, through.unwrap()).await.unwrap(), 1);
        assert_eq!(kept(&db, &outbox).await, [2, 3, 4]);

        // Everything sent: the new event (and what follows it) stays.
        db.execute("UPDATE test_outbox SET sent_time = 1", ())
            .await
            .unwrap();
        let through = lease.prunable_through(&outbox, before).await.unwrap();
        assert_eq!(through, Some(3), "the fourth event is newer than the retention");
        // And once it is old too, everything may go, up to the last event read: one
        // committed after that is never in the range, though nobody has sent it yet.
        let through = lease.prunable_through(&outbox, now_micros() + 1).await.unwrap();
        assert_eq!(through, Some(4));
        append(&db, &outbox, 5).await;
        assert_eq!(lease.prune(&outbox, through.unwrap()).await.unwrap(), 3);
        let kept = kept(&db, &outbox).await;
        assert_eq!(
            kept,
            [5],
            "the unsent event committed after the boundary was read"
        );
    }

    /// Commits one event made at `occur_time`.
    async fn append(db: &Db, outbox: &Outbox, occur_time: i64) {
        let event = NewEvent::new("meshwork.test.v1.happened", occur_time, |_| vec![]);
        let mut tx = db.begin().await.unwrap();
        tx.append(outbox, &event).await.unwrap();
        tx.commit().await.unwrap();
    }

    /// The `seq` of every event in the outbox, in order.
    async fn kept(db: &Db, outbox: &Outbox) -> Vec<i64> {
        let events = outbox.after(db, 0, 10).await.unwrap();
        events.iter().map(|event| event.seq).collect()
    }

    #[tokio::test]
    async fn an_empty_outbox_has_nothing_to_prune() {
        let dir = tempfile::tempdir().unwrap();
        let (db, outbox) = test_outbox(&dir).await;
        let mut lease = Lease::Sqlite(db);
        assert_eq!(lease.prunable_through(&outbox, now_micros()).await.unwrap(), None);
    }

    /// The outbox's migrations leave no index of `occur_time`: every event would write it,
    /// and the prune walks `seq`.
    #[tokio::test]
    async fn the_outbox_has_no_time_index() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _outbox) = test_outbox(&dir).await;
        let sql =
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'test_outbox' ORDER BY name";
        let indexes: Vec<IndexName> = db.fetch_all(sql, ()).await.unwrap();
        let names: Vec<&str> = indexes.iter().map(|index| index.0.as_str()).collect();
        // The event_id's UNIQUE, and the unsent events'.
        assert_eq!(names, ["sqlite_autoindex_test_outbox_1", "test_outbox_unsent"]);
    }

    struct IndexName(String);

    impl FromColumns for IndexName {
        type Error = sqlx::Error;
        fn from_columns(row: &impl Columns) -> Result<Self, sqlx::Error> {
            row.text("name").map(Self)
        }
    }
}
