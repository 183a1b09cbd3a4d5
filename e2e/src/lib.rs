//! Test kit for the end-to-end tests in `tests/`: start the real binaries on loopback port 0
//! with a fresh data directory each, find out where they listen, call them with typed
//! clients, and stop them with a real signal.
//!
//! The binaries must be built first (`cargo build --workspace --bins`, which `make test`
//! does); they are found beside the test executable, in cargo's target directory, and a
//! binary older than its source is refused (see [`binaries`]).
//!
//! User and Order run on SQLite, or, with `MESHWORK_TEST_BACKEND=postgres`, each on a
//! fresh PostgreSQL database of its own (see [`database`]): the same tests, either backend.

pub mod binaries;
pub mod broker;
pub mod database;
pub mod fixtures;
pub mod otlp;
pub mod pki;
pub mod raw;
pub mod secure;
pub mod slow_user;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use meshwork_clients::{HelloServiceClient, OrderServiceClient, UserServiceClient};
use nix::{sys::signal, unistd::Pid};
use tempfile::TempDir;
use tonic::transport::Channel;

/// How long a process may take to start, answer or stop before a test fails. Generous:
/// CI machines are slow, and this bounds a wait, it does not measure anything.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub use binaries::binary;

/// A service binary running as a child process.
pub struct Service {
    child: Child,
    /// Where its gRPC server listens.
    pub grpc_addr: SocketAddr,
    /// Where it serves `/metrics`.
    pub metrics_addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    /// Its working directory (its `data/` lives here unless DATABASE_URL says otherwise).
    pub dir: Arc<TempDir>,
    /// Its PostgreSQL database, when the tests run on PostgreSQL.
    pub database: Option<Arc<database::TestDatabase>>,
}

/// How to start a service.
pub struct Spawn {
    name: &'static str,
    env: Vec<(String, String)>,
    dir: Option<Arc<TempDir>>,
    database: Option<Arc<database::TestDatabase>>,
}

impl Spawn {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            env: Vec::new(),
            dir: None,
            database: None,
        }
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Runs on the data of `earlier` (its directory and database): a restart.
    pub fn reusing(mut self, earlier: &Service) -> Self {
        self.dir = Some(earlier.dir.clone());
        self.database = earlier.database.clone();
        self
    }

    /// Runs on `database` (e.g. a second replica on the first one's database).
    pub fn on_database(mut self, database: Arc<database::TestDatabase>) -> Self {
        self.database = Some(database);
        self
    }

    /// Starts the process and waits until it listens.
    pub fn start(mut self) -> Service {
        let dir = self
            .dir
            .unwrap_or_else(|| Arc::new(tempfile::tempdir().expect("a temp dir can be made")));
        let stores_data = binaries::service(self.name).is_some_and(|service| service.stores_data());
        let url_given = self.env.iter().any(|(key, _)| key == "DATABASE_URL");
        if stores_data && !url_given && self.database.is_none() {
            self.database = database::fresh_for_backend().map(Arc::new);
        }
        if let Some(database) = &self.database {
            self.env.push(("DATABASE_URL".into(), database.url.clone()));
        }
        let mut child = Command::new(binary(self.name))
            .current_dir(dir.path())
            .env_clear()
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            // The shape the manifests deploy (one CPU per pod: the single-threaded
            // scheduler), unless the run says otherwise (`make test` runs the services'
            // suites once more with 2); a test that wants its own number sets it.
            .env("WORKER_THREADS", worker_threads())
            .envs(self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the service binary starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        collect_lines(child.stdout.take().expect("stdout is piped"), logs.clone());
        collect_lines(child.stderr.take().expect("stderr is piped"), logs.clone());
        let mut service = Service {
            child,
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            logs,
            dir,
            database: self.database,
        };
        service.metrics_addr = service.address_in_log("serving /metrics", "metrics_addr");
        service.grpc_addr = service.address_in_log("listening", "grpc_addr");
        service
    }
}

/// The `WORKER_THREADS` a service gets: `MESHWORK_TEST_WORKER_THREADS`, by default 1.
fn worker_threads() -> String {
    std::env::var("MESHWORK_TEST_WORKER_THREADS").unwrap_or_else(|_| "1".to_owned())
}

fn collect_lines(stream: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            into.lock().expect("log lock is never poisoned").push(line);
        }
    });
}

impl Service {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .expect("a loopback URL")
            .connect()
            .await
            .expect("the service accepts connections")
    }

    pub async fn hello(&self) -> HelloServiceClient<Channel> {
        HelloServiceClient::new(self.channel().await)
    }

    pub async fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel().await)
    }

    pub async fn orders(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(self.channel().await)
    }

    pub async fn health(&self) -> tonic_health::pb::health_client::HealthClient<Channel> {
        tonic_health::pb::health_client::HealthClient::new(self.channel().await)
    }

    /// Every line the process has written so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock is never poisoned").clone()
    }

    /// The first JSON log line whose `message` is `message`, polled until it appears.
    pub fn wait_for_log(&mut self, message: &str) -> serde_json::Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found = self.logs().iter().find_map(|line| {
                let json: serde_json::Value = serde_json::from_str(line).ok()?;
                (json["message"] == message).then_some(json)
            });
            if let Some(json) = found {
                return json;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "process exited with {status} before logging {message:?}:\n{}",
                    self.logs().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {message:?} log line within {PATIENCE:?}:\n{}",
                self.logs().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn address_in_log(&mut self, message: &str, field: &str) -> SocketAddr {
        let line = self.wait_for_log(message);
        line[field]
            .as_str()
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("the {message:?} line names {field}: {line}"))
    }

    /// The text of `GET /metrics`, over a plain HTTP/1.1 connection.
    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.metrics_addr)
            .await
            .expect("metrics port open");
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics_addr
        );
        stream.write_all(request.as_bytes()).await.expect("request sent");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("response read");
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_owned()
    }

    /// Every JSON log line written so far, parsed.
    pub fn json_logs(&self) -> Vec<serde_json::Value> {
        self.logs()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Sends SIGTERM, as Kubernetes does.
    pub fn terminate(&self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        signal::kill(pid, signal::Signal::SIGTERM).expect("the child process can be signalled");
    }

    /// Waits (bounded) for the process to exit. Async, so that the test's own clients keep
    /// running meanwhile: they must see the server's GOAWAY and close for the drain to end.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited for") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the process now (SIGKILL), like a crash or `kubectl delete --force`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Log lines a failing test shows of each of its services.
const LOG_TAIL: usize = 60;

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
        // A test that failed shows what its services said last: the cause of a wait that
        // timed out (a relay that never published, a call refused) is usually there.
        if std::thread::panicking() {
            let logs = self.logs();
            let tail = &logs[logs.len().saturating_sub(LOG_TAIL)..];
            eprintln!(
                "--- the last {} log lines of the service on {} ---\n{}",
                tail.len(),
                self.grpc_addr,
                tail.join("\n")
            );
        }
    }
}

/// A user-service and an order-service that calls it, each with a fresh database.
pub struct Mesh {
    pub user: Service,
    pub order: Service,
}

impl Mesh {
    pub fn start() -> Self {
        let user = Spawn::new("user-service").start();
        let order = Spawn::new("order-service")
            .env("USER_SERVICE_URL", user.url())
            .start();
        Self { user, order }
    }
}

/// The field paths of the `google.rpc.BadRequest` detail of `status`.
pub fn bad_request_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The `google.rpc.ErrorInfo` detail of `status`: (reason, domain).
pub fn error_info(status: &tonic::Status) -> Option<(String, String)> {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .map(|info| (info.reason, info.domain))
}

/// Awaits `future` for at most [`PATIENCE`]: a test waiting on a stream fails instead of
/// hanging when the message never comes.
pub async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {PATIENCE:?}"))
}

/// Polls `check` until it returns `Some`, for at most [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
