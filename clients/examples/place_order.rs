//! Places an order for a user (a new one unless a user id is given), safely retried: the
//! `request_id` makes a repeated `CreateOrder` return the first order instead of a second.
//!
//! With `make run` going: `cargo run -p meshwork-clients --example place_order [-- USER_ID]`
//! (`USER_SERVICE_URL`, `ORDER_SERVICE_URL` override the default localhost ports).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshwork_clients::{
    ChannelOptions, OrderServiceClient, UserServiceClient, connect,
    proto::{
        order::v1::{CreateOrderRequest, OrderItem},
        user::v1::CreateUserRequest,
    },
};

fn url(variable: &str, default: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| default.into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let unique = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    // Writes are retried only because this caller's writes carry an idempotency key.
    let options = ChannelOptions::default()
        .timeout(Duration::from_secs(5))
        .retry_writes(true);

    let user_id = match std::env::args().nth(1) {
        Some(id) => id,
        None => {
            let users = connect(
                &url("USER_SERVICE_URL", "http://127.0.0.1:50052").parse()?,
                &options,
            );
            let request = CreateUserRequest {
                name: "Ada".into(),
                email: format!("ada.{unique}@example.com"),
            };
            let user = UserServiceClient::new(users)
                .create_user(request)
                .await?
                .into_inner()
                .user;
            user.ok_or("the response has no user")?.id
        }
    };

    let mut orders = OrderServiceClient::new(connect(
        &url("ORDER_SERVICE_URL", "http://127.0.0.1:50053").parse()?,
        &options,
    ));
    let request = CreateOrderRequest {
        user_id,
        items: vec![OrderItem {
            sku: "book".into(),
            quantity: 2,
            unit_price_cents: 1250,
        }],
        request_id: format!("example-{unique}"),
    };
    let first = orders.create_order(request.clone()).await?.into_inner().order;
    let again = orders.create_order(request).await?.into_inner().order;
    let (first, again) = (first.ok_or("no order")?, again.ok_or("no order")?);
    println!(
        "placed order {} for user {}: {} cents",
        first.id, first.user_id, first.total_cents
    );
    println!(
        "sent again with the same request_id: order {} (the same one)",
        again.id
    );
    Ok(())
}
