//! Bounded cost under careless or hostile peers, as CONTRACT's *Limits* says: sockets that
//! never speak are closed, half-sent requests do not pile up, and a service keeps serving.

use std::time::{Duration, Instant};

use meshwork_e2e::{PATIENCE, Spawn};
use meshwork_proto::hello::v1::SayHelloRequest;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Reads until the peer closes the socket; returns how long that took, or fails after
/// [`PATIENCE`].
async fn closed_by_peer(mut socket: TcpStream) -> Duration {
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept a silent connection open past {PATIENCE:?}"
    );
    started.elapsed()
}

#[tokio::test]
async fn connections_that_never_send_the_http2_preface_are_closed() {
    let hello = Spawn::new("hello-service").start();
    let silent: Vec<TcpStream> =
        futures::future::join_all((0..40).map(|_| TcpStream::connect(hello.grpc_addr)))
            .await
            .into_iter()
            .map(|socket| socket.expect("the server accepts connections"))
            .collect();

    let waits = futures::future::join_all(silent.into_iter().map(closed_by_peer)).await;
    // Closed by the server's preface timer (10 s), not at once: they were given a chance.
    assert!(
        waits.iter().all(|wait| *wait >= Duration::from_secs(5)),
        "{waits:?}"
    );

    let mut client = hello.hello().await;
    let reply = client.say_hello(SayHelloRequest { name: "still".into() }).await;
    assert!(reply.is_ok(), "the service still serves: {reply:?}");
}

#[tokio::test]
async fn the_metrics_server_closes_a_request_that_never_finishes() {
    let hello = Spawn::new("hello-service").start();
    let mut socket = TcpStream::connect(hello.metrics_addr).await.unwrap();
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    closed_by_peer(socket).await;
    assert!(hello.metrics().await.contains("grpc_server_started_total"));
}

/// Sends `bytes` on a fresh connection and waits for the server to close it.
async fn send_and_expect_close(addr: std::net::SocketAddr, bytes: &[u8]) {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(bytes).await.unwrap();
    closed_by_peer(socket).await;
}

#[tokio::test]
async fn garbage_and_malformed_frames_close_the_connection_and_the_server_keeps_serving() {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let hello = Spawn::new("hello-service").start();

    // Not HTTP/2 at all.
    send_and_expect_close(
        hello.grpc_addr,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\xfe garbage",
    )
    .await;
    // The preface, then a frame of an absurd length (16 MiB, beyond SETTINGS_MAX_FRAME_SIZE).
    let mut oversize = PREFACE.to_vec();
    oversize.extend_from_slice(&[0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00]); // SETTINGS
    oversize.extend_from_slice(&[0xff, 0xff, 0xff, 0x01, 0x05, 0x00, 0x00, 0x00, 0x01]);
    send_and_expect_close(hello.grpc_addr, &oversize).await;
    // The preface, then HEADERS whose header block is not valid HPACK.
    let mut bad_hpack = PREFACE.to_vec();
    bad_hpack.extend_from_slice(&[0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00]);
    bad_hpack.extend_from_slice(&[
        0x00, 0x00, 0x04, 0x01, 0x05, 0x00, 0x00, 0x00, 0x01, 0xff, 0xff, 0xff, 0xff,
    ]);
    send_and_expect_close(hello.grpc_addr, &bad_hpack).await;

    let mut client = hello.hello().await;
    let reply = client.say_hello(SayHelloRequest { name: "still".into() }).await;
    assert!(reply.is_ok(), "the service still serves: {reply:?}");
}

#[tokio::test]
async fn oversize_metadata_is_refused_and_the_server_keeps_serving() {
    let hello = Spawn::new("hello-service").start();
    let mut client = hello.hello().await;
    let mut request = tonic::Request::new(SayHelloRequest { name: "big".into() });
    request
        .metadata_mut()
        .insert("x-padding", "a".repeat(64 * 1024).parse().unwrap());
    assert!(
        client.say_hello(request).await.is_err(),
        "64 KiB of metadata is refused"
    );

    let mut client = hello.hello().await;
    let reply = client.say_hello(SayHelloRequest { name: "small".into() }).await;
    assert!(reply.is_ok(), "the service still serves: {reply:?}");
}

#[tokio::test]
async fn a_call_whose_message_never_comes_ends_with_its_deadline() {
    use http_body_util::{BodyExt, StreamBody};

    let hello = Spawn::new("hello-service").env("MAX_CALL_DURATION", "1s").start();
    // Headers, then a body that never sends a byte nor ends.
    let never = StreamBody::new(futures::stream::pending::<
        Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>,
    >());
    let request = http::Request::post(format!(
        "http://{}/hello.v1.HelloService/SayHello",
        hello.grpc_addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(never.boxed())
    .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let response = tokio::time::timeout(PATIENCE, client.request(request))
        .await
        .expect("an answer within PATIENCE")
        .expect("an HTTP/2 response");
    let status = tonic::Status::from_header_map(response.headers());
    let status = match status {
        Some(status) => status,
        None => {
            let trailers = tokio::time::timeout(PATIENCE, response.into_body().collect())
                .await
                .expect("trailers within PATIENCE")
                .unwrap()
                .trailers()
                .cloned()
                .expect("trailers");
            tonic::Status::from_header_map(&trailers).expect("a grpc-status")
        }
    };
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
}

#[tokio::test]
async fn a_deadline_below_a_millisecond_that_passes_is_deadline_exceeded() {
    let hello = Spawn::new("hello-service").start();
    let mut client =
        meshwork_clients::HelloServiceClient::new(meshwork_e2e::raw::plain_http2(hello.grpc_addr));
    let mut request = tonic::Request::new(SayHelloRequest { name: "late".into() });
    // One nanosecond: over before any handler can answer, so never OK.
    request
        .metadata_mut()
        .insert("grpc-timeout", "1n".parse().unwrap());
    let error = client.say_hello(request).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::DeadlineExceeded, "{error:?}");
}
