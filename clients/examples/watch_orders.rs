//! Streams order events as they happen (of one user, or of every order), until Ctrl-C.
//! Place orders meanwhile, e.g. with the `place_order` example.
//!
//! With `make run` going: `cargo run -p meshwork-clients --example watch_orders [-- USER_ID]`
//! (`ORDER_SERVICE_URL` overrides the default `http://127.0.0.1:50053`).

use meshwork_clients::{ChannelOptions, OrderServiceClient, connect, proto::order::v1::WatchOrdersRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let user_id = std::env::args().nth(1).unwrap_or_default();
    let target = std::env::var("ORDER_SERVICE_URL").unwrap_or_else(|_| "http://127.0.0.1:50053".into());
    // No timeout: a watch is meant to stay open.
    let mut orders = OrderServiceClient::new(connect(&target.parse()?, &ChannelOptions::default()));

    let mut events = orders
        .watch_orders(WatchOrdersRequest { user_id })
        .await?
        .into_inner();
    println!("watching; Ctrl-C stops");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            event = events.message() => match event? {
                Some(event) => {
                    let kind = event.event_type();
                    let order = event.order.unwrap_or_default();
                    println!("{kind:?}: order {} of user {}, {} cents", order.id, order.user_id, order.total_cents);
                }
                // The server ended the stream (it is shutting down): re-list, then watch again.
                None => return Ok(()),
            },
        }
    }
}
