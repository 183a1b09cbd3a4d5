//! Retries, bounded three ways: by a retry budget, by the call's deadline, and by a
//! maximum number of attempts.
//!
//! - Only an attempt that got no response, or `UNAVAILABLE`, is retried, and only for
//!   methods that are safe to repeat ([`RetryPolicy::retryable`]; by default the reads:
//!   `Get*`, `List*`, `Check`). A write is retried only by a caller that opts in because
//!   it carries an idempotency key (CreateOrder's `request_id`).
//! - The budget (tower's `TpsBudget`, as in linkerd and Envoy) allows retries of at most a
//!   fixed share of recent calls (20% by default): when a backend is down, the retries on
//!   top of the calls stay a trickle instead of a storm.
//! - Between attempts: jittered exponential backoff; the remaining deadline is passed on
//!   in `grpc-timeout` and no attempt starts after it.
//!
//! The request message is buffered once so that each attempt can send it again. A call
//! that fails for good is answered with a plain `UNAVAILABLE` status, never a transport
//! error, so every caller sees a gRPC status.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use meshwork::{
    metrics::RESILIENCE,
    rpc::{RpcMethod, status_in},
};
use tokio::time::Instant;
use tonic::{Code, Status, body::Body};
use tower::{
    BoxError, Layer, Service, ServiceExt,
    retry::{
        backoff::{Backoff, ExponentialBackoffMaker, MakeBackoff},
        budget::{Budget, TpsBudget},
    },
    util::rng::HasherRng,
};

/// How calls are retried.
#[derive(Clone)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Shared by every call through one channel.
    pub budget: Arc<TpsBudget>,
    /// Backoff between attempts.
    pub backoff: ExponentialBackoffMaker<HasherRng>,
    /// Which methods may be sent again.
    pub retryable: fn(&RpcMethod) -> bool,
    /// The time limit of a call that carries no `grpc-timeout` of its own.
    pub default_timeout: Option<Duration>,
}

/// The default of [`RetryPolicy::retryable`]: reads, which are safe to repeat.
pub fn reads_only(method: &RpcMethod) -> bool {
    ["Get", "List", "Check"]
        .iter()
        .any(|verb| method.method.starts_with(verb))
}

/// For callers whose writes all carry idempotency keys.
pub fn every_method(_: &RpcMethod) -> bool {
    true
}

/// See the module documentation.
#[derive(Clone)]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    pub fn new(policy: RetryPolicy) -> Self {
        Self { policy }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service made by [`RetryLayer`].
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    policy: RetryPolicy,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<Request<Body>> for Retry<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Status> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    /// Never an error: a call that fails for good is an `UNAVAILABLE` response.
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each attempt waits for the inner service itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let policy = self.policy.clone();
        Box::pin(async move { Ok(call_with_retries(inner, policy, request).await) })
    }
}

async fn call_with_retries<S>(inner: S, policy: RetryPolicy, request: Request<Body>) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Status> + Clone,
{
    let method = RpcMethod::from_path(request.uri().path());
    let timeout = request
        .headers()
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(meshwork::layers::deadline::parse_grpc_timeout)
        .or(policy.default_timeout);
    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    let (parts, body) = request.into_parts();
    let message = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => return status_response(Status::internal(format!("cannot read the request: {error}"))),
    };
    policy.budget.deposit();
    let mut backoff = policy.backoff.clone().make_backoff();

    for attempt in 1.. {
        let mut request = Request::from_parts(parts.clone(), Body::new(Full::new(message.clone())));
        if let Some(deadline) = deadline {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return status_response(Status::deadline_exceeded(
                    "deadline exceeded before the call was sent",
                ));
            }
            request
                .headers_mut()
                .insert("grpc-timeout", grpc_timeout(remaining));
        }
        let why = match inner.clone().oneshot(request).await {
            Ok(response) if status_in(response.headers()) != Some(Code::Unavailable) => return response,
            Ok(response) => match attempt_may_repeat(&policy, &method, attempt) {
                true => "UNAVAILABLE".to_owned(),
                false => return response,
            },
            Err(status) => status.message().to_owned(),
        };
        if !attempt_may_repeat(&policy, &method, attempt) || !policy.budget.withdraw() {
            return status_response(Status::unavailable(why));
        }
        tracing::info!(attempt, reason = %why, "retrying");
        RESILIENCE.retried(&method);
        let pause = backoff.next_backoff();
        match deadline {
            Some(deadline) => {
                tokio::select! {
                    () = pause => {}
                    () = tokio::time::sleep_until(deadline) => {
                        return status_response(Status::deadline_exceeded("deadline exceeded while retrying"));
                    }
                }
            }
            None => pause.await,
        }
    }
    unreachable!("the attempt loop returns")
}

fn attempt_may_repeat(policy: &RetryPolicy, method: &RpcMethod, attempt: u32) -> bool {
    attempt < policy.max_attempts && (policy.retryable)(method)
}

/// Says why no response came, in words a caller can read.
pub(crate) fn describe(error: BoxError) -> String {
    if error.is::<tower::load_shed::error::Overloaded>() {
        return "every endpoint is ejected or unreachable".into();
    }
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// `grpc-timeout` in milliseconds (at most 8 digits, as the spec allows).
fn grpc_timeout(remaining: Duration) -> HeaderValue {
    let millis = remaining.as_millis().clamp(1, 99_999_999);
    HeaderValue::from_str(&format!("{millis}m")).expect("digits and a unit are a valid header value")
}

/// A trailers-only response carrying `status`.
fn status_response(status: Status) -> Response<Body> {
    status.into_http()
}
