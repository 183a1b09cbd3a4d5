//! The HTTP endpoint that serves the Prometheus metrics of [`meshwork_rpc::metrics`] at
//! `/metrics`.

use std::{convert::Infallible, time::Duration};

use http::{Request, Response, StatusCode, header::CONTENT_TYPE};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// How long a connection may take to send its request head before it is closed, so that
/// half-sent requests cannot pile up (hyper enforces it only when given a timer).
const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `GET /metrics` on `listener` until the process exits. HTTP/1.1 only: that is
/// what Prometheus and curl speak.
pub async fn serve(listener: TcpListener) {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(REQUEST_HEAD_TIMEOUT);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors and the like: back off, do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let connection = http1.serve_connection(TokioIo::new(stream), hyper::service::service_fn(respond));
        tokio::spawn(connection);
    }
}

async fn respond(request: Request<Incoming>) -> Result<Response<String>, Infallible> {
    let response = match request.uri().path() {
        "/metrics" => Response::builder()
            .header(CONTENT_TYPE, prometheus::TEXT_FORMAT)
            .body(meshwork_rpc::metrics::render()),
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body("try /metrics\n".into()),
    };
    Ok(response.expect("a static response is valid"))
}
