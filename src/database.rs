//! Opening a service's database and running its migrations, which are embedded in the
//! binary (`include_str!`) so a binary needs no files beside it.
//!
//! SQLite is the embedded default: WAL so readers never wait for the writer, foreign keys
//! on (SQLite leaves them off by default), and a busy timeout so concurrent writers queue
//! instead of failing with SQLITE_BUSY.

use std::{borrow::Cow, path::Path, str::FromStr, time::Duration};

use sqlx::{
    SqlSafeStr,
    migrate::{Migration, MigrationType, Migrator},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous},
};

/// One embedded migration: its version, a description and its SQL.
pub type EmbeddedMigration = (i64, &'static str, &'static str);

/// A migrator over SQL compiled into the binary.
///
/// `sqlx::migrate!` would do this at compile time, but it needs sqlx's `macros` feature,
/// which doubles the build time of the workspace.
pub fn migrator(migrations: &[EmbeddedMigration]) -> Migrator {
    Migrator::with_migrations(
        migrations
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
    )
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the directory of {path}: {source}")]
    CreateDir { path: String, source: std::io::Error },
    #[error("{0} is not supported by this build")]
    Unsupported(String),
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
pub async fn open_sqlite(path: &Path, migrations: &[EmbeddedMigration]) -> Result<SqlitePool, OpenError> {
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

/// Whether a driver error is about reaching the database (worth a retry, answered
/// `UNAVAILABLE`) rather than about the statement.
pub fn is_transient(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed
    ) || matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("5")) // SQLITE_BUSY
}
