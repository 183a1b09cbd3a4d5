//! Deadlines. A call ends with `DEADLINE_EXCEEDED` when the caller's `grpc-timeout` runs
//! out, or when the server's own cap does (whichever is first); the handler's future is
//! dropped then, which cancels whatever it was waiting on, downstream calls included.
//!
//! The limit covers the work up to the response headers: a server-streaming call's stream
//! (WatchOrders) is not cut by it.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use tonic::Status;
use tower::{Layer, Service};

/// See the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    /// The longest any call may take, whatever the caller asks for.
    cap: Option<Duration>,
}

impl DeadlineLayer {
    pub fn new(cap: Option<Duration>) -> Self {
        Self { cap }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner, cap: self.cap }
    }
}

/// The service made by [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    cap: Option<Duration>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody> Service<Request<ReqBody>> for Deadline<S>
where
    S: Service<Request<ReqBody>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let caller = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout);
        let limit = match (caller, self.cap) {
            (Some(caller), Some(cap)) => Some(caller.min(cap)),
            (one, other) => one.or(other),
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            let Some(limit) = limit else {
                return call.await;
            };
            match tokio::time::timeout(limit, call).await {
                Ok(result) => result,
                Err(_elapsed) => {
                    Ok(Status::deadline_exceeded(format!("deadline of {limit:?} exceeded")).into_http())
                }
            }
        })
    }
}

/// A `grpc-timeout` value: 1 to 8 digits and a unit, H M S m u n.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_refuses_garbage() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("150m"), Some(Duration::from_millis(150)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
    }
}
