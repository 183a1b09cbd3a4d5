//! order-service as a client sees it, with a real user-service behind it.

use std::collections::HashSet;

use meshwork_e2e::{Mesh, Spawn, bad_request_fields, error_info, raw::plain_http2};
use meshwork_proto::{
    order::v1::{
        CancelOrderRequest, CreateOrderRequest, GetOrderRequest, ListOrdersRequest, Order, OrderEventType,
        OrderItem, OrderStatus, WatchOrdersRequest,
    },
    user::v1::CreateUserRequest,
};
use tokio::net::TcpListener;
use tonic::{Code, transport::Channel};

type Orders = meshwork_clients::OrderServiceClient<Channel>;

async fn new_user(mesh: &Mesh, email: &str) -> String {
    let request = CreateUserRequest {
        name: "Buyer".into(),
        email: email.into(),
    };
    let user = mesh
        .user
        .users()
        .await
        .create_user(request)
        .await
        .unwrap()
        .into_inner();
    user.user.unwrap().id
}

fn item(sku: &str, quantity: i32, unit_price_cents: i64) -> OrderItem {
    OrderItem {
        sku: sku.into(),
        quantity,
        unit_price_cents,
    }
}

fn order_of(user_id: &str, request_id: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        user_id: user_id.into(),
        items: vec![item("book", 2, 1250), item("pen", 3, 99)],
        request_id: request_id.into(),
    }
}

async fn create(orders: &mut Orders, request: CreateOrderRequest) -> Result<Order, tonic::Status> {
    Ok(orders
        .create_order(request)
        .await?
        .into_inner()
        .order
        .expect("an order"))
}

#[tokio::test]
async fn create_get_list_and_cancel() {
    let mesh = Mesh::start();
    let user_id = new_user(&mesh, "buyer@example.com").await;
    let mut orders = mesh.order.orders().await;

    let order = create(&mut orders, order_of(&user_id, "")).await.unwrap();
    assert_eq!(
        order.total_cents,
        2 * 1250 + 3 * 99,
        "the server computes the total"
    );
    assert_eq!(order.status(), OrderStatus::Pending);
    assert_eq!(order.user_id, user_id);

    let got = orders
        .get_order(GetOrderRequest { id: order.id.clone() })
        .await
        .unwrap();
    assert_eq!(got.into_inner().order.as_ref(), Some(&order));

    let cancelled = orders
        .cancel_order(CancelOrderRequest { id: order.id.clone() })
        .await
        .unwrap();
    let cancelled = cancelled.into_inner().order.unwrap();
    assert_eq!(cancelled.status(), OrderStatus::Cancelled);

    let again = orders
        .cancel_order(CancelOrderRequest { id: order.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(error_info(&again).unwrap().0, "ORDER_ALREADY_CANCELLED");

    let unknown = orders
        .cancel_order(CancelOrderRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let unknown = orders
        .get_order(GetOrderRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn an_order_for_an_unknown_user_is_failed_precondition_and_not_stored() {
    let mesh = Mesh::start();
    let mut orders = mesh.order.orders().await;

    let error = create(&mut orders, order_of("no-such-user", ""))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(
        error_info(&error),
        Some(("USER_NOT_FOUND".into(), "order.v1.OrderService".into()))
    );

    let listed = orders
        .list_orders(ListOrdersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.orders.is_empty());
}

#[tokio::test]
async fn bad_items_are_named_by_path() {
    let mesh = Mesh::start();
    let mut orders = mesh.order.orders().await;

    let request = CreateOrderRequest {
        user_id: "u".into(),
        items: vec![item("ok", 1, 1), item("", 0, -1)],
        request_id: String::new(),
    };
    let error = create(&mut orders, request).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(
        bad_request_fields(&error),
        ["items[1].sku", "items[1].quantity", "items[1].unit_price_cents"]
    );

    let empty = CreateOrderRequest {
        user_id: "u".into(),
        ..Default::default()
    };
    assert_eq!(
        bad_request_fields(&create(&mut orders, empty).await.unwrap_err()),
        ["items"]
    );

    let overflow = CreateOrderRequest {
        user_id: "u".into(),
        items: vec![item("gold", i32::MAX, i64::MAX / 2)],
        request_id: String::new(),
    };
    let error = create(&mut orders, overflow).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&error), ["items"]);
}

#[tokio::test]
async fn a_request_id_creates_one_order_however_often_it_is_sent() {
    let mesh = Mesh::start();
    let user_id = new_user(&mesh, "buyer@example.com").await;
    let mut orders = mesh.order.orders().await;

    let first = create(&mut orders, order_of(&user_id, "req-1")).await.unwrap();
    let second = create(&mut orders, order_of(&user_id, "req-1")).await.unwrap();
    assert_eq!(first, second);

    let racers = (0..10).map(|_| {
        let mut client = orders.clone();
        let request = order_of(&user_id, "req-2");
        tokio::spawn(async move { create(&mut client, request).await.unwrap().id })
    });
    let mut ids = HashSet::new();
    for racer in racers {
        ids.insert(racer.await.unwrap());
    }
    assert_eq!(
        ids.len(),
        1,
        "concurrent calls with one request_id share one order"
    );

    let listed = orders
        .list_orders(ListOrdersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.orders.len(), 2);
}

#[tokio::test]
async fn a_request_id_reused_for_different_items_is_invalid_and_creates_nothing() {
    let mesh = Mesh::start();
    let user_id = new_user(&mesh, "buyer@example.com").await;
    let mut orders = mesh.order.orders().await;

    let first = create(&mut orders, order_of(&user_id, "req-1")).await.unwrap();
    let mut different = order_of(&user_id, "req-1");
    different.items[0].quantity += 1;
    let error = create(&mut orders, different).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert_eq!(bad_request_fields(&error), ["request_id"]);

    let again = create(&mut orders, order_of(&user_id, "req-1")).await.unwrap();
    assert_eq!(again, first, "the same request still gets the first order");
    let listed = orders
        .list_orders(ListOrdersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.orders, [first], "nothing was created for the mismatch");
}

#[tokio::test]
async fn a_request_id_is_scoped_to_the_orders_user() {
    let mesh = Mesh::start();
    let ada = new_user(&mesh, "ada@example.com").await;
    let bob = new_user(&mesh, "bob@example.com").await;
    let mut orders = mesh.order.orders().await;

    let adas = create(&mut orders, order_of(&ada, "shared-key")).await.unwrap();
    // Bob sends Ada's key with other items, then with the very same items.
    let mut bobs_request = order_of(&bob, "shared-key");
    bobs_request.items.truncate(1);
    let bobs = create(&mut orders, bobs_request.clone()).await.unwrap();
    assert_ne!(bobs.id, adas.id, "a new, independent order");
    assert_eq!(bobs.user_id, bob, "never Ada's order");
    assert_eq!(bobs.items, bobs_request.items);
    let same_items = create(&mut orders, order_of(&bob, "shared-key"))
        .await
        .unwrap_err();
    assert_eq!(
        bad_request_fields(&same_items),
        ["request_id"],
        "Bob's key is Bob's: his own first use decides"
    );

    // Ada's order is untouched, and her key still answers with it.
    let again = create(&mut orders, order_of(&ada, "shared-key")).await.unwrap();
    assert_eq!(again, adas);
    let of = |user_id: &str| ListOrdersRequest {
        user_id: user_id.into(),
        ..Default::default()
    };
    let adas_list = orders.list_orders(of(&ada)).await.unwrap().into_inner().orders;
    assert_eq!(adas_list, [adas]);
    let bobs_list = orders.list_orders(of(&bob)).await.unwrap().into_inner().orders;
    assert_eq!(bobs_list, [bobs]);
}

#[tokio::test]
async fn watches_past_max_watch_streams_are_resource_exhausted() {
    let user = Spawn::new("user-service").start();
    let order = Spawn::new("order-service")
        .env("USER_SERVICE_URL", user.url())
        .env("MAX_WATCH_STREAMS", "2")
        .start();
    let mut orders = order.orders().await;
    let watch = |orders: &mut Orders| {
        let mut orders = orders.clone();
        async move { orders.watch_orders(WatchOrdersRequest::default()).await }
    };
    let first = watch(&mut orders).await.unwrap().into_inner();
    let second = watch(&mut orders).await.unwrap().into_inner();
    let third = watch(&mut orders).await.unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted, "{third:?}");

    // A watch that ends frees its slot.
    drop(first);
    meshwork_e2e::eventually("a freed slot takes a new watch", || {
        let watching = watch(&mut orders);
        async move { watching.await.ok() }
    })
    .await;
    drop(second);
}

#[tokio::test]
async fn list_filters_by_user_and_pages() {
    let mesh = Mesh::start();
    let ada = new_user(&mesh, "ada@example.com").await;
    let bob = new_user(&mesh, "bob@example.com").await;
    let mut orders = mesh.order.orders().await;
    for _ in 0..5 {
        create(&mut orders, order_of(&ada, "")).await.unwrap();
    }
    create(&mut orders, order_of(&bob, "")).await.unwrap();

    let list = |user_id: &str, page_token: String| ListOrdersRequest {
        user_id: user_id.into(),
        page_size: 2,
        page_token,
    };
    let mut seen = 0;
    let mut token = String::new();
    loop {
        let page = orders.list_orders(list(&ada, token)).await.unwrap().into_inner();
        assert!(page.orders.iter().all(|o| o.user_id == ada));
        seen += page.orders.len();
        if page.next_page_token.is_empty() {
            break;
        }
        // A token is tied to its filter.
        let wrong = orders
            .list_orders(list(&bob, page.next_page_token.clone()))
            .await
            .unwrap_err();
        assert_eq!(bad_request_fields(&wrong), ["page_token"]);
        token = page.next_page_token;
    }
    assert_eq!(seen, 5);

    let all = orders
        .list_orders(ListOrdersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.orders.len(), 6);
}

#[tokio::test]
async fn watch_streams_created_and_cancelled_events_of_its_user() {
    let mesh = Mesh::start();
    let ada = new_user(&mesh, "ada@example.com").await;
    let bob = new_user(&mesh, "bob@example.com").await;
    let mut orders = mesh.order.orders().await;

    create(&mut orders, order_of(&ada, "")).await.unwrap(); // before the watch: not streamed
    let mut events = orders
        .watch_orders(WatchOrdersRequest {
            user_id: ada.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    create(&mut orders, order_of(&bob, "")).await.unwrap();
    let created = create(&mut orders, order_of(&ada, "")).await.unwrap();
    orders
        .cancel_order(CancelOrderRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap();

    let first = meshwork_e2e::within("the next stream message", events.message())
        .await
        .unwrap()
        .expect("a created event");
    assert_eq!(first.event_type(), OrderEventType::Created);
    assert_eq!(
        first.order.unwrap().id,
        created.id,
        "no event for changes before the call, or other users"
    );
    let second = meshwork_e2e::within("the next stream message", events.message())
        .await
        .unwrap()
        .expect("a cancelled event");
    assert_eq!(second.event_type(), OrderEventType::Cancelled);
    let cancelled = second.order.unwrap();
    assert_eq!(
        (cancelled.status(), cancelled.id),
        (OrderStatus::Cancelled, created.id)
    );
}

#[tokio::test]
async fn user_service_down_is_unavailable_and_recovers() {
    let mut mesh = Mesh::start();
    let user_id = new_user(&mesh, "buyer@example.com").await;
    let mut orders = mesh.order.orders().await;
    create(&mut orders, order_of(&user_id, "")).await.unwrap();

    let addr = mesh.user.grpc_addr;
    mesh.user.kill();
    let error = create(&mut orders, order_of(&user_id, "")).await.unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");

    // The same user-service comes back on the same address and data: orders work again.
    let _back = Spawn::new("user-service")
        .reusing(&mesh.user)
        .env("LISTEN_ADDR", addr.to_string())
        .start();
    meshwork_e2e::eventually("CreateOrder succeeds again", || {
        let mut orders = orders.clone();
        let request = order_of(&user_id, "");
        async move { create(&mut orders, request).await.ok() }
    })
    .await;
}

/// A "User service" that accepts connections and never answers.
async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

#[tokio::test]
async fn the_callers_deadline_is_deadline_exceeded_and_a_slow_user_service_unavailable() {
    let (url, _hole) = black_hole().await;
    let order = Spawn::new("order-service")
        .env("USER_SERVICE_URL", url)
        .env("USER_SERVICE_TIMEOUT", "3s")
        .start();
    // A client that sends its deadline but does not enforce it, so the answer seen is the
    // server's.
    let mut orders = meshwork_clients::OrderServiceClient::new(plain_http2(order.grpc_addr));

    let mut request = tonic::Request::new(order_of("someone", ""));
    request.set_timeout(std::time::Duration::from_millis(300));
    let error = orders.create_order(request).await.unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");

    let fast_cap = Spawn::new("order-service")
        .env("USER_SERVICE_URL", format!("http://{}", "127.0.0.1:9")) // discard port: nothing listens
        .env("USER_SERVICE_TIMEOUT", "300ms")
        .start();
    let error = create(&mut fast_cap.orders().await, order_of("someone", ""))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
}

#[tokio::test]
async fn a_page_too_large_for_max_message_bytes_is_cut_short_not_failed() {
    let user = Spawn::new("user-service").start();
    let order = Spawn::new("order-service")
        .env("USER_SERVICE_URL", user.url())
        .env("MAX_MESSAGE_BYTES", "4096")
        .start();
    let mesh = Mesh { user, order };
    let ada = new_user(&mesh, "ada@example.com").await;
    let mut orders = mesh.order.orders().await;
    let big = || CreateOrderRequest {
        user_id: ada.clone(),
        items: (0..20).map(|i| item(&format!("sku-{i:0>40}"), 1, 100)).collect(),
        request_id: String::new(),
    };
    for _ in 0..12 {
        create(&mut orders, big()).await.unwrap();
    }

    let (mut seen, mut token, mut pages) = (std::collections::HashSet::new(), String::new(), 0);
    loop {
        let request = ListOrdersRequest {
            user_id: String::new(),
            page_size: 50,
            page_token: token,
        };
        let page = orders
            .list_orders(request)
            .await
            .expect("a page, not an error")
            .into_inner();
        assert!(page.orders.len() < 12, "cut short: {} orders", page.orders.len());
        seen.extend(page.orders.into_iter().map(|order| order.id));
        pages += 1;
        assert!(pages <= 12, "the walk ends");
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 12, "every order once, over {pages} pages");
}

#[tokio::test]
async fn a_broken_watch_resumes_after_its_last_event_without_gap_or_duplicate() {
    let mesh = Mesh::start();
    let ada = new_user(&mesh, "ada@example.com").await;
    let mut orders = mesh.order.orders().await;
    let watch = |after_event_id: &str| WatchOrdersRequest {
        user_id: ada.clone(),
        after_event_id: after_event_id.into(),
    };
    let mut first = orders.watch_orders(watch("")).await.unwrap().into_inner();
    let seen = create(&mut orders, order_of(&ada, "")).await.unwrap();
    let last = meshwork_e2e::within("the first event", first.message()).await;
    let last = last.unwrap().expect("an event");
    assert_eq!(last.order.unwrap().id, seen.id);
    drop(first); // the stream breaks

    let missed = [
        create(&mut orders, order_of(&ada, "")).await.unwrap(),
        create(&mut orders, order_of(&ada, "")).await.unwrap(),
    ];
    let mut resumed = orders
        .watch_orders(watch(&last.event_id))
        .await
        .unwrap()
        .into_inner();
    let live = create(&mut orders, order_of(&ada, "")).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let event = meshwork_e2e::within("a replayed or live event", resumed.message()).await;
        ids.push(event.unwrap().expect("an event").order.unwrap().id);
    }
    assert_eq!(
        ids,
        [missed[0].id.clone(), missed[1].id.clone(), live.id],
        "missed ones first, then live, once each"
    );

    let unknown = orders
        .watch_orders(watch("01930000-0000-7000-8000-000000000000"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::OutOfRange, "{unknown:?}");
    assert_eq!(
        error_info(&unknown),
        Some(("EVENT_NOT_KEPT".into(), "order.v1.OrderService".into()))
    );
    let malformed = orders.watch_orders(watch("not-an-id")).await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&malformed), ["after_event_id"]);
}
