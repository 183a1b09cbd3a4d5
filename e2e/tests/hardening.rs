//! Bounded cost under careless or hostile peers, as CONTRACT's *Limits* says: sockets that
//! never speak are closed, half-sent requests do not pile up, and a service keeps serving.

use std::time::{Duration, Instant};

use meshwork::proto::hello::v1::SayHelloRequest;
use meshwork_e2e::{PATIENCE, Spawn};
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
