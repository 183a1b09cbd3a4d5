//! Start-up and shutdown as an operator sees them: bad settings stop the process with a
//! clear line, SIGTERM drains and exits 0.

use std::process::Command;

use meshwork_e2e::{Spawn, binary};
use meshwork_proto::order::v1::{CreateOrderRequest, OrderItem, WatchOrdersRequest};
use tokio::{io::AsyncReadExt, net::TcpListener};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// Runs `binary` with one bad setting; returns (exit code, stderr).
fn start_with(binary_name: &str, key: &str, value: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(binary(binary_name))
        .current_dir(dir.path())
        .env_clear()
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env(key, value)
        .output()
        .expect("the binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_malformed_setting_exits_2_with_one_line_naming_it() {
    let cases = [
        ("hello-service", "LISTEN_ADDR", "not-an-address", "--listen-addr"),
        ("hello-service", "METRICS_ADDR", "9101", "--metrics-addr"),
        ("hello-service", "SHUTDOWN_GRACE", "soon", "--shutdown-grace"),
        ("hello-service", "SHUTDOWN_GRACE", "0s", "--shutdown-grace"),
        (
            "order-service",
            "USER_SERVICE_DNS_REFRESH",
            "0s",
            "--user-service-dns-refresh",
        ),
        (
            "order-service",
            "USER_SERVICE_EJECT_FOR",
            "0s",
            "--user-service-eject-for",
        ),
        ("hello-service", "MAX_MESSAGE_BYTES", "-1", "--max-message-bytes"),
        ("hello-service", "LOG_FORMAT", "xml", "--log-format"),
        ("hello-service", "WORKER_THREADS", "0", "--worker-threads"),
        (
            "hello-service",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "collector:4317",
            "--otel-exporter-otlp-endpoint",
        ),
        (
            "user-service",
            "DATABASE_URL",
            "mysql://db/users",
            "--database-url",
        ),
        (
            "order-service",
            "USER_SERVICE_URL",
            "user:50052",
            "--user-service-url",
        ),
        (
            "order-service",
            "USER_SERVICE_TIMEOUT",
            "2 parsecs",
            "--user-service-timeout",
        ),
    ];
    for (binary_name, key, value, flag) in cases {
        let (code, stderr) = start_with(binary_name, key, value);
        assert_eq!(code, Some(2), "{binary_name} with {key}={value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(flag), "{stderr:?} names {flag}");
    }
}

#[test]
fn a_flag_wins_over_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(binary("hello-service"))
        .current_dir(dir.path())
        .env_clear()
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .args(["--listen-addr", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "the bad flag is used, not the good variable"
    );
}

#[tokio::test]
async fn sigterm_turns_health_not_serving_ends_streams_and_exits_0() {
    let mut user = Spawn::new("user-service").start();
    let mut health = user.health().await;
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "user.v1.UserService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = meshwork_e2e::within("the next stream message", watch.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    user.terminate();
    let next = meshwork_e2e::within("the next stream message", watch.message())
        .await
        .unwrap()
        .expect("a status change");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    assert!(
        meshwork_e2e::within("the next stream message", watch.message())
            .await
            .unwrap_or(None)
            .is_none(),
        "the watch ends"
    );
    assert_eq!(user.wait_exit().await.code(), Some(0));
}

#[tokio::test]
async fn sigterm_lets_a_call_in_flight_finish_and_ends_watch_streams() {
    // A User service that accepts and never answers: CreateOrder waits on it for
    // USER_SERVICE_TIMEOUT, long enough to be in flight when SIGTERM arrives.
    let hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut order = Spawn::new("order-service")
        .env(
            "USER_SERVICE_URL",
            format!("http://{}", hole.local_addr().unwrap()),
        )
        .env("USER_SERVICE_TIMEOUT", "1s")
        .start();
    let mut orders = order.orders().await;
    let mut events = orders
        .watch_orders(WatchOrdersRequest::default())
        .await
        .unwrap()
        .into_inner();

    let in_flight = tokio::spawn({
        let mut orders = orders.clone();
        async move {
            let request = CreateOrderRequest {
                user_id: "u".into(),
                items: vec![OrderItem {
                    sku: "a".into(),
                    quantity: 1,
                    unit_price_cents: 1,
                }],
                request_id: String::new(),
            };
            orders.create_order(request).await
        }
    });
    // The order service is now calling "User": the call is in flight.
    let (mut socket, _) = meshwork_e2e::within("order-service calling User", hole.accept())
        .await
        .unwrap();
    let mut preface = [0u8; 24];
    meshwork_e2e::within("the HTTP/2 preface", socket.read_exact(&mut preface))
        .await
        .unwrap();

    order.terminate();
    let answer = in_flight.await.unwrap().unwrap_err();
    assert_eq!(
        answer.code(),
        Code::Unavailable,
        "the call ran to its own end (User timed out), it was not cut off: {answer:?}"
    );
    // Open watches end with UNAVAILABLE (CONTRACT "Health and lifecycle"), so their
    // clients re-list and watch again elsewhere.
    let ended = meshwork_e2e::within("the next stream message", events.message())
        .await
        .expect_err("the watch stream ends with an error, not OK");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert_eq!(order.wait_exit().await.code(), Some(0));
}

#[tokio::test]
async fn a_connection_idle_past_the_limit_is_closed_by_the_server() {
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let hello = Spawn::new("hello-service")
        .env("MAX_CONNECTION_IDLE", "300ms")
        .start();
    let socket = tokio::net::TcpStream::connect(hello.grpc_addr).await.unwrap();
    // A real HTTP/2 client connection (it answers the server's SETTINGS and PINGs) that
    // makes no call: its connection task ends when the server closes the connection.
    let (_sender, connection) = hyper::client::conn::http2::handshake::<
        _,
        _,
        http_body_util::Empty<bytes::Bytes>,
    >(TokioExecutor::new(), TokioIo::new(socket))
    .await
    .unwrap();
    let closed = tokio::time::timeout(meshwork_e2e::PATIENCE, connection).await;
    assert!(
        matches!(closed, Ok(Ok(()))),
        "the server closes the idle connection cleanly: {closed:?}"
    );
}

#[tokio::test]
async fn worker_threads_sets_the_threads_that_run_calls() {
    for (setting, scheduler, threads) in [("1", "current_thread", 1), ("3", "multi_thread", 3)] {
        let mut hello = Spawn::new("hello-service").env("WORKER_THREADS", setting).start();
        let reply = hello
            .hello()
            .await
            .say_hello(meshwork_proto::hello::v1::SayHelloRequest { name: "Ada".into() })
            .await
            .unwrap();
        assert_eq!(reply.into_inner().message, "Hello, Ada!");
        // What the service says it runs on, at start-up.
        let listening = hello.wait_for_log("listening");
        assert_eq!(
            (&listening["scheduler"], &listening["worker_threads"]),
            (&serde_json::json!(scheduler), &serde_json::json!(threads)),
            "WORKER_THREADS={setting}: {listening}"
        );
    }
}
