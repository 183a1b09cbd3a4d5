//! user-service as a client sees it: CRUD, validation, uniqueness, pagination, persistence.

use std::collections::HashSet;

use meshwork_e2e::{Spawn, bad_request_fields, error_info};
use meshwork_proto::user::v1::{
    CreateUserRequest, DeleteUserRequest, GetUserRequest, ListUsersRequest, UpdateUserRequest, User,
};
use tonic::{Code, transport::Channel};

type Client = meshwork_clients::UserServiceClient<Channel>;

async fn create(client: &mut Client, name: &str, email: &str) -> Result<User, tonic::Status> {
    let request = CreateUserRequest {
        name: name.into(),
        email: email.into(),
    };
    Ok(client
        .create_user(request)
        .await?
        .into_inner()
        .user
        .expect("a created user"))
}

#[tokio::test]
async fn create_get_update_delete() {
    let service = Spawn::new("user-service").start();
    let mut users = service.users().await;

    let ada = create(&mut users, "Ada", "Ada@Example.com").await.unwrap();
    assert!(!ada.id.is_empty());
    assert_eq!(ada.email, "ada@example.com", "emails are stored lower-cased");
    assert!(ada.create_time.is_some() && ada.update_time == ada.create_time);

    let got = users
        .get_user(GetUserRequest { id: ada.id.clone() })
        .await
        .unwrap();
    assert_eq!(got.into_inner().user.as_ref(), Some(&ada));

    let renamed = users
        .update_user(UpdateUserRequest {
            user: Some(User {
                id: ada.id.clone(),
                name: "Ada Lovelace".into(),
                ..Default::default()
            }),
            update_mask: None,
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(renamed.name, "Ada Lovelace");
    assert_eq!(
        renamed.email, ada.email,
        "a field left empty without a mask is not changed"
    );

    users
        .delete_user(DeleteUserRequest { id: ada.id.clone() })
        .await
        .unwrap();
    let gone = users
        .get_user(GetUserRequest { id: ada.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let again = users
        .delete_user(DeleteUserRequest { id: ada.id })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
}

#[tokio::test]
async fn invalid_fields_are_all_named_and_nothing_is_stored() {
    let service = Spawn::new("user-service").start();
    let mut users = service.users().await;

    let error = create(&mut users, "", "not-an-email").await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&error), ["name", "email"]);
    assert_eq!(
        error_info(&error),
        Some(("INVALID_ARGUMENT".into(), "user.v1.UserService".into()))
    );

    let too_long = create(&mut users, &"x".repeat(10_000), "ok@example.com")
        .await
        .unwrap_err();
    assert_eq!(too_long.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&too_long), ["name"]);

    let listed = users
        .list_users(ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.users.is_empty(), "a refused request stores nothing");
}

#[tokio::test]
async fn update_mask_paths_are_checked_and_fields_named_by_request_path() {
    let service = Spawn::new("user-service").start();
    let mut users = service.users().await;
    let ada = create(&mut users, "Ada", "ada@example.com").await.unwrap();

    let update = |name: &str, email: &str, paths: &[&str]| UpdateUserRequest {
        user: Some(User {
            id: ada.id.clone(),
            name: name.into(),
            email: email.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types_mask(paths)),
    };
    let bad_email = users
        .update_user(update("", "nope", &["email"]))
        .await
        .unwrap_err();
    assert_eq!(bad_email.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&bad_email), ["user.email"]);

    let unknown_path = users.update_user(update("Ada", "", &["age"])).await.unwrap_err();
    assert_eq!(unknown_path.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&unknown_path), ["update_mask.paths[0]"]);

    // Only the masked field changes, even though the other one is populated.
    let changed = users
        .update_user(update("Countess", "ignored@example.com", &["name"]))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(
        (changed.name.as_str(), changed.email.as_str()),
        ("Countess", "ada@example.com")
    );

    let missing = UpdateUserRequest {
        user: Some(User {
            id: "no-such-user".into(),
            name: "X".into(),
            ..Default::default()
        }),
        update_mask: None,
    };
    assert_eq!(
        users.update_user(missing).await.unwrap_err().code(),
        Code::NotFound
    );
}

fn prost_types_mask(paths: &[&str]) -> prost_types::FieldMask {
    prost_types::FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    }
}

#[tokio::test]
async fn a_taken_email_is_already_exists_even_when_racing() {
    let service = Spawn::new("user-service").start();
    let mut users = service.users().await;
    create(&mut users, "Ada", "ada@example.com").await.unwrap();

    let duplicate = create(&mut users, "Other Ada", "ADA@example.com")
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);

    // Ten concurrent creates of one new email: exactly one wins.
    let racers = (0..10).map(|i| {
        let mut client = users.clone();
        tokio::spawn(async move { create(&mut client, &format!("Racer {i}"), "race@example.com").await })
    });
    let mut won = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => won += 1,
            Err(status) => assert_eq!(status.code(), Code::AlreadyExists, "{status:?}"),
        }
    }
    assert_eq!(won, 1);
}

#[tokio::test]
async fn pages_walk_every_user_once() {
    let service = Spawn::new("user-service").start();
    let mut users = service.users().await;
    let mut created = HashSet::new();
    for i in 0..23 {
        created.insert(
            create(&mut users, "U", &format!("u{i}@example.com"))
                .await
                .unwrap()
                .id,
        );
    }

    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = users
            .list_users(ListUsersRequest {
                page_size: 5,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.users.len() <= 5);
        seen.extend(page.users.into_iter().map(|u| u.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen.len(), 23, "no duplicates");
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), created, "no gaps");

    let all = users
        .list_users(ListUsersRequest {
            page_size: 100_000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.users.len(), 23, "a huge page size is lowered, not refused");

    for (page_size, page_token) in [(-1, ""), (0, "garbage")] {
        let request = ListUsersRequest {
            page_size,
            page_token: page_token.into(),
        };
        let error = users.list_users(request).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
    }
}

#[tokio::test]
async fn users_survive_a_restart() {
    let mut first = Spawn::new("user-service").start();
    let ada = create(&mut first.users().await, "Ada", "ada@example.com")
        .await
        .unwrap();
    first.terminate();
    assert!(first.wait_exit().await.success());

    let second = Spawn::new("user-service").reusing(&first).start();
    let mut users = second.users().await;
    let got = users.get_user(GetUserRequest { id: ada.id }).await.unwrap();
    assert_eq!(got.into_inner().user.unwrap().email, "ada@example.com");
    if first.database.is_none() {
        let default_path = first.dir.path().join("data/user.db");
        assert!(default_path.exists(), "the default database is data/user.db");
    }
}

#[tokio::test]
async fn a_page_too_large_for_max_message_bytes_is_cut_short_not_failed() {
    let service = Spawn::new("user-service")
        .env("MAX_MESSAGE_BYTES", "2048")
        .start();
    let mut users = service.users().await;
    for i in 0..30 {
        create(&mut users, &"n".repeat(40), &format!("u{i}@example.com"))
            .await
            .unwrap();
    }

    let mut seen = HashSet::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let request = ListUsersRequest {
            page_size: 50,
            page_token: token,
        };
        let page = users
            .list_users(request)
            .await
            .expect("a page, not an error")
            .into_inner();
        assert!(page.users.len() < 30, "cut short: {} users", page.users.len());
        seen.extend(page.users.into_iter().map(|user| user.id));
        pages += 1;
        assert!(pages < 30, "the walk ends");
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 30, "every user once, over {pages} pages");
}

#[tokio::test]
async fn control_characters_and_oversize_requests_are_invalid_argument() {
    let service = Spawn::new("user-service").start();
    let mut users = service.users().await;

    let error = users
        .get_user(GetUserRequest { id: "a\0b".into() })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert_eq!(bad_request_fields(&error), ["id"]);

    let error = users
        .list_users(ListUsersRequest {
            page_size: 10,
            page_token: "\u{1}".repeat(5000),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_fields(&error), ["page_token"]);

    let request = UpdateUserRequest {
        user: Some(User {
            id: "u".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types_mask(&vec!["name"; 50_000])),
    };
    let error = users.update_user(request).await.unwrap_err();
    assert_eq!(bad_request_fields(&error), ["update_mask.paths"]);
}
