//! Opening a service's database and running its migrations, which are embedded in the
//! binary (`include_str!`) so a binary needs no files beside it.
//!
//! - SQLite, the embedded default: WAL so readers never wait for the writer, one connection
//!   for all writes ([`crate::SqliteWriter`]), foreign keys on (SQLite leaves them off by
//!   default). sqlx creates the file and migrates it, on one connection closed afterwards;
//!   the calls' statements then run through rusqlite ([`crate::sqlite`] says why).
//! - PostgreSQL, for several replicas: a bounded pool, an acquire timeout (a call waits at
//!   most that long for a connection, then is `UNAVAILABLE`), a `statement_timeout`, and
//!   migrations under sqlx's advisory lock, so replicas starting together migrate once.

use std::{borrow::Cow, path::Path, str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    Connection as _, SqlSafeStr,
    migrate::{Migration, MigrationType, Migrator},
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous},
};

use crate::{DatabasePoolConfig, DatabaseUrl, Db, SqliteDb, SqliteReaders, SqliteWriter, db::is_transient};

/// One embedded migration: its version, a description and its SQL.
pub type EmbeddedMigration = (i64, &'static str, &'static str);

/// A service's schema history, compiled into its binary: one list per backend, because
/// their DDL differs (types, collations).
pub struct Migrations {
    /// Where applied versions are recorded: one table per service, so that services may
    /// share one database (each has version 1, and would otherwise collide).
    pub table: &'static str,
    pub sqlite: &'static [EmbeddedMigration],
    pub postgres: &'static [EmbeddedMigration],
}

/// A migrator over SQL compiled into the binary.
///
/// `sqlx::migrate!` would do this at compile time, but it needs sqlx's `macros` feature,
/// which doubles the build time of the workspace.
fn migrator(table: &'static str, steps: &'static [EmbeddedMigration]) -> Migrator {
    let mut migrator = Migrator::with_migrations(
        steps
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    );
    migrator.dangerous_set_table_name(table);
    migrator
}

/// Why a database could not be opened. `path` is the database as logs show it (no password).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the directory of {path}: {source}")]
    CreateDir { path: String, source: std::io::Error },
    #[error("cannot open {path}: {source}")]
    Connect { path: String, source: sqlx::Error },
    #[error("cannot migrate {path}: {source}")]
    Migrate {
        path: String,
        source: sqlx::migrate::MigrateError,
    },
}

impl Db {
    /// Opens the database `url` names and brings its schema up to date. `pool` applies to
    /// PostgreSQL; of it SQLite takes only the acquire timeout, for its one writer.
    pub async fn open(
        url: &DatabaseUrl,
        pool: &DatabasePoolConfig,
        migrations: &Migrations,
    ) -> Result<Self, OpenError> {
        let shown = url.to_string();
        Ok(match url {
            DatabaseUrl::Sqlite(path) => Self::Sqlite(open_sqlite(path, pool, migrations, &shown).await?),
            DatabaseUrl::Postgres(url) => {
                let db = open_postgres(url, pool, &shown).await?;
                // `Migrator` takes a PostgreSQL advisory lock around the run: safe with
                // many replicas.
                run(migrator(migrations.table, migrations.postgres), &db, shown).await?;
                Self::Postgres(db)
            }
        })
    }
}

async fn run<'a, A>(migrator: Migrator, db: A, shown: String) -> Result<(), OpenError>
where
    A: sqlx::Acquire<'a>,
    <A::Connection as std::ops::Deref>::Target: sqlx::migrate::Migrate,
{
    migrator
        .run(db)
        .await
        .map_err(|source| OpenError::Migrate { path: shown, source })
}

/// Opens (creating if missing, with its directory) the SQLite database at `path` and
/// migrates it, then opens its writer and its readers.
async fn open_sqlite(
    path: &Path,
    pool: &DatabasePoolConfig,
    migrations: &Migrations,
    shown: &str,
) -> Result<SqliteDb, OpenError> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir {
            path: shown.to_owned(),
            source,
        })?;
    }
    let options = SqliteConnectOptions::from_str("sqlite:")
        .expect("a bare sqlite: URL parses")
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        // Another process migrating the same file (two replicas on one volume) is waited for.
        .busy_timeout(Duration::from_secs(5));
    let connect_error = |source| OpenError::Connect {
        path: shown.to_owned(),
        source,
    };
    let mut migrating = SqliteConnection::connect_with(&options)
        .await
        .map_err(connect_error)?;
    run(
        migrator(migrations.table, migrations.sqlite),
        &mut migrating,
        shown.to_owned(),
    )
    .await?;
    migrating.close().await.map_err(connect_error)?;
    let writer = SqliteWriter::open(path, pool.database_acquire_timeout).map_err(connect_error)?;
    let reads = SqliteReaders::open(path).map_err(connect_error)?;
    Ok(SqliteDb {
        reads: Arc::new(reads),
        writer: Arc::new(writer),
    })
}

/// How long a starting service waits for an unreachable PostgreSQL before it gives up.
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

/// Connects to PostgreSQL at `url`. The first connection is made here: a wrong URL or
/// credentials stop the process at start, an unreachable server is waited for up to
/// [`CONNECT_PATIENCE`].
async fn open_postgres(url: &str, pool: &DatabasePoolConfig, shown: &str) -> Result<PgPool, OpenError> {
    let connect_error = |source| OpenError::Connect {
        path: shown.to_owned(),
        source,
    };
    let statement_timeout = format!("{}ms", pool.database_statement_timeout.as_millis());
    let options = PgConnectOptions::from_str(url)
        .map_err(connect_error)?
        // A transaction left open by a process that stopped answering (a lost node) would
        // hold its locks, the outbox's among them, until TCP noticed, hours later.
        .options([
            ("statement_timeout", statement_timeout.as_str()),
            ("idle_in_transaction_session_timeout", "10s"),
        ]);
    let pool_options = PgPoolOptions::new()
        .max_connections(pool.database_max_connections)
        .acquire_timeout(pool.database_acquire_timeout);
    // In a cluster the database may start after the service: keep trying for a while (the
    // port stays closed meanwhile, so probes report "starting") before giving up.
    let give_up_at = tokio::time::Instant::now() + CONNECT_PATIENCE;
    let mut pause = Duration::from_millis(250);
    loop {
        match pool_options.clone().connect_with(options.clone()).await {
            Ok(pool) => return Ok(pool),
            Err(error) if is_transient(&error) && tokio::time::Instant::now() + pause < give_up_at => {
                tracing::warn!(database = %shown, %error, ?pause, "database not reachable yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            Err(source) => return Err(connect_error(source)),
        }
    }
}
