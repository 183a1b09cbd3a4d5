//! Events end to end against a real NATS JetStream server (CONTRACT.md, Events): the outbox
//! relayed with its headers, the user-deletion saga, and the faults (the broker away,
//! order-service away, a relay stopped between publishing and marking sent).
//!
//! Every test here needs NATS, so each is `#[ignore]`d and in the module `nats`: a plain
//! `cargo test` reports them as ignored; `make test` runs them when MESHWORK_TEST_NATS_URL
//! is set (`.ci/run` sets it). They take turns on the broker ([`Broker::take`]).

mod nats {
    use std::collections::HashSet;

    use meshwork_e2e::{
        Service, Spawn,
        broker::{Broker, BrokerProxy, Received},
        eventually,
        fixtures::{an_order, new_user},
    };
    use meshwork_proto::{
        order::v1::{
            CancelOrderRequest, GetOrderRequest, OrderEvent, OrderEventType, OrderStatus, WatchOrdersRequest,
        },
        user::v1::{DeleteUserRequest, UpdateUserRequest, User, UserEvent, UserEventType},
    };
    use prost::Message;
    use sqlx::Connection;
    use tonic::Code;

    const TRACE_ID: &str = "5b8efff798038103d269b633813fc60c";

    /// A user-service and an order-service that publish to `events_url`.
    fn mesh(events_url: &str) -> (Service, Service) {
        let user = Spawn::new("user-service").env("EVENTS_URL", events_url).start();
        let order = order_service(&user, events_url, None);
        (user, order)
    }

    fn order_service(user: &Service, events_url: &str, earlier: Option<&Service>) -> Service {
        let spawn = Spawn::new("order-service")
            .env("USER_SERVICE_URL", user.url())
            .env("EVENTS_URL", events_url);
        match earlier {
            Some(earlier) => spawn.reusing(earlier).start(),
            None => spawn.start(),
        }
    }

    /// Waits until the stream holds `count` messages on `subject`.
    async fn wait_for(broker: &Broker, subject: &str, count: usize) -> Vec<Received> {
        eventually(&format!("{count} messages on {subject}"), || async {
            let messages = broker.messages_on(subject).await;
            (messages.len() >= count).then_some(messages)
        })
        .await
    }

    async fn order_status(order: &Service, id: &str) -> OrderStatus {
        let request = GetOrderRequest { id: id.into() };
        let found = order.orders().await.get_order(request).await.unwrap();
        found.into_inner().order.unwrap().status()
    }

    /// Runs `sql` on the database at `url` (SQLite or PostgreSQL); the rows it changed.
    async fn execute(url: &str, sql: &'static str) -> u64 {
        match url.starts_with("postgres") {
            true => {
                let mut db = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query(sql).execute(&mut db).await.unwrap().rows_affected()
            }
            false => {
                let mut db = sqlx::SqliteConnection::connect(url).await.unwrap();
                sqlx::query(sql).execute(&mut db).await.unwrap().rows_affected()
            }
        }
    }

    /// Waits until `service` has nothing left in its outbox.
    async fn outbox_drained(service: &Service) {
        eventually("the outbox drained", || async {
            (metric(service, "meshwork_outbox_pending").await == Some(0.0)).then_some(())
        })
        .await;
    }

    /// The value of the unlabelled metric `name` on `service`'s `/metrics`.
    async fn metric(service: &Service, name: &str) -> Option<f64> {
        let text = service.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[tokio::test]
    #[ignore = "needs NATS: set MESHWORK_TEST_NATS_URL"]
    async fn every_change_is_published_once_in_commit_order_with_its_headers() {
        let broker = Broker::take().await;
        let (user, order) = mesh(&broker.url);
        let id = new_user(&user, "ada@example.com").await;
        let update = UpdateUserRequest {
            user: Some(User {
                id: id.clone(),
                name: "Ada L.".into(),
                ..Default::default()
            }),
            update_mask: None,
        };
        user.users().await.update_user(update).await.unwrap();
        let placed = order.orders().await.create_order(an_order(&id)).await.unwrap();
        let placed = placed.into_inner().order.unwrap();
        let cancel = CancelOrderRequest {
            id: placed.id.clone(),
        };
        order.orders().await.cancel_order(cancel).await.unwrap();
        user.users()
            .await
            .delete_user(DeleteUserRequest { id: id.clone() })
            .await
            .unwrap();

        let all = eventually("five events", || async {
            let messages = broker.messages().await;
            (messages.len() >= 5).then_some(messages)
        })
        .await;
        let subjects_of = |prefix: &str| -> Vec<String> {
            let of = all.iter().filter(|m| m.subject.starts_with(prefix));
            of.map(|m| m.subject.clone()).collect()
        };
        assert_eq!(
            subjects_of("meshwork.user."),
            [
                "meshwork.user.v1.created",
                "meshwork.user.v1.updated",
                "meshwork.user.v1.deleted"
            ]
        );
        assert_eq!(
            subjects_of("meshwork.order."),
            ["meshwork.order.v1.created", "meshwork.order.v1.cancelled"]
        );
        for message in &all {
            let event_id = message.header("Nats-Msg-Id").expect("Nats-Msg-Id");
            assert_eq!(message.header("ce-id"), Some(event_id));
            assert_eq!(message.header("ce-specversion"), Some("1.0"));
            assert_eq!(message.header("ce-type"), Some(message.subject.as_str()));
            assert_eq!(message.header("Content-Type"), Some("application/protobuf"));
            let (source, payload_id) = match message.subject.starts_with("meshwork.user.") {
                true => (
                    "user.v1.UserService",
                    UserEvent::decode(message.payload.clone()).unwrap().event_id,
                ),
                false => (
                    "order.v1.OrderService",
                    OrderEvent::decode(message.payload.clone()).unwrap().event_id,
                ),
            };
            assert_eq!(message.header("ce-source"), Some(source), "{message:?}");
            assert_eq!(payload_id, event_id);
        }
        let deleted = UserEvent::decode(
            all.iter()
                .find(|m| m.subject.ends_with("deleted"))
                .unwrap()
                .payload
                .clone(),
        );
        let deleted = deleted.unwrap();
        assert_eq!(deleted.event_type(), UserEventType::Deleted);
        let as_it_was = deleted.user.unwrap();
        assert_eq!(
            (as_it_was.id.as_str(), as_it_was.name.as_str()),
            (id.as_str(), "Ada L.")
        );
        assert!(deleted.occur_time.is_some());
        let cancelled = all.iter().find(|m| m.subject.ends_with("cancelled")).unwrap();
        let cancelled = OrderEvent::decode(cancelled.payload.clone()).unwrap();
        assert_eq!(cancelled.event_type(), OrderEventType::Cancelled);
        assert_eq!(cancelled.order.unwrap().status(), OrderStatus::Cancelled);
        outbox_drained(&user).await;
    }

    #[tokio::test]
    #[ignore = "needs NATS: set MESHWORK_TEST_NATS_URL"]
    async fn deleting_a_user_cancels_their_pending_orders_in_the_same_trace() {
        let broker = Broker::take().await;
        let (user, order) = mesh(&broker.url);
        let ada = new_user(&user, "ada@example.com").await;
        let bob = new_user(&user, "bob@example.com").await;
        let mut orders = order.orders().await;
        let mut placed = Vec::new();
        for user_id in [&ada, &ada, &bob] {
            let created = orders.create_order(an_order(user_id)).await.unwrap();
            placed.push(created.into_inner().order.unwrap().id);
        }
        let watch = WatchOrdersRequest {
            user_id: ada.clone(),
            ..Default::default()
        };
        let mut watch = orders.watch_orders(watch).await.unwrap().into_inner();

        let mut delete = tonic::Request::new(DeleteUserRequest { id: ada.clone() });
        let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
        delete
            .metadata_mut()
            .insert("traceparent", traceparent.parse().unwrap());
        user.users().await.delete_user(delete).await.unwrap();

        let cancelled = wait_for(&broker, "meshwork.order.v1.cancelled", 2).await;
        for id in &placed[..2] {
            assert_eq!(order_status(&order, id).await, OrderStatus::Cancelled);
        }
        assert_eq!(
            order_status(&order, &placed[2]).await,
            OrderStatus::Pending,
            "bob's stays"
        );
        for message in &cancelled {
            let traceparent = message.header("traceparent").expect("a traceparent header");
            assert!(
                traceparent.contains(TRACE_ID),
                "one trace from DeleteUser on: {traceparent}"
            );
        }
        for _ in 0..2 {
            let event = meshwork_e2e::within("a cancellation on the watch", watch.message()).await;
            let event = event.unwrap().expect("an event");
            assert_eq!(event.event_type(), OrderEventType::Cancelled);
            assert!(!event.event_id.is_empty());
        }
        let refused = orders.create_order(an_order(&ada)).await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        let consumed = "meshwork_events_consumed_total{outcome=\"ok\",subject=\"meshwork.user.v1.deleted\"}";
        eventually("the deletion counted as consumed", || async {
            (metric(&order, consumed).await == Some(1.0)).then_some(())
        })
        .await;
    }

    #[tokio::test]
    #[ignore = "needs NATS: set MESHWORK_TEST_NATS_URL"]
    async fn with_the_broker_away_calls_succeed_and_every_event_arrives_once_it_is_back() {
        let broker = Broker::take().await;
        let proxy = BrokerProxy::start(&broker.url).await;
        let (user, order) = mesh(&proxy.url());
        // Once the services have created the stream, the broker goes away.
        eventually("the stream", || async { broker.stream().await.map(drop) }).await;
        proxy.cut();

        let mut ids = Vec::new();
        for n in 0..5 {
            let id = new_user(&user, &format!("buyer{n}@example.com")).await;
            order
                .orders()
                .await
                .create_order(an_order(&id))
                .await
                .expect("no call fails");
            ids.push(id);
        }
        eventually("the outbox grows", || async {
            let pending = metric(&user, "meshwork_outbox_pending").await;
            (pending == Some(5.0)).then_some(())
        })
        .await;
        assert!(broker.messages_on("meshwork.user.v1.created").await.is_empty());

        proxy.restore();
        let created = wait_for(&broker, "meshwork.user.v1.created", 5).await;
        let orders = wait_for(&broker, "meshwork.order.v1.created", 5).await;
        for messages in [&created, &orders] {
            let distinct: HashSet<_> = messages.iter().map(|m| m.header("Nats-Msg-Id")).collect();
            assert_eq!(distinct.len(), messages.len(), "nothing twice");
            assert_eq!(messages.len(), 5);
        }
        let users: Vec<_> = created
            .iter()
            .map(|m| UserEvent::decode(m.payload.clone()).unwrap().user.unwrap().id)
            .collect();
        assert_eq!(users, ids, "in commit order");
        outbox_drained(&order).await;
    }

    #[tokio::test]
    #[ignore = "needs NATS: set MESHWORK_TEST_NATS_URL"]
    async fn a_user_deleted_while_order_service_is_down_has_their_orders_cancelled_after_it_restarts() {
        let broker = Broker::take().await;
        let (user, mut order) = mesh(&broker.url);
        let ada = new_user(&user, "ada@example.com").await;
        let placed = order.orders().await.create_order(an_order(&ada)).await.unwrap();
        let placed = placed.into_inner().order.unwrap().id;
        // Its durable consumer exists once it has said so.
        order.wait_for_log("consuming events");
        order.terminate();
        order.wait_exit().await;

        user.users()
            .await
            .delete_user(DeleteUserRequest { id: ada.clone() })
            .await
            .unwrap();
        wait_for(&broker, "meshwork.user.v1.deleted", 1).await;

        let order = order_service(&user, &broker.url, Some(&order));
        eventually("the order is cancelled", || async {
            (order_status(&order, &placed).await == OrderStatus::Cancelled).then_some(())
        })
        .await;
        wait_for(&broker, "meshwork.order.v1.cancelled", 1).await;
    }

    #[tokio::test]
    #[ignore = "needs NATS: set MESHWORK_TEST_NATS_URL"]
    async fn a_relay_stopped_between_publishing_and_marking_sent_publishes_again_and_jetstream_drops_it() {
        let broker = Broker::take().await;
        let mut user = Spawn::new("user-service").env("EVENTS_URL", &broker.url).start();
        let id = new_user(&user, "ada@example.com").await;
        let published = wait_for(&broker, "meshwork.user.v1.created", 1).await;
        let published_total = "meshwork_events_published_total{subject=\"meshwork.user.v1.created\"}";
        // Acknowledged (whether it was marked sent before the kill or not, the row is unmarked
        // below: what a relay that died between the two leaves).
        eventually("acknowledged", || async {
            (metric(&user, published_total).await == Some(1.0)).then_some(())
        })
        .await;
        user.kill();
        user.wait_exit().await;

        // What a relay that died after JetStream's acknowledgement leaves: the row unsent.
        let url = match &user.database {
            Some(database) => database.url.clone(),
            None => format!("sqlite://{}", user.dir.path().join("data/user.db").display()),
        };
        let unmarked = execute(&url, "UPDATE user_outbox SET sent_time = NULL").await;
        assert_eq!(unmarked, 1);

        let user = Spawn::new("user-service")
            .env("EVENTS_URL", &broker.url)
            .reusing(&user)
            .start();
        eventually("published again", || async {
            (metric(&user, published_total).await == Some(1.0)).then_some(())
        })
        .await;
        outbox_drained(&user).await;
        let after = broker.messages_on("meshwork.user.v1.created").await;
        assert_eq!(after.len(), 1, "JetStream dropped the duplicate");
        assert_eq!(after[0].header("Nats-Msg-Id"), published[0].header("Nats-Msg-Id"));
        let event = UserEvent::decode(after[0].payload.clone()).unwrap();
        assert_eq!(event.user.unwrap().id, id);
    }

    /// Needs PostgreSQL as well: a plain `--ignored nats::` run without it skips this module.
    mod postgres {
        use std::sync::Arc;

        use meshwork_e2e::database::{TestDatabase, required_postgres_url};

        use super::*;

        #[tokio::test]
        #[ignore = "needs NATS and PostgreSQL: set MESHWORK_TEST_NATS_URL and MESHWORK_TEST_POSTGRES_URL"]
        async fn two_replicas_on_one_database_relay_through_one_and_publish_each_event_once() {
            let broker = Broker::take().await;
            let database = Arc::new(TestDatabase::create(&required_postgres_url()));
            let replica = || {
                Spawn::new("user-service")
                    .on_database(database.clone())
                    .env("EVENTS_URL", &broker.url)
                    .start()
            };
            let (a, b) = (replica(), replica());
            let mut ids = Vec::new();
            for n in 0..6 {
                let through = if n % 2 == 0 { &a } else { &b };
                ids.push(new_user(through, &format!("buyer{n}@example.com")).await);
            }
            let created = wait_for(&broker, "meshwork.user.v1.created", 6).await;
            let users: Vec<_> = created
                .iter()
                .map(|m| UserEvent::decode(m.payload.clone()).unwrap().user.unwrap().id)
                .collect();
            assert_eq!(users, ids, "once each, in commit order across both replicas");
            let published = "meshwork_events_published_total{subject=\"meshwork.user.v1.created\"}";
            let by_replica = [metric(&a, published).await, metric(&b, published).await];
            let by_replica = by_replica.map(|n| n.unwrap_or(0.0));
            assert_eq!(
                by_replica.iter().sum::<f64>(),
                6.0,
                "nothing published twice: {by_replica:?}"
            );
            assert!(by_replica.contains(&0.0), "one replica relays: {by_replica:?}");
        }
    }
}
