//! Retries, bounded three ways: by a retry budget, by the call's deadline, and by a
//! maximum number of attempts.
//!
//! - Only an attempt that got no response, or `UNAVAILABLE`, is retried, and only for
//!   methods that are safe to repeat: those whose `.proto` declares an `idempotency_level`
//!   (the reads say `NO_SIDE_EFFECTS`). Every other method is retried only by a caller that
//!   opts in ([`RetryPolicy::retry_writes`]) because its writes carry idempotency keys.
//! - The budget (tower's `TpsBudget`, as in linkerd and Envoy) allows retries of at most a
//!   fixed share of recent calls (20% by default): when a backend is down, the retries on
//!   top of the calls stay a trickle instead of a storm.
//! - The call's deadline is the [`Deadline`] its caller put in the request's extensions
//!   (a handler passes on its own), capped by [`RetryPolicy::timeout`]. Each attempt sends
//!   what is left of it as `grpc-timeout`, so a retry carries less time than the attempt
//!   before; an attempt still running at the deadline is dropped (`DEADLINE_EXCEEDED`),
//!   and no attempt starts after it. Between attempts: jittered exponential backoff.
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

use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use meshwork_rpc::{Deadline, RpcMethod, deadline::GRPC_TIMEOUT, metrics::RESILIENCE, status_in};
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
    /// Repeat every method, not only those declared safe to repeat: for callers whose
    /// writes all carry idempotency keys.
    pub retry_writes: bool,
    /// The longest a call may take, retries included, whatever its own deadline.
    pub timeout: Option<Duration>,
}

impl RetryPolicy {
    fn may_repeat(&self, method: &RpcMethod, attempt: u32) -> bool {
        attempt < self.max_attempts && (self.retry_writes || method.idempotency.safe_to_repeat())
    }
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
    let method = RpcMethod::of(&request);
    let own = Deadline::of(request.extensions());
    let deadline = match policy.timeout {
        Some(cap) => Some(Deadline::after(cap).min(own)),
        None => own,
    };
    let (parts, body) = request.into_parts();
    let message = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => return status_response(Status::internal(format!("cannot read the request: {error}"))),
    };
    policy.budget.deposit();
    let mut backoff = policy.backoff.clone().make_backoff();

    for attempt in 1.. {
        let mut request = Request::from_parts(parts.clone(), Body::new(Full::new(message.clone())));
        let attempt_result = match deadline {
            Some(deadline) if deadline.has_passed() => {
                return status_response(Status::deadline_exceeded(
                    "deadline exceeded before the call was sent",
                ));
            }
            Some(deadline) => {
                // What is left, written once, for this attempt only.
                request
                    .headers_mut()
                    .insert(GRPC_TIMEOUT, deadline.grpc_timeout());
                // The local timer covers an endpoint that never answers at all.
                match tokio::time::timeout_at(deadline.0, inner.clone().oneshot(request)).await {
                    Ok(result) => result,
                    Err(_elapsed) => {
                        return status_response(Status::deadline_exceeded("no answer within the deadline"));
                    }
                }
            }
            None => inner.clone().oneshot(request).await,
        };
        let why = match attempt_result {
            Ok(response) if status_in(response.headers()) != Some(Code::Unavailable) => return response,
            Ok(response) => match policy.may_repeat(&method, attempt) {
                true => "UNAVAILABLE".to_owned(),
                false => return response,
            },
            Err(status) => status.message().to_owned(),
        };
        if !policy.may_repeat(&method, attempt) || !policy.budget.withdraw() {
            return status_response(Status::unavailable(why));
        }
        tracing::info!(attempt, reason = %why, "retrying");
        RESILIENCE.retried(&method);
        let pause = backoff.next_backoff();
        match deadline {
            Some(deadline) => {
                tokio::select! {
                    () = pause => {}
                    () = tokio::time::sleep_until(deadline.0) => {
                        return status_response(Status::deadline_exceeded("deadline exceeded while retrying"));
                    }
                }
            }
            None => pause.await,
        }
    }
    unreachable!("the attempt loop returns")
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

/// A trailers-only response carrying `status`.
fn status_response(status: Status) -> Response<Body> {
    status.into_http()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use meshwork_rpc::deadline::parse_grpc_timeout;

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            backoff: ExponentialBackoffMaker::new(
                Duration::from_millis(10),
                Duration::from_millis(20),
                1.0,
                HasherRng::default(),
            )
            .unwrap(),
            retry_writes: false,
            timeout: Some(Duration::from_secs(2)),
        }
    }

    /// The `grpc-timeout` of each attempt, in order.
    type Budgets = Arc<Mutex<Vec<Duration>>>;

    /// A callee whose first answer takes `first_takes` and is UNAVAILABLE; it records the
    /// `grpc-timeout` each attempt carried.
    fn flaky_callee(
        first_takes: Duration,
    ) -> (
        impl Service<Request<Body>, Response = Response<Body>, Error = Status, Future: Send>
        + Clone
        + Send
        + 'static,
        Budgets,
    ) {
        let budgets = Arc::new(Mutex::new(Vec::new()));
        let seen = budgets.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let budgets = budgets.clone();
            async move {
                let header = request.headers()[GRPC_TIMEOUT].to_str().unwrap().to_owned();
                let attempt = {
                    let mut budgets = budgets.lock().unwrap();
                    budgets.push(parse_grpc_timeout(&header).unwrap());
                    budgets.len()
                };
                if attempt == 1 {
                    tokio::time::sleep(first_takes).await;
                    return Ok(Status::unavailable("restarting").into_http());
                }
                Ok(Response::new(Body::empty()))
            }
        });
        (service, seen)
    }

    fn get_user(deadline: Deadline) -> Request<Body> {
        let mut request = Request::builder()
            .uri("http://user/user.v1.UserService/GetUser")
            .body(Body::empty())
            .unwrap();
        request.extensions_mut().insert(deadline);
        request
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_carries_what_is_left_of_the_deadline() {
        let (callee, budgets) = flaky_callee(Duration::from_millis(300));
        let response = call_with_retries(
            callee,
            policy(),
            get_user(Deadline::after(Duration::from_secs(1))),
        )
        .await;
        assert_eq!(status_in(response.headers()), None, "the retry succeeded");

        let budgets = budgets.lock().unwrap().clone();
        assert_eq!(budgets.len(), 2);
        assert_eq!(
            budgets[0],
            Duration::from_secs(1),
            "the first attempt gets the caller's deadline"
        );
        let spent = budgets[0] - budgets[1];
        // The first attempt's 300 ms, plus one backoff of at most 20 ms.
        assert!(
            spent >= Duration::from_millis(300) && spent <= Duration::from_millis(321),
            "the second attempt carried {:?} less",
            spent
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_policy_timeout_caps_a_longer_caller_deadline() {
        let (callee, budgets) = flaky_callee(Duration::ZERO);
        call_with_retries(
            callee,
            policy(),
            get_user(Deadline::after(Duration::from_secs(60))),
        )
        .await;
        assert_eq!(budgets.lock().unwrap()[0], Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn writes_are_not_repeated_unless_the_caller_opts_in() {
        let (callee, budgets) = flaky_callee(Duration::ZERO);
        let mut request = get_user(Deadline::after(Duration::from_secs(1)));
        *request.uri_mut() = "http://user/user.v1.UserService/DeleteUser".parse().unwrap();
        let response = call_with_retries(callee, policy(), request).await;
        assert_eq!(status_in(response.headers()), Some(Code::Unavailable));
        assert_eq!(budgets.lock().unwrap().len(), 1);
    }
}
