//! Streams order events as they happen (of one user, or of every order), until Ctrl-C, and
//! resumes where it left off when the stream breaks: each event carries its `event_id`, and
//! a new watch with `after_event_id` replays what was missed before going live.
//! Place orders meanwhile, e.g. with the `place_order` example.
//!
//! With `make run` going: `cargo run -p meshwork-clients --example watch_orders [-- USER_ID]`
//! (`ORDER_SERVICE_URL` overrides the default `http://127.0.0.1:50053`).

use std::time::Duration;

use meshwork_clients::{
    ChannelOptions, MeshChannel, OrderServiceClient, connect, proto::order::v1::WatchOrdersRequest,
};
use tonic::{Code, Status};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let user_id = std::env::args().nth(1).unwrap_or_default();
    let target = std::env::var("ORDER_SERVICE_URL").unwrap_or_else(|_| "http://127.0.0.1:50053".into());
    // No timeout: a watch is meant to stay open.
    let mut orders = OrderServiceClient::new(connect(&target.parse()?, &ChannelOptions::default()));
    // The last event seen: where a new watch resumes.
    let mut after_event_id = String::new();
    loop {
        let request = WatchOrdersRequest {
            user_id: user_id.clone(),
            after_event_id: after_event_id.clone(),
        };
        let ended = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            ended = watch(&mut orders, request, &mut after_event_id) => ended,
        };
        match ended {
            // Resumable: the server is shutting down or was unreachable, or we fell behind.
            Err(status) if matches!(status.code(), Code::Unavailable | Code::Aborted) => {
                eprintln!("watch ended ({}); resuming", status.message());
            }
            // The resume point is older than the server keeps: start from now (a real
            // client would re-list its orders first).
            Err(status) if status.code() == Code::OutOfRange => after_event_id.clear(),
            Err(status) => return Err(status.into()),
            Ok(()) => eprintln!("the server ended the watch; resuming"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Prints events until the stream ends, keeping the last event id in `after_event_id`.
async fn watch(
    orders: &mut OrderServiceClient<MeshChannel>,
    request: WatchOrdersRequest,
    after_event_id: &mut String,
) -> Result<(), Status> {
    let mut events = orders.watch_orders(request).await?.into_inner();
    println!("watching; Ctrl-C stops");
    while let Some(event) = events.message().await? {
        let kind = event.event_type();
        let order = event.order.unwrap_or_default();
        println!(
            "{kind:?}: order {} of user {}, {} cents",
            order.id, order.user_id, order.total_cents
        );
        *after_event_id = event.event_id;
    }
    Ok(())
}
