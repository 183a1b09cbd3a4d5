//! Scale-out on PostgreSQL: replicas that share one database, and a database that goes away.
//! Every test here needs a PostgreSQL server, so each is `#[ignore]`d: a plain `cargo test`
//! reports them as ignored (not passed), and `make test` runs them when
//! MESHWORK_TEST_POSTGRES_URL is set:
//!
//! ```sh
//! MESHWORK_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo test -p meshwork-e2e --test postgres -- --ignored
//! ```

use std::{collections::HashSet, path::PathBuf, process::Command, sync::Arc};

use meshwork_e2e::{
    Service, Spawn,
    database::{TestDatabase, required_postgres_url},
    eventually,
    fixtures::{an_order, an_order_with_key, new_user},
};
use meshwork_proto::{
    order::v1::{CancelOrderRequest, ListOrdersRequest, OrderEventType, WatchOrdersRequest},
    user::v1::GetUserRequest,
};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// A user-service and two order-service replicas on one order database, started together
/// (both run the migrations at once; the advisory lock lets one do it).
fn two_order_replicas(admin_url: &str) -> (Service, Service, Service) {
    let user = Spawn::new("user-service")
        .on_database(Arc::new(TestDatabase::create(admin_url)))
        .start();
    let orders = Arc::new(TestDatabase::create(admin_url));
    let replica = |orders: Arc<TestDatabase>, user_url: String| {
        std::thread::spawn(move || {
            Spawn::new("order-service")
                .on_database(orders)
                .env("USER_SERVICE_URL", user_url)
                .start()
        })
    };
    let a = replica(orders.clone(), user.url());
    let b = replica(orders, user.url());
    (user, a.join().unwrap(), b.join().unwrap())
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set MESHWORK_TEST_POSTGRES_URL"]
async fn concurrent_creates_with_one_request_id_on_two_replicas_make_one_order() {
    let admin = required_postgres_url();
    let (user, a, b) = two_order_replicas(&admin);
    let user_id = new_user(&user, "buyer@example.com").await;
    let clients = [a.orders().await, b.orders().await];

    let calls = (0..20).map(|i| {
        let mut client = clients[i % 2].clone();
        let request = an_order_with_key(&user_id, "one-key");
        tokio::spawn(async move {
            client
                .create_order(request)
                .await
                .unwrap()
                .into_inner()
                .order
                .unwrap()
                .id
        })
    });
    let mut ids = HashSet::new();
    for call in calls {
        ids.insert(call.await.unwrap());
    }
    assert_eq!(ids.len(), 1, "every call answered with the one order");
    let listed = clients[0]
        .clone()
        .list_orders(ListOrdersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.orders.len(), 1, "and only one was stored");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set MESHWORK_TEST_POSTGRES_URL"]
async fn a_watcher_on_one_replica_sees_orders_made_through_another() {
    let admin = required_postgres_url();
    let (user, a, b) = two_order_replicas(&admin);
    let user_id = new_user(&user, "buyer@example.com").await;
    let mut watch = a
        .orders()
        .await
        .watch_orders(WatchOrdersRequest::default())
        .await
        .unwrap()
        .into_inner();

    let mut through_b = b.orders().await;
    let order = through_b
        .create_order(an_order(&user_id))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    through_b
        .cancel_order(CancelOrderRequest { id: order.id.clone() })
        .await
        .unwrap();

    let created = meshwork_e2e::within("the created event", watch.message())
        .await
        .unwrap()
        .expect("a created event from replica B");
    assert_eq!(created.event_type(), OrderEventType::Created);
    assert_eq!(created.order.unwrap().id, order.id);
    let cancelled = meshwork_e2e::within("the cancelled event", watch.message())
        .await
        .unwrap()
        .expect("a cancelled event from replica B");
    assert_eq!(cancelled.event_type(), OrderEventType::Cancelled);
}

/// A PostgreSQL server of the test's own (initdb + pg_ctl in a temporary directory, on a
/// free port), so it can be stopped without touching the machine's shared instance.
struct OwnPostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnPostgres {
    fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
            .find(|bin| bin.join("pg_ctl").exists())?;
        let dir = tempfile::tempdir().ok()?;
        // initdb refuses to run as root; the directory must be the server user's.
        make_world_writable(dir.path());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let postgres = Self { bin, dir, port };
        let data = postgres.data();
        postgres.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        );
        postgres.start_server();
        Some(postgres)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start_server(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-w",
                "-l",
                &format!("{}.log", self.data()),
                "start",
            ],
        );
    }

    fn stop_server(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let tool = self.bin.join(tool);
        let as_root = nix::unistd::geteuid().is_root();
        let mut command = if as_root {
            Command::new("runuser")
        } else {
            Command::new(&tool)
        };
        if as_root {
            command.args(["-u", "postgres", "--"]).arg(&tool);
        }
        let output = command.args(args).output().expect("the PostgreSQL tool runs");
        assert!(
            output.status.success(),
            "{tool:?} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

fn make_world_writable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).expect("chmod the temp dir");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set MESHWORK_TEST_POSTGRES_URL"]
async fn losing_the_database_is_unavailable_and_not_serving_until_it_returns() {
    // This one stops and starts a server of its own, so it needs the server binaries rather
    // than the shared server; it runs with the others, when PostgreSQL is there.
    let postgres = OwnPostgres::start()
        .expect("this test needs the PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql");
    let user = Spawn::new("user-service")
        .env("DATABASE_URL", postgres.url())
        .env("DATABASE_ACQUIRE_TIMEOUT", "500ms")
        .start();
    let mut users = user.users().await;
    let id = new_user(&user, "buyer@example.com").await;
    let mut health = user.health().await;
    let status = |health: &mut tonic_health::pb::health_client::HealthClient<_>| {
        let mut health = health.clone();
        async move {
            let request = HealthCheckRequest {
                service: "user.v1.UserService".into(),
            };
            health.check(request).await.ok().map(|r| r.into_inner().status)
        }
    };

    // An order-service on the same server, with a watch open: the watch is fed from the
    // outbox, so an outage only delays it; it stays open and goes on once the server is back.
    let order = Spawn::new("order-service")
        .env("DATABASE_URL", postgres.url())
        .env("USER_SERVICE_URL", user.url())
        .start();
    let mut watch = order
        .orders()
        .await
        .watch_orders(WatchOrdersRequest::default())
        .await
        .unwrap()
        .into_inner();

    postgres.stop_server();
    let error = users
        .get_user(GetUserRequest { id: id.clone() })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");
    eventually("health turns NOT_SERVING", || {
        let check = status(&mut health);
        async move { (check.await == Some(ServingStatus::NotServing as i32)).then_some(()) }
    })
    .await;

    postgres.start_server();
    eventually("health turns SERVING again", || {
        let check = status(&mut health);
        async move { (check.await == Some(ServingStatus::Serving as i32)).then_some(()) }
    })
    .await;
    let back = users.get_user(GetUserRequest { id: id.clone() }).await.unwrap();
    assert_eq!(back.into_inner().user.unwrap().email, "buyer@example.com");

    let orders = order.orders().await;
    let placed = eventually("an order is placed again", || {
        let (mut orders, id) = (orders.clone(), id.clone());
        async move { orders.create_order(an_order(&id)).await.ok() }
    })
    .await;
    let placed = placed.into_inner().order.unwrap();
    let event = meshwork_e2e::within("the next stream message", watch.message()).await;
    let event = event.expect("the watch is still open").expect("an event");
    assert_eq!(
        event.order.unwrap().id,
        placed.id,
        "the first event after the outage"
    );
}

/// During a rolling update, replicas of the previous release run against a database the new
/// release has migrated: their CreateOrder statement, which names the full `UNIQUE (user_id,
/// request_id)` in its `ON CONFLICT`, must still work (order-service's migration 5 only adds
/// the partial index the new statement names).
#[tokio::test]
#[ignore = "needs PostgreSQL: set MESHWORK_TEST_POSTGRES_URL"]
async fn the_previous_releases_create_order_statement_works_after_the_migrations() {
    use sqlx::Connection;
    // The INSERT of order-service before migration 5, verbatim but for its values.
    const PREVIOUS_INSERT: &str = "INSERT INTO orders (id, user_id, items, total_cents, status, create_time, update_time, \
        request_id, request_fingerprint) SELECT $1, 'ada', '[]', 0, 'PENDING', 1, 1, 'key-1', NULL \
        WHERE NOT EXISTS (SELECT 1 FROM deleted_users WHERE user_id = 'ada') \
        ON CONFLICT (user_id, request_id) DO NOTHING";
    let orders = Arc::new(TestDatabase::create(&required_postgres_url()));
    let _migrated = Spawn::new("order-service")
        .on_database(orders.clone())
        .env("USER_SERVICE_URL", "http://127.0.0.1:1")
        .start();
    let mut db = sqlx::PgConnection::connect(&orders.url).await.unwrap();
    for (id, created) in [("o-1", 1), ("o-2", 0)] {
        let done = sqlx::query(PREVIOUS_INSERT).bind(id).execute(&mut db).await;
        assert_eq!(done.unwrap().rows_affected(), created, "one order per key: {id}");
    }
}
