//! Requests the tests make again and again.

use meshwork_proto::{
    order::v1::{CreateOrderRequest, OrderItem},
    user::v1::CreateUserRequest,
};

use crate::Service;

/// One book for 1.00, for `user_id`, without an idempotency key.
pub fn an_order(user_id: &str) -> CreateOrderRequest {
    an_order_with_key(user_id, "")
}

/// One book for 1.00, for `user_id`, with `request_id` as its idempotency key.
pub fn an_order_with_key(user_id: &str, request_id: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        user_id: user_id.into(),
        items: vec![OrderItem {
            sku: "book".into(),
            quantity: 1,
            unit_price_cents: 100,
        }],
        request_id: request_id.into(),
    }
}

/// Creates a user with `email` on `user` (a user-service); returns its id.
pub async fn new_user(user: &Service, email: &str) -> String {
    let request = CreateUserRequest {
        name: "Buyer".into(),
        email: email.into(),
    };
    let created = user
        .users()
        .await
        .create_user(request)
        .await
        .expect("the user is created");
    created.into_inner().user.expect("a created user").id
}
