//! Opening a service's database and running its migrations, which are embedded in the
//! binary (`include_str!`) so a binary needs no files beside it.
//!
//! - SQLite, the embedded default: WAL so readers never wait for the writer, foreign keys
//!   on (SQLite leaves them off by default), and a busy timeout so concurrent writers queue
//!   instead of failing with SQLITE_BUSY.
//! - PostgreSQL, for several replicas: a bounded pool, an acquire timeout (a call waits at
//!   most that long for a connection, then is `UNAVAILABLE`), a `statement_timeout`, and
//!   migrations under sqlx's advisory lock, so replicas starting together migrate once.

use std::{borrow::Cow, path::Path, str::FromStr, time::Duration};

use sqlx::{
    SqlSafeStr,
    migrate::{Migration, MigrationType, Migrator},
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous},
};

use crate::config::DatabasePoolConfig;

/// One embedded migration: its version, a description and its SQL.
pub type EmbeddedMigration = (i64, &'static str, &'static str);

/// A service's schema history, compiled into its binary.
pub struct Migrations {
    /// Where applied versions are recorded: one table per service, so that services may
    /// share one database (each has version 1, and would otherwise collide).
    pub table: &'static str,
    pub steps: &'static [EmbeddedMigration],
}

/// A migrator over SQL compiled into the binary.
///
/// `sqlx::migrate!` would do this at compile time, but it needs sqlx's `macros` feature,
/// which doubles the build time of the workspace.
pub fn migrator(migrations: &Migrations) -> Migrator {
    let mut migrator = Migrator::with_migrations(
        migrations
            .steps
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
    migrator.dangerous_set_table_name(migrations.table);
    migrator
}

/// Why a database could not be opened.
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

/// Opens (creating if missing, with its directory) the SQLite database at `path` and
/// brings its schema up to date.
pub async fn open_sqlite(path: &Path, migrations: &Migrations) -> Result<SqlitePool, OpenError> {
    let shown = path.display().to_string();
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir {
            path: shown.clone(),
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
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .map_err(|source| OpenError::Connect {
            path: shown.clone(),
            source,
        })?;
    migrator(migrations)
        .run(&pool)
        .await
        .map_err(|source| OpenError::Migrate { path: shown, source })?;
    Ok(pool)
}

/// How long a starting service waits for an unreachable PostgreSQL before it gives up.
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

/// Connects to PostgreSQL at `url` and brings the schema up to date. The first connection
/// is made here: a wrong URL or credentials stop the process at start, an unreachable
/// server is waited for up to [`CONNECT_PATIENCE`].
pub async fn open_postgres(
    url: &str,
    pool: &DatabasePoolConfig,
    migrations: &Migrations,
) -> Result<PgPool, OpenError> {
    let shown = crate::config::DatabaseUrl::Postgres(url.to_owned()).to_string();
    let statement_timeout = format!("{}ms", pool.database_statement_timeout.as_millis());
    let options = PgConnectOptions::from_str(url)
        .map_err(|source| OpenError::Connect {
            path: shown.clone(),
            source,
        })?
        .options([("statement_timeout", statement_timeout.as_str())]);
    let pool_options = PgPoolOptions::new()
        .max_connections(pool.database_max_connections)
        .acquire_timeout(pool.database_acquire_timeout);
    // In a cluster the database may start after the service: keep trying for a while (the
    // port stays closed meanwhile, so probes report "starting") before giving up.
    let give_up_at = tokio::time::Instant::now() + CONNECT_PATIENCE;
    let mut pause = Duration::from_millis(250);
    let pool = loop {
        match pool_options.clone().connect_with(options.clone()).await {
            Ok(pool) => break pool,
            Err(error) if is_transient(&error) && tokio::time::Instant::now() + pause < give_up_at => {
                tracing::warn!(database = %shown, %error, ?pause, "database not reachable yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            Err(source) => return Err(OpenError::Connect { path: shown, source }),
        }
    };
    // `Migrator` takes a PostgreSQL advisory lock around the run: safe with many replicas.
    migrator(migrations)
        .run(&pool)
        .await
        .map_err(|source| OpenError::Migrate { path: shown, source })?;
    Ok(pool)
}

/// Whether the database answers a trivial query within a second: the readiness check.
pub async fn answers<'c, E>(executor: E) -> bool
where
    E: sqlx::Executor<'c>,
{
    let ping = executor.execute("SELECT 1");
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ping).await,
        Ok(Ok(_))
    )
}

/// Whether a driver error is about reaching the database (worth a retry, answered
/// `UNAVAILABLE`) rather than about the statement.
pub fn is_transient(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed
    ) || matches!(error, sqlx::Error::Database(db) if is_transient_code(db.code().as_deref()))
}

/// SQLITE_BUSY; PostgreSQL's connection exceptions (08…), "cannot connect now" (57P03),
/// admin shutdown (57P01) and statement timeout (57014).
fn is_transient_code(code: Option<&str>) -> bool {
    match code {
        Some(code) => code == "5" || code.starts_with("08") || matches!(code, "57P01" | "57P03" | "57014"),
        None => false,
    }
}
