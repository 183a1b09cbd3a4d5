//! Creates a user, then shows how an invalid one is refused, field by field.
//!
//! With `make run` going: `cargo run -p meshwork-clients --example create_user -- Ada ada@example.com`
//! (`USER_SERVICE_URL` overrides the default `http://127.0.0.1:50052`).

use std::time::Duration;

use meshwork_clients::{
    ChannelOptions, UserServiceClient, connect, error_info, field_violations,
    proto::user::v1::CreateUserRequest,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "Ada".into());
    let email = args
        .next()
        .unwrap_or_else(|| format!("ada.{}@example.com", std::process::id()));
    let target = std::env::var("USER_SERVICE_URL").unwrap_or_else(|_| "http://127.0.0.1:50052".into());

    let options = ChannelOptions::default().timeout(Duration::from_secs(5));
    let mut users = UserServiceClient::new(connect(&target.parse()?, &options));

    let user = users
        .create_user(CreateUserRequest { name, email })
        .await?
        .into_inner()
        .user
        .ok_or("the response has no user")?;
    println!("created user {} <{}>", user.id, user.email);

    let refused = users
        .create_user(CreateUserRequest {
            name: String::new(),
            email: "not-an-email".into(),
        })
        .await
        .expect_err("an empty name and a bad email are refused");
    println!("an invalid user: {:?}", refused.code());
    for (field, description) in field_violations(&refused) {
        println!("  {field}: {description}");
    }
    if let Some(info) = error_info(&refused) {
        println!("  {} said {}", info.domain, info.reason);
    }
    Ok(())
}
