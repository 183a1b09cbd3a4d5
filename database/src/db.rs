//! [`Db`]: one handle over either backend, and the few helpers that let a store write each
//! statement once.
//!
//! Why an enum rather than `sqlx::Any` or a trait per backend: the driver types stay
//! concrete, pool options and PostgreSQL's `LISTEN` stay available, and a store can still
//! name the backend where the two really differ ([`crate::Tx::postgres`]).

use std::{sync::Arc, time::Duration};

use serde::de::DeserializeOwned;
use sqlx::{
    Row,
    postgres::{PgPool, PgRow},
    types::Json,
};

use crate::{SqliteReaders, SqliteWriter};

/// A service's database: a SQLite file or a pool of PostgreSQL connections. Cheap to clone
/// (the connections are shared).
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqliteDb),
    Postgres(PgPool),
}

/// A SQLite file as a service uses it: reads through `reads`, writes through the one
/// connection of `writer` ([`crate::sqlite`] says why both run on the calling thread).
#[derive(Debug, Clone)]
pub struct SqliteDb {
    pub reads: Arc<SqliteReaders>,
    pub writer: Arc<SqliteWriter>,
}

impl Db {
    /// The backend's name as OpenTelemetry's `db.system` attribute spells it.
    pub fn system(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgresql",
        }
    }

    /// Whether the database answers a trivial query within a second: the readiness check.
    /// On SQLite the query reads the file's first page (the schema).
    pub async fn answers(&self) -> bool {
        let ping = async {
            match self {
                Self::Sqlite(sqlite) => sqlite.reads.read(|connection| {
                    connection
                        .query_row("SELECT count(*) FROM sqlite_schema", (), |_| Ok(()))
                        .map_err(crate::sqlite::SqliteError::from_driver)
                }),
                Self::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
            }
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), ping).await,
            Ok(Ok(()))
        )
    }
}

/// The column types a store reads, the same way from a row of either backend (sqlx's
/// `PgRow`, rusqlite's `Row`).
pub trait Columns {
    fn text(&self, column: &str) -> Result<String, sqlx::Error>;
    fn integer(&self, column: &str) -> Result<i64, sqlx::Error>;
    /// An integer column that may be `NULL` (an aggregate over no row).
    fn optional_integer(&self, column: &str) -> Result<Option<i64>, sqlx::Error>;
    /// A text column that may be `NULL`.
    fn optional_text(&self, column: &str) -> Result<Option<String>, sqlx::Error>;
    /// A binary column: `BYTEA` in PostgreSQL, `BLOB` in SQLite.
    fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error>;
    /// A JSON column: `JSONB` in PostgreSQL, `TEXT` in SQLite (bound as [`crate::Json`]).
    fn json<T: DeserializeOwned + 'static>(&self, column: &str) -> Result<T, sqlx::Error>;
}

impl Columns for PgRow {
    fn text(&self, column: &str) -> Result<String, sqlx::Error> {
        self.try_get(column)
    }
    fn integer(&self, column: &str) -> Result<i64, sqlx::Error> {
        self.try_get(column)
    }
    fn optional_integer(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(column)
    }
    fn optional_text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(column)
    }
    fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error> {
        self.try_get(column)
    }
    fn json<T: DeserializeOwned + 'static>(&self, column: &str) -> Result<T, sqlx::Error> {
        self.try_get::<Json<T>, _>(column).map(|json| json.0)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DatabasePoolConfig, DatabaseUrl, Migrations};

    const MIGRATIONS: Migrations = Migrations {
        table: "test_migrations",
        sqlite: &[(
            1,
            "things",
            "CREATE TABLE things (id TEXT PRIMARY KEY, n INTEGER NOT NULL, doc TEXT NOT NULL)",
        )],
        postgres: &[(
            1,
            "things",
            "CREATE TABLE things (id TEXT PRIMARY KEY, n BIGINT NOT NULL, doc JSONB NOT NULL)",
        )],
    };

    /// A row of `things`, as a store would read it.
    struct Thing {
        id: String,
        doc: Vec<String>,
    }

    impl crate::FromColumns for Thing {
        type Error = sqlx::Error;
        fn from_columns(row: &impl Columns) -> Result<Self, sqlx::Error> {
            Ok(Self {
                id: row.text("id")?,
                doc: row.json("doc")?,
            })
        }
    }

    /// One SQL text, `$n` placeholders used out of order and twice, a JSON column: what the
    /// stores rely on, on whichever backend `db` is.
    async fn one_statement_serves(db: &Db) {
        let insert = "INSERT INTO things (id, n, doc) VALUES ($2, $1, $3)";
        for (id, n) in [("a", 1_i64), ("b", 2), ("c", 3)] {
            let mut tx = db.begin().await.unwrap();
            let doc = vec![id.to_owned(); n as usize];
            tx.execute(insert, (n, id, crate::Json(&doc))).await.unwrap();
            tx.commit().await.unwrap();
        }
        let select = "SELECT id, n, doc FROM things WHERE ($1 IS NULL OR id = $1 OR n = $2) ORDER BY id";
        let rows = |filter: Option<&'static str>, n: i64| async move {
            let things: Vec<Thing> = db.fetch_all(select, (filter, n)).await.unwrap();
            things
                .into_iter()
                .map(|thing| (thing.id, thing.doc.len()))
                .collect::<Vec<_>>()
        };
        assert_eq!(rows(Some("a"), 3).await, [("a".into(), 1), ("c".into(), 3)]);
        assert_eq!(rows(None, 0).await.len(), 3);
        assert!(db.answers().await);
    }

    #[tokio::test]
    async fn sqlite_binds_numbered_placeholders_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::Sqlite(dir.path().join("nested/test.db"));
        let db = Db::open(&url, &DatabasePoolConfig::default(), &MIGRATIONS)
            .await
            .unwrap();
        assert_eq!(db.system(), "sqlite");
        one_statement_serves(&db).await;
        // Opening again finds the schema up to date.
        Db::open(&url, &DatabasePoolConfig::default(), &MIGRATIONS)
            .await
            .unwrap();
    }

    /// On the server `MESHWORK_TEST_POSTGRES_URL` names (a fresh database is made there and
    /// dropped): `cargo test -p meshwork-database -- --ignored`.
    #[tokio::test]
    #[ignore = "needs MESHWORK_TEST_POSTGRES_URL"]
    async fn postgres_runs_the_same_statements() {
        let admin = std::env::var("MESHWORK_TEST_POSTGRES_URL").expect("MESHWORK_TEST_POSTGRES_URL is set");
        let name = format!("meshwork_database_test_{}", std::process::id());
        let admin_pool = PgPool::connect(&admin).await.unwrap();
        let create = format!("CREATE DATABASE {name}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&admin_pool)
            .await
            .unwrap();
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&name);
        let db = Db::open(
            &url.as_str().parse().unwrap(),
            &DatabasePoolConfig::default(),
            &MIGRATIONS,
        )
        .await
        .unwrap();
        assert_eq!(db.system(), "postgresql");
        one_statement_serves(&db).await;
        let Db::Postgres(pool) = db else { unreachable!() };
        pool.close().await;
        let drop = format!("DROP DATABASE {name}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
            .execute(&admin_pool)
            .await
            .unwrap();
    }
}
