//! What broken or hostile clients send: the right status, nothing stored, the process up.

use meshwork_e2e::{Mesh, Spawn, bad_request_fields, raw};
use meshwork_proto::{
    order::v1::{CreateOrderRequest, ListOrdersRequest, OrderItem},
    user::v1::{CreateUserRequest, ListUsersRequest},
};
use tonic::Code;

#[tokio::test]
async fn bytes_that_are_not_a_message_are_refused_and_the_server_stays_up() {
    let mut service = Spawn::new("user-service").start();
    let garbage = vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x99];
    let error = raw::unary(
        service.channel().await,
        "/user.v1.UserService/CreateUser",
        garbage,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error.code(), Code::InvalidArgument | Code::Internal),
        "{error:?}"
    );

    assert!(service.is_running());
    let listed = service
        .users()
        .await
        .list_users(ListUsersRequest::default())
        .await
        .unwrap();
    assert!(listed.into_inner().users.is_empty(), "nothing was stored");
}

#[tokio::test]
async fn an_unknown_method_is_unimplemented() {
    let service = Spawn::new("user-service").start();
    let error = raw::unary(
        service.channel().await,
        "/user.v1.UserService/DropAllUsers",
        vec![],
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), Code::Unimplemented);
    let error = raw::unary(service.channel().await, "/no.such.Service/Call", vec![])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unimplemented);
}

#[tokio::test]
async fn a_message_over_the_limit_is_resource_exhausted() {
    let service = Spawn::new("user-service")
        .env("MAX_MESSAGE_BYTES", "1024")
        .start();
    let mut users = service.users().await.max_encoding_message_size(usize::MAX);

    let huge = CreateUserRequest {
        name: "x".repeat(2048),
        email: "big@example.com".into(),
    };
    let error = users.create_user(huge).await.unwrap_err();
    assert_eq!(error.code(), Code::ResourceExhausted, "{error:?}");

    let small = CreateUserRequest {
        name: "Small".into(),
        email: "small@example.com".into(),
    };
    users.create_user(small).await.expect("the server still answers");
}

#[tokio::test]
async fn the_default_limit_is_4_mib() {
    let service = Spawn::new("user-service").start();
    let mut users = service.users().await.max_encoding_message_size(usize::MAX);
    let huge = CreateUserRequest {
        name: "x".repeat(4 * 1024 * 1024 + 1),
        email: "big@example.com".into(),
    };
    assert_eq!(
        users.create_user(huge).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
}

#[tokio::test]
async fn no_database_text_or_panic_reaches_a_caller() {
    let service = Spawn::new("user-service").start();
    let mut users = service.users().await;
    let create = || CreateUserRequest {
        name: "Ada".into(),
        email: "ada@example.com".into(),
    };
    users.create_user(create()).await.unwrap();
    let error = users.create_user(create()).await.unwrap_err();
    assert_eq!(error.code(), Code::AlreadyExists);
    for leak in ["UNIQUE", "constraint", "sqlite", "SQL", "panicked"] {
        assert!(
            !error.message().contains(leak),
            "{:?} leaks {leak}",
            error.message()
        );
    }
}

#[tokio::test]
async fn a_nul_in_an_order_field_is_invalid_argument_naming_it_on_every_backend() {
    let mesh = Mesh::start();
    let user = meshwork_e2e::fixtures::new_user(&mesh.user, "nul@example.com").await;
    let mut orders = mesh.order.orders().await;

    let listed = orders
        .list_orders(ListOrdersRequest {
            user_id: "a\0b".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(listed.code(), Code::InvalidArgument, "{listed:?}");
    assert_eq!(bad_request_fields(&listed), ["user_id"]);

    let request = |request_id: &str, sku: &str| CreateOrderRequest {
        user_id: user.clone(),
        items: vec![OrderItem {
            sku: sku.into(),
            quantity: 1,
            unit_price_cents: 1,
        }],
        request_id: request_id.into(),
    };
    for (bad, field) in [
        (request("r\0", "book"), "request_id"),
        (request("r-1", "bo\0ok"), "items[0].sku"),
        (request("r-1", "bo\u{1b}ok"), "items[0].sku"),
    ] {
        let error = orders.create_order(bad).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{field}: {error:?}");
        assert_eq!(bad_request_fields(&error), [field]);
    }

    let listed = orders
        .list_orders(ListOrdersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.orders.is_empty(), "nothing was stored");
    assert!(
        orders.create_order(request("r-1", "book")).await.is_ok(),
        "still serving"
    );
}
