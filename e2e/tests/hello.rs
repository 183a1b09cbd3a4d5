//! hello-service as a client sees it: the greeting and the health service.

use meshwork_e2e::Spawn;
use meshwork_proto::hello::v1::SayHelloRequest;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

#[tokio::test]
async fn says_hello_by_name_and_to_the_world() {
    let hello = Spawn::new("hello-service").start();
    let mut client = hello.hello().await;

    let named = client
        .say_hello(SayHelloRequest { name: "Ada".into() })
        .await
        .unwrap();
    assert_eq!(named.into_inner().message, "Hello, Ada!");
    let anonymous = client.say_hello(SayHelloRequest::default()).await.unwrap();
    assert_eq!(anonymous.into_inner().message, "Hello, World!");
}

#[tokio::test]
async fn health_answers_for_the_server_and_its_service_only() {
    let hello = Spawn::new("hello-service").start();
    let mut health = hello.health().await;
    let check = |service: &str| HealthCheckRequest {
        service: service.into(),
    };

    for name in ["", "hello.v1.HelloService", "liveness"] {
        let status = health.check(check(name)).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "health of {name:?}");
    }
    let unknown = health.check(check("user.v1.UserService")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}
