//! What a cluster does to service-to-service calls, done to real processes on loopback:
//! instances come and go, all of them die, a call outlives its deadline, a flood arrives.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use meshwork_e2e::{
    Service, Spawn, eventually,
    fixtures::{an_order, new_user},
    raw::plain_http2,
    slow_user,
};
use tokio::net::TcpListener;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// `grpc_server_handled_total` of GetUser with code OK on `user`.
async fn get_users_served(user: &Service) -> u64 {
    let text = user.metrics().await;
    text.lines()
        .filter(|line| line.starts_with("grpc_server_handled_total{"))
        .filter(|line| line.contains(r#"grpc_method="GetUser""#) && line.contains(r#"grpc_code="OK""#))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn calls_spread_over_two_user_instances_and_survive_losing_one() {
    let a = Spawn::new("user-service").start();
    let mut b = Spawn::new("user-service").reusing(&a).start();
    let order = Spawn::new("order-service")
        .env("USER_SERVICE_URL", format!("{},{}", a.url(), b.url()))
        .env("USER_SERVICE_EJECT_FOR", "200ms")
        .start();
    let user_id = new_user(&a, "buyer@example.com").await;
    let mut orders = order.orders().await;

    for _ in 0..40 {
        orders
            .create_order(an_order(&user_id))
            .await
            .expect("both instances up");
    }
    let (on_a, on_b) = (get_users_served(&a).await, get_users_served(&b).await);
    assert!(on_a > 0 && on_b > 0, "calls are spread: a={on_a} b={on_b}");
    assert_eq!(on_a + on_b, 40);

    let b_addr = b.grpc_addr;
    b.kill();
    for i in 0..40 {
        let result = orders.create_order(an_order(&user_id)).await;
        assert!(result.is_ok(), "call {i} after losing one instance: {result:?}");
    }

    let b_again = Spawn::new("user-service")
        .reusing(&b)
        .env("LISTEN_ADDR", b_addr.to_string())
        .start();
    eventually("the returned instance gets traffic again", || {
        let mut orders = orders.clone();
        let (b_again, user_id) = (&b_again, user_id.clone());
        async move {
            orders
                .create_order(an_order(&user_id))
                .await
                .expect("calls keep working");
            (get_users_served(b_again).await > 0).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn with_every_user_instance_down_calls_fail_fast_with_bounded_attempts_and_recover() {
    // A "User service" that accepts each connection and closes it at once: every attempt
    // that reaches it is counted.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counting = tokio::spawn({
        let attempts = attempts.clone();
        async move {
            while let Ok((socket, _)) = dead.accept().await {
                attempts.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        }
    });
    let order = Spawn::new("order-service")
        .env("USER_SERVICE_URL", format!("http://{dead_addr}"))
        .env("USER_SERVICE_EJECT_FOR", "300ms")
        .start();
    let mut orders = order.orders().await;

    let calls = 50;
    for _ in 0..calls {
        let error = orders.create_order(an_order("someone")).await.unwrap_err();
        assert_eq!(error.code(), Code::Unavailable, "{error:?}");
    }
    let reached = attempts.load(Ordering::SeqCst);
    eprintln!("{calls} calls reached the dead endpoint {reached} times");
    assert!(reached >= 1, "the endpoint was tried");
    assert!(
        reached < calls,
        "the breaker and the retry budget keep attempts below one per call: {reached}"
    );

    // User comes back on the same address: calls recover on their own.
    counting.abort();
    let _ = counting.await;
    let user = Spawn::new("user-service")
        .env("LISTEN_ADDR", dead_addr.to_string())
        .start();
    let user_id = new_user(&user, "buyer@example.com").await;
    eventually("CreateOrder works again", || {
        let mut orders = orders.clone();
        let request = an_order(&user_id);
        async move { orders.create_order(request).await.ok() }
    })
    .await;
}

#[tokio::test]
async fn a_deadline_shorter_than_the_call_is_deadline_exceeded_and_cancels_the_downstream_call() {
    let (slow_url, seen) = slow_user::start(Duration::from_secs(5)).await;
    let order = Spawn::new("order-service")
        .env("USER_SERVICE_URL", slow_url)
        .start();
    let mut orders = meshwork_clients::OrderServiceClient::new(plain_http2(order.grpc_addr));

    let mut request = tonic::Request::new(an_order("someone"));
    request.set_timeout(Duration::from_millis(300));
    let error = orders.create_order(request).await.unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");

    eventually("the User call is cancelled, not left running", || {
        let seen = seen.clone();
        async move { (seen.cancelled.load(Ordering::SeqCst) == 1).then_some(()) }
    })
    .await;
    assert_eq!(seen.finished.load(Ordering::SeqCst), 0);
    let metrics = order.metrics().await;
    let client_in_flight = metrics
        .lines()
        .find(|line| line.starts_with("grpc_client_in_flight{") && line.contains("GetUser"))
        .expect("the client in-flight gauge");
    assert!(client_in_flight.ends_with(" 0"), "{client_in_flight}");
}

#[tokio::test]
async fn a_flood_beyond_the_limit_is_shed_at_once_and_admitted_calls_succeed() {
    let (slow_url, _seen) = slow_user::start(Duration::from_millis(500)).await;
    let order = Spawn::new("order-service")
        .env("USER_SERVICE_URL", slow_url)
        .env("MAX_CONCURRENT_CALLS", "4")
        .start();
    let orders = order.orders().await;

    let flood: Vec<_> = (0..20)
        .map(|_| {
            let mut orders = orders.clone();
            tokio::spawn(async move { orders.create_order(an_order("someone")).await.map(drop) })
        })
        .collect();
    let (mut admitted, mut shed) = (0, 0);
    for call in flood {
        match call.await.unwrap() {
            Ok(()) => admitted += 1,
            Err(status) if status.code() == Code::ResourceExhausted => shed += 1,
            Err(status) => panic!("neither admitted nor shed: {status:?}"),
        }
    }
    assert_eq!((admitted, shed), (4, 16));

    let mut health = order.health().await;
    let check = HealthCheckRequest {
        service: "order.v1.OrderService".into(),
    };
    let status = health.check(check).await.unwrap().into_inner().status;
    assert_eq!(status, ServingStatus::Serving as i32, "the process stays healthy");
    orders
        .clone()
        .create_order(an_order("someone"))
        .await
        .expect("and serves again");
}

#[tokio::test]
async fn dns_discovery_finds_the_user_service() {
    let user = Spawn::new("user-service").start();
    let order = Spawn::new("order-service")
        .env(
            "USER_SERVICE_URL",
            format!("dns:///localhost:{}", user.grpc_addr.port()),
        )
        .start();
    let user_id = new_user(&user, "buyer@example.com").await;
    let created = order.orders().await.create_order(an_order(&user_id)).await;
    assert!(created.is_ok(), "{created:?}");
}
