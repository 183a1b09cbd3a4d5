//! PostgreSQL for the tests: a fresh database per service under test, dropped afterwards,
//! so test runs never see each other's rows.
//!
//! - `MESHWORK_TEST_POSTGRES_URL`: a server the tests may create databases on, e.g.
//!   `postgres://postgres@127.0.0.1:5432/postgres` (`.ci/run` sets it). The PostgreSQL-only
//!   tests (`tests/postgres.rs`) are `#[ignore]`d, so a run without a server reports them as
//!   ignored rather than passed; `make test` runs them (`--include-ignored`) when it is set.
//! - `MESHWORK_TEST_BACKEND=postgres`: run every test's user-service and order-service on
//!   PostgreSQL instead of SQLite.

use sqlx::{Connection, PgConnection};

/// The admin URL of the test server, if there is one.
pub fn postgres_url() -> Option<String> {
    std::env::var("MESHWORK_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty())
}

/// Whether the suite runs on PostgreSQL.
pub fn backend_is_postgres() -> bool {
    std::env::var("MESHWORK_TEST_BACKEND").as_deref() == Ok("postgres")
}

/// A fresh database when the suite runs on PostgreSQL; `None` on SQLite.
pub fn fresh_for_backend() -> Option<TestDatabase> {
    if !backend_is_postgres() {
        return None;
    }
    let admin = postgres_url().expect("MESHWORK_TEST_BACKEND=postgres needs MESHWORK_TEST_POSTGRES_URL");
    Some(TestDatabase::create(&admin))
}

/// The PostgreSQL server for a PostgreSQL-only test. Those tests are `#[ignore]`d, so this
/// runs only when they were asked for (`--ignored`): then a missing server is a failure,
/// never a silent pass.
pub fn required_postgres_url() -> String {
    postgres_url().expect(
        "this test needs PostgreSQL: set MESHWORK_TEST_POSTGRES_URL, e.g. \
         postgres://postgres@127.0.0.1:5432/postgres",
    )
}

/// A database of its own on the test server; dropped (with its connections) when dropped.
#[derive(Debug)]
pub struct TestDatabase {
    /// What DATABASE_URL should be for a service using it.
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    pub fn create(admin_url: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos();
        let name = format!("meshwork_test_{}_{nanos}", std::process::id());
        run_admin(admin_url, format!("CREATE DATABASE {name}"));
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("the admin URL names a database");
        Self {
            url: format!("{base}/{name}"),
            admin_url: admin_url.to_owned(),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        run_admin(
            &self.admin_url,
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs one statement on the admin database, on a thread of its own: callers may be
/// inside a tokio runtime, where blocking on another runtime is not allowed.
fn run_admin(admin_url: &str, statement: String) {
    let admin_url = admin_url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for one statement");
        runtime.block_on(async {
            let mut connection = PgConnection::connect(&admin_url)
                .await
                .expect("the test PostgreSQL answers");
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut connection)
                .await
                .expect("the admin statement runs");
        });
    })
    .join()
    .expect("the admin thread finishes");
}
