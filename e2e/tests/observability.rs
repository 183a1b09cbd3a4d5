//! What an SRE sees: one trace per CreateOrder across both services (received by a real
//! OTLP receiver), logs that carry the trace id, and Prometheus metrics that move with calls.

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
};

use meshwork_e2e::{Mesh, Service, Spawn, fixtures::an_order, otlp::OtlpReceiver};
use meshwork_proto::{
    hello::v1::SayHelloRequest,
    user::v1::{CreateUserRequest, GetUserRequest},
};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::Value;
use tonic::Code;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

fn with_traceparent<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01");
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    request
}

/// Creates a user, then an order for them whose call carries [`with_traceparent`]'s trace.
async fn place_a_traced_order(user: &Service, order: &Service) {
    let created = user
        .users()
        .await
        .create_user(CreateUserRequest {
            name: "Ada".into(),
            email: "ada@example.com".into(),
        })
        .await
        .unwrap();
    let user_id = created.into_inner().user.unwrap().id;
    order
        .orders()
        .await
        .create_order(with_traceparent(an_order(&user_id)))
        .await
        .unwrap();
}

#[tokio::test]
async fn one_create_order_is_one_trace_across_both_services() {
    let (receiver, endpoint) = OtlpReceiver::start().await;
    // Both schedulers: User on tokio's multi-threaded one, Order on the single-threaded
    // one (the default on one CPU), which must also flush its spans at exit.
    let mut user = Spawn::new("user-service")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("WORKER_THREADS", "2")
        .start();
    let mut order = Spawn::new("order-service")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("USER_SERVICE_URL", user.url())
        .start();
    place_a_traced_order(&user, &order).await;

    // No waiting for the batch interval: SIGTERM must flush what is buffered.
    order.terminate();
    user.terminate();
    assert!(order.wait_exit().await.success() && user.wait_exit().await.success());

    let spans: Vec<_> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace_id() == TRACE_ID)
        .collect();
    let find = |service: &str, name: &str, kind: SpanKind| {
        spans
            .iter()
            .find(|s| s.service_name == service && s.name() == name && s.kind() == kind)
            .unwrap_or_else(|| panic!("no {kind:?} span {name} from {service} in {spans:#?}"))
    };
    let order_server = find(
        "order-service",
        "order.v1.OrderService/CreateOrder",
        SpanKind::Server,
    );
    let client = find("order-service", "user.v1.UserService/GetUser", SpanKind::Client);
    let user_server = find("user-service", "user.v1.UserService/GetUser", SpanKind::Server);

    assert_eq!(
        order_server.parent_span_id(),
        CALLER_SPAN_ID,
        "the caller's traceparent is honoured"
    );
    assert_eq!(client.parent_span_id(), order_server.span_id());
    assert_eq!(user_server.parent_span_id(), client.span_id());
    // The service called, as USER_SERVICE_URL names it; the port an integer.
    let called = user.grpc_addr;
    assert_eq!(client.attribute("server.address"), Some(called.ip().to_string()));
    assert_eq!(
        client.int_attribute("server.port"),
        Some(i64::from(called.port())),
        "server.port {:?}",
        client.attribute("server.port")
    );

    for (span, service, method) in [
        (order_server, "order.v1.OrderService", "CreateOrder"),
        (user_server, "user.v1.UserService", "GetUser"),
    ] {
        assert_eq!(span.attribute("rpc.system").as_deref(), Some("grpc"));
        assert_eq!(span.attribute("rpc.service").as_deref(), Some(service));
        assert_eq!(span.attribute("rpc.method").as_deref(), Some(method));
        assert_eq!(span.attribute("rpc.grpc.status_code").as_deref(), Some("0"));
        // The caller's IP (without its port, which has an attribute of its own).
        let peer = span.attribute("network.peer.address").unwrap_or_default();
        assert!(
            peer.parse::<std::net::IpAddr>().is_ok(),
            "network.peer.address {peer:?}"
        );
        // An integer, as the conventions say (not the port's text).
        assert!(
            span.int_attribute("network.peer.port")
                .is_some_and(|port| u16::try_from(port).is_ok()),
            "network.peer.port {:?}",
            span.attribute("network.peer.port")
        );
        assert!(!span.is_error());
    }
    let expected_system = if meshwork_e2e::database::backend_is_postgres() {
        "postgresql"
    } else {
        "sqlite"
    };
    let db_spans = spans
        .iter()
        .filter(|s| s.attribute("db.system").as_deref() == Some(expected_system));
    let operations: Vec<_> = db_spans
        .map(|s| (s.service_name.clone(), s.name().to_owned()))
        .collect();
    assert!(
        operations.contains(&("user-service".into(), "SELECT users".into())),
        "{operations:?}"
    );
    assert!(
        operations.contains(&("order-service".into(), "INSERT orders".into())),
        "{operations:?}"
    );
}

#[tokio::test]
async fn a_failed_call_has_an_error_span_status() {
    let (receiver, endpoint) = OtlpReceiver::start().await;
    let mut order = Spawn::new("order-service")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("USER_SERVICE_URL", "http://127.0.0.1:9") // nothing listens there
        .start();
    let error = order
        .orders()
        .await
        .create_order(with_traceparent(an_order("u")))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
    order.terminate();
    order.wait_exit().await;

    let spans = receiver.spans();
    let server = spans
        .iter()
        .find(|s| s.name() == "order.v1.OrderService/CreateOrder")
        .expect("the server span");
    assert!(server.is_error());
    assert_eq!(server.attribute("rpc.grpc.status_code").as_deref(), Some("14"));
}

#[tokio::test]
async fn json_log_lines_carry_the_trace_id_of_their_call() {
    let user = Spawn::new("user-service").start();
    let mut users = user.users().await;
    let missing = users
        .get_user(with_traceparent(GetUserRequest { id: "nobody".into() }))
        .await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);

    let access = meshwork_e2e::eventually("the access-log line", || {
        let logs = user.json_logs();
        async move {
            logs.into_iter()
                .find(|line| line["message"] == "rpc" && line["trace_id"] == TRACE_ID)
        }
    })
    .await;
    assert_eq!(access["method"], "user.v1.UserService/GetUser");
    assert_eq!(access["code"], "NotFound");
    assert_eq!(access["level"], "INFO");
    assert!(
        access["duration_ms"].is_f64() && access["peer"].is_string(),
        "{access}"
    );
    assert_eq!(access["span_id"].as_str().map(str::len), Some(16));
}

/// RUST_LOG names the access log like any other target: turned off on its own, or kept on
/// its own under a stricter level.
#[tokio::test]
async fn rust_log_turns_the_access_log_off_and_on_by_its_target() {
    async fn say_hello(service: &Service) {
        let answer = service
            .hello()
            .await
            .say_hello(SayHelloRequest { name: "Ada".into() })
            .await;
        answer.expect("SayHello answers");
    }
    let is_access_line = |line: &Value| line["message"] == "rpc" && line["target"] == "meshwork::access";

    let mut quiet = Spawn::new("hello-service")
        .env("RUST_LOG", "info,meshwork::access=off")
        .start();
    say_hello(&quiet).await;
    quiet.terminate();
    quiet.wait_exit().await;
    // The last line of the drain is written after every call's end.
    quiet.wait_for_log("stopped");
    let logs = quiet.json_logs();
    assert!(!logs.iter().any(is_access_line), "{logs:?}");

    let only_access = Spawn::new("hello-service")
        .env("RUST_LOG", "warn,meshwork::server=info,meshwork::access=info")
        .start();
    say_hello(&only_access).await;
    let access = meshwork_e2e::eventually("the access-log line", || {
        let logs = only_access.json_logs();
        async move { logs.into_iter().find(is_access_line) }
    })
    .await;
    assert_eq!(access["method"], "hello.v1.HelloService/SayHello");
    assert_eq!(access["code"], "OK");
}

/// Without an exporter no OpenTelemetry span is built, yet the trace still reaches the logs
/// of both services and is carried from Order to User.
#[tokio::test]
async fn without_an_exporter_one_create_order_is_still_one_trace_in_the_logs() {
    let user = Spawn::new("user-service").start();
    let order = Spawn::new("order-service")
        .env("USER_SERVICE_URL", user.url())
        .start();
    place_a_traced_order(&user, &order).await;

    let created_line = meshwork_e2e::eventually("CreateOrder's access line", || {
        let logs = order.json_logs();
        async move {
            logs.into_iter().find(|line| {
                line["message"] == "rpc" && line["method"] == "order.v1.OrderService/CreateOrder"
            })
        }
    })
    .await;
    let checked_line = meshwork_e2e::eventually("GetUser's access line", || {
        let logs = user.json_logs();
        async move {
            logs.into_iter()
                .find(|line| line["message"] == "rpc" && line["method"] == "user.v1.UserService/GetUser")
        }
    })
    .await;
    assert_eq!(created_line["trace_id"], TRACE_ID, "{created_line}");
    assert_eq!(checked_line["trace_id"], TRACE_ID, "{checked_line}");
    let span_ids = [&created_line["span_id"], &checked_line["span_id"]];
    assert!(
        span_ids.iter().all(|id| id.as_str().map(str::len) == Some(16)),
        "{span_ids:?}"
    );
    assert_ne!(span_ids[0], span_ids[1], "each call has a span of its own");
    assert_ne!(created_line["span_id"], CALLER_SPAN_ID);
}

/// Parses Prometheus text with the official Python client's parser.
fn parse_with_prometheus_client(text: &str) -> Vec<Value> {
    let python = std::env::var_os("PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/parse_metrics.py");
    let mut child = Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (run `make test`, which installs it)", python.display()));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the parser refused the text: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .and_then(|s| s["value"].as_f64())
}

#[tokio::test]
async fn metrics_parse_and_count_calls_by_method_and_code() {
    let mesh = Mesh::start();
    let hello = Spawn::new("hello-service").start();
    let mut greeter = hello.hello().await;
    for _ in 0..2 {
        greeter.say_hello(SayHelloRequest::default()).await.unwrap();
    }
    let mut users = mesh.user.users().await;
    let _ = users.get_user(GetUserRequest { id: "nobody".into() }).await;
    let mut orders = mesh.order.orders().await;
    let _ = orders.create_order(an_order("nobody")).await;

    let samples = parse_with_prometheus_client(&hello.metrics().await);
    let say_hello = [
        ("grpc_service", "hello.v1.HelloService"),
        ("grpc_method", "SayHello"),
    ];
    let ok = [
        say_hello.as_slice(),
        &[("grpc_code", "OK"), ("grpc_type", "unary")],
    ]
    .concat();
    assert_eq!(
        sample(&samples, "grpc_server_started_total", &say_hello),
        Some(2.0)
    );
    assert_eq!(sample(&samples, "grpc_server_handled_total", &ok), Some(2.0));
    assert_eq!(
        sample(&samples, "grpc_server_handling_seconds_count", &say_hello),
        Some(2.0)
    );
    assert!(sample(&samples, "grpc_server_handling_seconds_bucket", &[("le", "+Inf")]).is_some());
    assert!(sample(&samples, "process_resident_memory_bytes", &[]).unwrap() > 0.0);
    assert!(sample(&samples, "process_open_fds", &[]).unwrap() > 0.0);
    assert!(sample(&samples, "process_cpu_seconds_total", &[]).is_some());

    // GetUser of nobody: once from the test (NotFound), once from order-service (NotFound).
    let samples = parse_with_prometheus_client(&mesh.user.metrics().await);
    let not_found = [("grpc_method", "GetUser"), ("grpc_code", "NotFound")];
    assert_eq!(
        sample(&samples, "grpc_server_handled_total", &not_found),
        Some(2.0)
    );

    let samples = parse_with_prometheus_client(&mesh.order.metrics().await);
    let client = [
        ("grpc_service", "user.v1.UserService"),
        ("grpc_method", "GetUser"),
        ("grpc_code", "NotFound"),
    ];
    assert_eq!(sample(&samples, "grpc_client_handled_total", &client), Some(1.0));
    let server = [
        ("grpc_method", "CreateOrder"),
        ("grpc_code", "FailedPrecondition"),
    ];
    assert_eq!(sample(&samples, "grpc_server_handled_total", &server), Some(1.0));
    let in_flight = [("grpc_method", "CreateOrder")];
    assert_eq!(sample(&samples, "grpc_server_in_flight", &in_flight), Some(0.0));
}

#[tokio::test]
async fn every_metric_the_grafana_dashboard_queries_exists() {
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../k8s/base/grafana/meshwork-dashboard.json"
    ))
    .expect("the dashboard file");
    let dashboard: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mesh = Mesh::start();
    // A series exists once it has been used: one call on each side.
    let _ = mesh.order.orders().await.create_order(an_order("nobody")).await;
    let exposed = mesh.order.metrics().await;

    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    for target in panels.iter().flat_map(|p| p["targets"].as_array().unwrap()) {
        let expr = target["expr"].as_str().unwrap();
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| {
                word.starts_with("grpc_server_")
                    || word.starts_with("grpc_client_")
                    || word.starts_with("process_")
            })
        {
            assert!(
                exposed.contains(&format!("# TYPE {}", name.trim_end_matches("_bucket"))),
                "{name} in {expr}"
            );
        }
    }
}

#[tokio::test]
async fn every_method_has_its_series_from_the_start() {
    let hello = Spawn::new("hello-service").start();
    let samples = parse_with_prometheus_client(&hello.metrics().await);
    let say_hello = [
        ("grpc_service", "hello.v1.HelloService"),
        ("grpc_method", "SayHello"),
    ];
    assert_eq!(
        sample(&samples, "grpc_server_started_total", &say_hello),
        Some(0.0)
    );
    let ok = [say_hello.as_slice(), &[("grpc_code", "OK")]].concat();
    assert_eq!(sample(&samples, "grpc_server_handled_total", &ok), Some(0.0));
}
