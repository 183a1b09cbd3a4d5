//! CONTRACT *Security*, on the real binaries: TLS on the gRPC port (right CA, wrong CA,
//! plaintext refused), mutual TLS, certificate rotation under an open connection, Order →
//! User over mutual TLS, every token case, every row of the policy table, health and
//! reflection open, grpcurl over mutual TLS with a token, and start-up errors.

use std::{
    fs,
    os::unix::fs::symlink,
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use meshwork_clients::{HelloServiceClient, OrderServiceClient, UserServiceClient};
use meshwork_e2e::{
    PATIENCE, Spawn, binary, error_info, eventually,
    fixtures::an_order,
    pki::{self, Ca, EcKey},
    secure::{AUDIENCE, ISSUER, Pki, client_tls, counting_tls_channel, path_text, tls_channel, with_token},
};
use meshwork_proto::{
    hello::v1::SayHelloRequest,
    order::v1::{CancelOrderRequest, GetOrderRequest, ListOrdersRequest, WatchOrdersRequest},
    user::v1::{
        CreateUserRequest, DeleteUserRequest, GetUserRequest, ListUsersRequest, UpdateUserRequest, User,
    },
};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use serde_json::json;
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// How long a rotated certificate may take to reach new handshakes (CONTRACT).
const ROTATION_LIMIT: Duration = Duration::from_secs(10);

fn hello_request() -> SayHelloRequest {
    SayHelloRequest { name: "Ada".into() }
}

async fn say_hello(channel: Channel) -> Result<String, tonic::Status> {
    let answer = HelloServiceClient::new(channel)
        .say_hello(hello_request())
        .await?;
    Ok(answer.into_inner().message)
}

/// The certificate a fresh TLS handshake with `addr` is shown.
async fn served_certificate(addr: std::net::SocketAddr, ca: &Path) -> CertificateDer<'static> {
    let tls = client_tls(ca, None);
    let uri: http::Uri = format!("https://{addr}").parse().unwrap();
    let mut connector = tls.connector(&uri);
    let io = tower::Service::call(&mut connector, uri)
        .await
        .expect("a TLS handshake");
    let (_, connection) = io.inner().get_ref();
    connection
        .peer_certificates()
        .expect("the server sent a certificate")[0]
        .clone()
}

#[tokio::test]
async fn the_grpc_port_speaks_tls_only_and_is_trusted_only_through_its_ca() {
    let pki = Pki::new();
    let hello = pki.tls(Spawn::new("hello-service")).start();

    let channel = tls_channel(hello.grpc_addr, &pki.ca_path, None)
        .await
        .expect("the right CA");
    assert_eq!(say_hello(channel).await.unwrap(), "Hello, Ada!");

    let stranger = Ca::new("Some other CA");
    let other_ca = stranger.write(&pki.path("other-ca.pem"));
    let refused = tls_channel(hello.grpc_addr, &other_ca, None).await;
    assert!(
        refused.is_err(),
        "a server certificate from another CA is not trusted"
    );

    // A plaintext HTTP/2 client gets no answer from a TLS port: the server's TLS alert
    // reads as a broken connection (tonic's code for it varies with the timing).
    let plaintext = Channel::from_shared(hello.url()).unwrap().connect().await;
    if let Ok(channel) = plaintext {
        let refused = say_hello(channel).await;
        assert!(refused.is_err(), "plaintext is refused: {refused:?}");
    }
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_of_its_ca() {
    let pki = Pki::new();
    let hello = pki.mutual_tls(Spawn::new("hello-service")).start();

    assert_eq!(
        say_hello(pki.channel(hello.grpc_addr).await).await.unwrap(),
        "Hello, Ada!"
    );

    let stranger = Ca::new("Some other CA");
    let foreign = stranger
        .issue("intruder", &[])
        .write(pki.dir.path(), "foreign-client");
    for (case, client) in [("no client certificate", None), ("another CA's", Some(&foreign))] {
        // TLS 1.3 finishes the client's side of the handshake before the server has
        // checked its certificate: the refusal shows on connect or on the first call.
        let refused = match tls_channel(hello.grpc_addr, &pki.ca_path, client).await {
            Err(_) => true,
            Ok(channel) => say_hello(channel).await.is_err(),
        };
        assert!(refused, "{case}: refused");
    }
}

/// Swaps a Kubernetes-style Secret volume: files are symlinks into `..data`, itself a
/// symlink to a timestamped directory, replaced in one rename.
fn mount_secret(volume: &Path, generation: &str, cert_pem: &str, key_pem: &str) {
    let data = volume.join(generation);
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("tls.crt"), cert_pem).unwrap();
    fs::write(data.join("tls.key"), key_pem).unwrap();
    let staged = volume.join("..data_tmp");
    let _ = fs::remove_file(&staged);
    symlink(generation, &staged).unwrap();
    fs::rename(&staged, volume.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        if fs::symlink_metadata(volume.join(file)).is_err() {
            symlink(format!("..data/{file}"), volume.join(file)).unwrap();
        }
    }
}

#[tokio::test]
async fn a_rotated_certificate_reaches_new_connections_while_open_ones_keep_working() {
    let pki = Pki::new();
    let volume = pki.path("secret");
    let first = pki.issue("first");
    mount_secret(&volume, "..2026_01", &first.cert_pem, &first.key_pem);
    let hello = Spawn::new("hello-service")
        .env("TLS_CERT", path_text(&volume.join("tls.crt")))
        .env("TLS_KEY", path_text(&volume.join("tls.key")))
        .start();
    let first_der = CertificateDer::from_pem_slice(first.cert_pem.as_bytes()).unwrap();
    assert_eq!(served_certificate(hello.grpc_addr, &pki.ca_path).await, first_der);

    let opened = Arc::new(AtomicUsize::new(0));
    let open = counting_tls_channel(hello.grpc_addr, &client_tls(&pki.ca_path, None), opened.clone());
    assert_eq!(say_hello(open.clone()).await.unwrap(), "Hello, Ada!");

    let second = pki.issue("second");
    mount_secret(&volume, "..2026_02", &second.cert_pem, &second.key_pem);
    let second_der = CertificateDer::from_pem_slice(second.cert_pem.as_bytes()).unwrap();
    let rotated = Instant::now() + ROTATION_LIMIT;
    loop {
        if served_certificate(hello.grpc_addr, &pki.ca_path).await == second_der {
            break;
        }
        assert!(
            Instant::now() < rotated,
            "new handshakes get the new certificate within {ROTATION_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert_eq!(
        say_hello(open).await.unwrap(),
        "Hello, Ada!",
        "the open connection still works"
    );
    assert_eq!(
        opened.load(Ordering::SeqCst),
        1,
        "on the same connection, not a new one"
    );
}

#[tokio::test]
async fn the_health_port_is_plaintext_and_serves_health_only() {
    let pki = Pki::new();
    let probe_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let probe_addr = probe_port.local_addr().unwrap();
    drop(probe_port);
    let mut hello = pki
        .auth(pki.mutual_tls(Spawn::new("hello-service")))
        .env("HEALTH_ADDR", probe_addr.to_string())
        .start();
    hello.wait_for_log("serving health (plaintext)");

    let plain = Channel::from_shared(format!("http://{probe_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let check = HealthClient::new(plain.clone())
        .check(HealthCheckRequest {
            service: "liveness".into(),
        })
        .await
        .expect("a kubelet-style plaintext probe, without a token");
    assert_eq!(check.into_inner().status, 1, "SERVING");
    let other = say_hello(plain).await.expect_err("nothing but health there");
    assert_eq!(other.code(), Code::Unimplemented);
}

#[tokio::test]
async fn bad_security_settings_stop_the_process_at_start_with_exit_status_2() {
    let pki = Pki::new();
    // A key of this CA's, but of another certificate.
    let _other = pki.issue("other");
    let mismatched_key = pki.path("other-key.pem");
    let secret = path_text(&pki.secret_path);
    let cert = path_text(&pki.server.0);
    let key = path_text(&pki.server.1);
    /// What is wrong, the settings, the setting the error must name.
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "a missing certificate",
            vec![
                ("TLS_CERT", "/nonexistent/cert.pem".into()),
                ("TLS_KEY", key.clone()),
            ],
            "--tls-cert",
        ),
        (
            "a certificate without its key",
            vec![("TLS_CERT", cert.clone())],
            "--tls-key",
        ),
        (
            "a key that is not the certificate's",
            vec![
                ("TLS_CERT", cert.clone()),
                ("TLS_KEY", path_text(&mismatched_key)),
            ],
            "TLS_KEY",
        ),
        (
            "an unreadable client CA",
            vec![
                ("TLS_CERT", cert),
                ("TLS_KEY", key),
                ("TLS_CLIENT_CA", "/nonexistent/ca.pem".into()),
            ],
            "--tls-client-ca",
        ),
        (
            "authentication without an issuer",
            vec![
                ("AUTH_JWT_SECRET_FILE", secret.clone()),
                ("AUTH_AUDIENCE", AUDIENCE.into()),
            ],
            "--auth-issuer",
        ),
        (
            "authentication without an audience",
            vec![("AUTH_JWT_SECRET_FILE", secret), ("AUTH_ISSUER", ISSUER.into())],
            "--auth-audience",
        ),
        (
            "a JWKS that is not one",
            vec![
                ("AUTH_JWKS_FILE", path_text(&pki.server.0)),
                ("AUTH_ISSUER", ISSUER.into()),
                ("AUTH_AUDIENCE", AUDIENCE.into()),
            ],
            "--auth-jwks-file",
        ),
    ];
    for (case, env, named) in cases {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(binary("hello-service"))
            .current_dir(dir.path())
            .env_clear()
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("METRICS_ADDR", "127.0.0.1:0")
            .envs(env)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{case}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{case}: one line: {stderr}");
        assert!(stderr.contains(named), "{case}: {stderr:?} names {named}");
    }

    let (code, stderr) = {
        let output = Command::new(binary("order-service"))
            .current_dir(tempfile::tempdir().unwrap().path())
            .env_clear()
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("USER_SERVICE_URL", "https://127.0.0.1:1")
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(2), "https:// without USER_SERVICE_CA: {stderr}");
    assert!(stderr.contains("USER_SERVICE_CA"), "{stderr}");
}

#[tokio::test]
async fn every_hs256_token_case() {
    let pki = Pki::new();
    let hello = pki.auth(Spawn::new("hello-service")).start();
    let channel = hello.channel().await;
    let call = |token: Option<String>| {
        let mut client = HelloServiceClient::new(channel.clone());
        async move {
            let request = match token {
                Some(token) => with_token(hello_request(), &token),
                None => tonic::Request::new(hello_request()),
            };
            client
                .say_hello(request)
                .await
                .map(|answer| answer.into_inner().message)
        }
    };
    let claims = |change: serde_json::Value| {
        let mut claims = pki::claims("u1", &[], ISSUER, AUDIENCE);
        for (key, value) in change.as_object().unwrap() {
            claims[key] = value.clone();
        }
        claims
    };

    assert_eq!(call(Some(pki.token("u1", &[]))).await.unwrap(), "Hello, Ada!");

    let now = pki::now();
    // 60 s of leeway for clock skew, either way.
    let skewed = claims(json!({"nbf": now + 30, "exp": now - 30}));
    assert!(call(Some(pki.sign(&skewed))).await.is_ok(), "within the leeway");
    let other_secret = b"another secret of at least thirty-two bytes!".as_slice();
    let refused = [
        ("no token", None, "CREDENTIALS_MISSING"),
        ("garbage", Some("not.a.jwt".to_owned()), "CREDENTIALS_INVALID"),
        (
            "expired",
            Some(pki.sign(&claims(json!({"exp": now - 3600})))),
            "CREDENTIALS_INVALID",
        ),
        (
            "not yet valid",
            Some(pki.sign(&claims(json!({"nbf": now + 3600})))),
            "CREDENTIALS_INVALID",
        ),
        (
            "another audience",
            Some(pki.sign(&claims(json!({"aud": "someone-else"})))),
            "CREDENTIALS_INVALID",
        ),
        (
            "another issuer",
            Some(pki.sign(&claims(json!({"iss": "https://evil.example"})))),
            "CREDENTIALS_INVALID",
        ),
        (
            "another key",
            Some(pki::hs256(other_secret, &claims(json!({})))),
            "CREDENTIALS_INVALID",
        ),
        (
            "alg none",
            Some(pki::unsigned(&claims(json!({})))),
            "CREDENTIALS_INVALID",
        ),
        (
            "no subject",
            Some(pki.sign(&json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now + 60}))),
            "CREDENTIALS_INVALID",
        ),
        (
            "a header too long to look at",
            Some("x".repeat(8000)),
            "CREDENTIALS_INVALID",
        ),
    ];
    for (case, token, reason) in refused {
        let sent = token.clone();
        let status = call(token).await.expect_err(case);
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        let (got_reason, domain) = error_info(&status).expect("an ErrorInfo");
        assert_eq!(
            (got_reason.as_str(), domain.as_str()),
            (reason, "hello.v1.HelloService"),
            "{case}"
        );
        if let Some(sent) = sent {
            assert!(
                !status.message().contains(&sent[..sent.len().min(20)]),
                "{case}: the token is not echoed"
            );
        }
        assert!(
            !status.message().to_lowercase().contains("signature"),
            "{case}: no reason why"
        );
    }

    // Health and reflection stay open.
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(health.is_ok(), "{health:?}");

    let metrics = hello.metrics().await;
    for reason in [
        "missing",
        "malformed",
        "expired",
        "not_yet_valid",
        "wrong_audience",
        "wrong_issuer",
        "bad_signature",
        "too_long",
    ] {
        let line = format!("meshwork_auth_failures_total{{reason=\"{reason}\"}} ");
        let count = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("{line} in /metrics"));
        assert_ne!(count.trim(), "0", "{reason} counted");
    }
    let logs = hello.logs().join("\n");
    assert!(
        !logs.contains(&pki.token("u1", &[])[..40]),
        "tokens are never logged"
    );
}

#[tokio::test]
async fn jwks_keys_are_chosen_by_kid_never_by_the_tokens_algorithm_and_reloaded() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let rsa_a = fs::read(fixtures.join("jwt-rsa-a.pem")).unwrap();
    let rsa_b = fs::read(fixtures.join("jwt-rsa-b.pem")).unwrap();
    let jwk = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&fs::read(fixtures.join(name)).unwrap()).unwrap()
    };
    let ec = EcKey::new("ec-1");
    let pki = Pki::new();
    let jwks_path = pki.path("jwks.json");
    fs::write(&jwks_path, pki::jwks(&[jwk("jwt-rsa-a.jwk.json"), ec.jwk()])).unwrap();
    let hello = Spawn::new("hello-service")
        .env("AUTH_JWKS_FILE", path_text(&jwks_path))
        .env("AUTH_ISSUER", ISSUER)
        .env("AUTH_AUDIENCE", AUDIENCE)
        .start();
    let channel = hello.channel().await;
    let call = |token: String| {
        let mut client = HelloServiceClient::new(channel.clone());
        async move {
            client
                .say_hello(with_token(hello_request(), &token))
                .await
                .map(|_| ())
        }
    };
    let claims = pki::claims("u1", &[], ISSUER, AUDIENCE);

    call(pki::rs256(&rsa_a, "rsa-a", &claims))
        .await
        .expect("RS256 with a listed key");
    call(ec.sign(&claims)).await.expect("ES256 with a listed key");

    let refused = [
        ("a key not in the set", pki::rs256(&rsa_b, "rsa-b", &claims)),
        ("a listed kid, another key", pki::rs256(&rsa_b, "rsa-a", &claims)),
        // Algorithm confusion: an HMAC made with the RSA public key's own bytes as secret.
        ("HS256 against the RSA key", {
            let public = jwk("jwt-rsa-a.jwk.json").to_string();
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            header.kid = Some("rsa-a".into());
            let key = jsonwebtoken::EncodingKey::from_secret(public.as_bytes()).unwrap();
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        }),
        ("HS256 with no secret configured", pki.sign(&claims)),
        ("alg none with a listed kid", pki::unsigned(&claims)),
    ];
    for (case, token) in refused {
        let status = call(token).await.expect_err(case);
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
    }

    // The file is replaced (rsa-b in, rsa-a out): the new key is accepted within a bound.
    fs::write(&jwks_path, pki::jwks(&[jwk("jwt-rsa-b.jwk.json")])).unwrap();
    let new_token = pki::rs256(&rsa_b, "rsa-b", &claims);
    eventually("the reloaded JWKS is used", || {
        let call = call(new_token.clone());
        async move { call.await.ok() }
    })
    .await;
    let old = call(pki::rs256(&rsa_a, "rsa-a", &claims))
        .await
        .expect_err("a removed key");
    assert_eq!(old.code(), Code::Unauthenticated);
}

/// A user and an order service with mutual TLS between everyone and authentication on.
struct SecureMesh {
    pki: Pki,
    user: meshwork_e2e::Service,
    order: meshwork_e2e::Service,
}

impl SecureMesh {
    fn start() -> Self {
        let pki = Pki::new();
        let user = pki.auth(pki.mutual_tls(Spawn::new("user-service"))).start();
        let order = pki
            .auth(pki.mutual_tls(Spawn::new("order-service")))
            .env("USER_SERVICE_URL", format!("https://{}", user.grpc_addr))
            .env("USER_SERVICE_CA", path_text(&pki.ca_path))
            .start();
        Self { pki, user, order }
    }

    async fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.pki.channel(self.user.grpc_addr).await)
    }

    async fn orders(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(self.pki.channel(self.order.grpc_addr).await)
    }
}

fn denied<T: std::fmt::Debug>(case: &str, result: Result<T, tonic::Status>) {
    let status = result.expect_err(case);
    assert_eq!(status.code(), Code::PermissionDenied, "{case}: {status:?}");
}

#[tokio::test]
async fn the_policy_table_over_mutual_tls_from_order_to_user() {
    let mesh = SecureMesh::start();
    let admin = mesh.pki.token("root", &["admin"]);
    let mut users = mesh.users().await;
    let mut orders = mesh.orders().await;

    // CreateUser, ListUsers, DeleteUser: admin only.
    let create = |email: &str| CreateUserRequest {
        name: "Ada".into(),
        email: email.into(),
    };
    let ada = users
        .create_user(with_token(create("ada@example.com"), &admin))
        .await
        .expect("an admin creates users")
        .into_inner()
        .user
        .unwrap()
        .id;
    let bob = users
        .create_user(with_token(create("bob@example.com"), &admin))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .id;
    let ada_token = mesh.pki.token(&ada, &[]);
    let bob_token = mesh.pki.token(&bob, &[]);
    denied(
        "CreateUser by a user",
        users
            .create_user(with_token(create("eve@example.com"), &ada_token))
            .await,
    );
    denied(
        "ListUsers by a user",
        users
            .list_users(with_token(ListUsersRequest::default(), &ada_token))
            .await,
    );
    users
        .list_users(with_token(ListUsersRequest::default(), &admin))
        .await
        .expect("by an admin");
    denied(
        "DeleteUser by a user",
        users
            .delete_user(with_token(DeleteUserRequest { id: bob.clone() }, &ada_token))
            .await,
    );

    // GetUser, UpdateUser: the user itself, or an admin.
    let get = |id: &str| GetUserRequest { id: id.into() };
    users
        .get_user(with_token(get(&ada), &ada_token))
        .await
        .expect("oneself");
    users
        .get_user(with_token(get(&ada), &admin))
        .await
        .expect("an admin");
    denied(
        "GetUser of another",
        users.get_user(with_token(get(&bob), &ada_token)).await,
    );
    let rename = |id: &str| UpdateUserRequest {
        user: Some(User {
            id: id.into(),
            name: "Renamed".into(),
            ..Default::default()
        }),
        update_mask: None,
    };
    users
        .update_user(with_token(rename(&ada), &ada_token))
        .await
        .expect("oneself");
    denied(
        "UpdateUser of another",
        users.update_user(with_token(rename(&bob), &ada_token)).await,
    );
    users
        .update_user(with_token(rename(&bob), &admin))
        .await
        .expect("an admin updates anyone");

    // CreateOrder: user_id = sub, or admin; Order passes the token on to User over mTLS.
    let ada_order = orders
        .create_order(with_token(an_order(&ada), &ada_token))
        .await
        .expect("one's own order, end to end over mutual TLS")
        .into_inner()
        .order
        .unwrap()
        .id;
    let bob_order = orders
        .create_order(with_token(an_order(&bob), &admin))
        .await
        .expect("an admin orders for anyone")
        .into_inner()
        .order
        .unwrap()
        .id;
    denied(
        "CreateOrder for another",
        orders.create_order(with_token(an_order(&bob), &ada_token)).await,
    );

    // GetOrder, CancelOrder: the order's user, or admin; another's is PERMISSION_DENIED.
    let get = |id: &str| GetOrderRequest { id: id.into() };
    orders
        .get_order(with_token(get(&ada_order), &ada_token))
        .await
        .expect("one's own");
    orders
        .get_order(with_token(get(&ada_order), &admin))
        .await
        .expect("an admin");
    denied(
        "GetOrder of another's",
        orders.get_order(with_token(get(&bob_order), &ada_token)).await,
    );
    let cancel = |id: &str| CancelOrderRequest { id: id.into() };
    denied(
        "CancelOrder of another's",
        orders
            .cancel_order(with_token(cancel(&bob_order), &ada_token))
            .await,
    );
    let still = orders
        .get_order(with_token(get(&bob_order), &bob_token))
        .await
        .unwrap();
    assert_eq!(
        still.into_inner().order.unwrap().status,
        1,
        "still PENDING: nothing was cancelled"
    );
    orders
        .cancel_order(with_token(cancel(&ada_order), &ada_token))
        .await
        .expect("one's own");
    orders
        .cancel_order(with_token(cancel(&bob_order), &admin))
        .await
        .expect("an admin");

    // ListOrders, WatchOrders: user_id = sub, or admin; every user's is admin only.
    let list = |user_id: &str| ListOrdersRequest {
        user_id: user_id.into(),
        ..Default::default()
    };
    let own = orders
        .list_orders(with_token(list(&ada), &ada_token))
        .await
        .expect("one's own");
    assert_eq!(own.into_inner().orders.len(), 1);
    denied(
        "ListOrders of another",
        orders.list_orders(with_token(list(&bob), &ada_token)).await,
    );
    denied(
        "ListOrders of everyone",
        orders.list_orders(with_token(list(""), &ada_token)).await,
    );
    orders
        .list_orders(with_token(list(""), &admin))
        .await
        .expect("an admin lists everyone's");
    let watch = |user_id: &str| WatchOrdersRequest {
        user_id: user_id.into(),
        ..Default::default()
    };
    orders
        .watch_orders(with_token(watch(&ada), &ada_token))
        .await
        .expect("one's own");
    denied(
        "WatchOrders of another",
        orders.watch_orders(with_token(watch(&bob), &ada_token)).await,
    );
    denied(
        "WatchOrders of everyone",
        orders.watch_orders(with_token(watch(""), &ada_token)).await,
    );
    orders
        .watch_orders(with_token(watch(""), &admin))
        .await
        .expect("an admin watches everyone's");

    // No token at all, over a perfectly good mutual TLS connection.
    let status = orders.list_orders(list(&ada)).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);

    let metrics = mesh.order.metrics().await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("meshwork_auth_failures_total{reason=\"permission_denied\"} ")
                && !l.ends_with(" 0")
        ),
        "denials counted"
    );

    users
        .delete_user(with_token(DeleteUserRequest { id: bob }, &admin))
        .await
        .expect("an admin deletes users");
}

fn grpcurl_path() -> std::path::PathBuf {
    let path = std::env::var_os("GRPCURL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/grpcurl"));
    assert!(
        path.exists(),
        "grpcurl not found at {}: run `make test` or set GRPCURL",
        path.display()
    );
    path
}

#[test]
fn grpcurl_over_mutual_tls_with_a_token() {
    let pki = Pki::new();
    let hello = pki.auth(pki.mutual_tls(Spawn::new("hello-service"))).start();
    let target = format!("localhost:{}", hello.grpc_addr.port());
    let grpcurl = |args: &[&str]| {
        Command::new(grpcurl_path())
            .args(["-cacert", &path_text(&pki.ca_path)])
            .args([
                "-cert",
                &path_text(&pki.client.0),
                "-key",
                &path_text(&pki.client.1),
            ])
            .args(args)
            .output()
            .expect("grpcurl runs")
    };

    let listed = grpcurl(&[&target, "list"]);
    assert!(
        listed.status.success(),
        "reflection needs no token: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("hello.v1.HelloService"));

    let header = format!("authorization: Bearer {}", pki.token("u1", &[]));
    let answer = grpcurl(&[
        "-H",
        &header,
        "-d",
        r#"{"name":"Ada"}"#,
        &target,
        "hello.v1.HelloService/SayHello",
    ]);
    assert!(
        answer.status.success(),
        "{}",
        String::from_utf8_lossy(&answer.stderr)
    );
    assert!(String::from_utf8_lossy(&answer.stdout).contains("Hello, Ada!"));

    let refused = grpcurl(&[
        "-d",
        r#"{"name":"Ada"}"#,
        &target,
        "hello.v1.HelloService/SayHello",
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let without_client_cert = Command::new(grpcurl_path())
        .args(["-cacert", &path_text(&pki.ca_path), &target, "list"])
        .output()
        .unwrap();
    assert!(
        !without_client_cert.status.success(),
        "mutual TLS refuses grpcurl without -cert/-key"
    );
}

/// Reads until the peer closes `socket`; how long that took (at most [`PATIENCE`]).
async fn closed_by_peer(mut socket: tokio::net::TcpStream) -> Duration {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    let closed = tokio::time::timeout(PATIENCE, async {
        while let Ok(1..) = socket.read(&mut buffer).await {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept the connection open past {PATIENCE:?}"
    );
    started.elapsed()
}

#[tokio::test]
async fn a_tls_handshake_that_never_finishes_is_closed_by_the_preface_timer() {
    use tokio::io::AsyncWriteExt;
    let pki = Pki::new();
    let hello = pki.tls(Spawn::new("hello-service")).start();

    // Plaintext HTTP/2 on the TLS port: refused at once, not after the timer.
    let mut plaintext = tokio::net::TcpStream::connect(hello.grpc_addr).await.unwrap();
    plaintext
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    assert!(
        closed_by_peer(plaintext).await < Duration::from_secs(5),
        "plaintext closed at once"
    );

    // A socket that never starts its handshake is closed by the 10 s limit of CONTRACT
    // *Limits*, which covers the TLS handshake: not at once, it was given its chance.
    let silent = tokio::net::TcpStream::connect(hello.grpc_addr).await.unwrap();
    assert!(closed_by_peer(silent).await >= Duration::from_secs(5));

    let channel = tls_channel(hello.grpc_addr, &pki.ca_path, None).await.unwrap();
    assert_eq!(say_hello(channel).await.unwrap(), "Hello, Ada!", "still serving");
}

#[tokio::test]
async fn dns_discovery_works_over_mutual_tls_checking_the_resolved_name() {
    let pki = Pki::new();
    let user = pki.mutual_tls(Spawn::new("user-service")).start();
    let order_over = |tls_name: Option<&str>| {
        let spawn = pki
            .mutual_tls(Spawn::new("order-service"))
            .env(
                "USER_SERVICE_URL",
                format!("dns:///localhost:{}", user.grpc_addr.port()),
            )
            .env("USER_SERVICE_CA", path_text(&pki.ca_path));
        match tls_name {
            Some(name) => spawn.env("USER_SERVICE_TLS_NAME", name),
            None => spawn,
        }
        .start()
    };
    let user_id = UserServiceClient::new(pki.channel(user.grpc_addr).await)
        .create_user(CreateUserRequest {
            name: "Ada".into(),
            email: "ada@example.com".into(),
        })
        .await
        .expect("a user over mutual TLS")
        .into_inner()
        .user
        .unwrap()
        .id;

    // The endpoints are IP addresses; the certificate is checked for the name resolved.
    let order = order_over(None);
    let mut orders = OrderServiceClient::new(pki.channel(order.grpc_addr).await);
    let created = orders.create_order(an_order(&user_id)).await;
    assert!(created.is_ok(), "{created:?}");

    // A name User's certificate does not carry: no connection, so no call.
    let misnamed = order_over(Some("user-service.elsewhere.example"));
    let mut orders = OrderServiceClient::new(pki.channel(misnamed.grpc_addr).await);
    let refused = orders
        .create_order(an_order(&user_id))
        .await
        .expect_err("wrong name");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
}

#[tokio::test]
async fn a_renewed_client_ca_is_used_for_new_handshakes() {
    let pki = Pki::new();
    let bundle = pki.path("client-ca.pem");
    fs::copy(&pki.ca_path, &bundle).unwrap();
    let hello = pki
        .tls(Spawn::new("hello-service"))
        .env("TLS_CLIENT_CA", path_text(&bundle))
        .start();
    let old_client = Some(&pki.client);
    let open = tls_channel(hello.grpc_addr, &pki.ca_path, old_client)
        .await
        .unwrap();
    assert_eq!(say_hello(open.clone()).await.unwrap(), "Hello, Ada!");

    // The client CA is renewed: only the new CA's clients are trusted from now on.
    let renewed = Ca::new("Meshwork test CA, renewed");
    let new_client = renewed
        .issue("new-client", &[])
        .write(pki.dir.path(), "new-client");
    renewed.write(&bundle);
    let accepted = |client: (std::path::PathBuf, std::path::PathBuf)| {
        let ca = pki.ca_path.clone();
        async move {
            match tls_channel(hello.grpc_addr, &ca, Some(&client)).await {
                Ok(channel) => say_hello(channel).await.is_ok(),
                Err(_) => false,
            }
        }
    };
    let deadline = Instant::now() + ROTATION_LIMIT;
    while !accepted(new_client.clone()).await {
        assert!(
            Instant::now() < deadline,
            "the renewed CA's client is accepted within {ROTATION_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !accepted(pki.client.clone()).await,
        "the old CA's client is refused on a new connection"
    );
    assert_eq!(
        say_hello(open).await.unwrap(),
        "Hello, Ada!",
        "the open connection stays"
    );
}
