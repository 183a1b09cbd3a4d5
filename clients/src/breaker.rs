//! Outlier ejection: a circuit breaker per endpoint, as a small state machine.
//!
//! - `Closed`: calls flow; consecutive failures are counted, a success resets the count.
//! - `Open`: after `eject_after` consecutive failures the endpoint is ejected: it reports
//!   "not ready", so the balancer sends nothing there, until the ejection ends. Each
//!   ejection in a row lasts twice the one before (up to `max_eject_for`), as Envoy does.
//! - `HalfOpen`: the ejection is over; one call probes the endpoint. Success closes the
//!   breaker, failure opens it again.
//!
//! A failure is a call answered `UNAVAILABLE`, or one that got no response at all. The
//! latter (connection refused or reset: the process is gone) ejects at once: fast
//! failures look like low latency to a latency-weighted balancer, which would otherwise
//! send it more calls, not fewer.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use meshwork_rpc::{metrics::RESILIENCE, status_in};
use tokio::time::{Instant, Sleep};
use tonic::Code;
use tower::Service;

/// When an endpoint is ejected, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct BreakerPolicy {
    /// Consecutive failures that eject an endpoint.
    pub eject_after: u32,
    /// The first ejection's length.
    pub eject_for: Duration,
    /// The longest ejection.
    pub max_eject_for: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, ejections: u32 },
    HalfOpen { probing: bool, ejections: u32 },
}

/// One endpoint behind its breaker.
pub struct Breaker<S> {
    inner: S,
    state: Arc<Mutex<State>>,
    policy: BreakerPolicy,
    endpoint: Arc<str>,
    wake_at: Option<Pin<Box<Sleep>>>,
}

impl<S> Breaker<S> {
    pub fn new(inner: S, policy: BreakerPolicy, endpoint: impl Into<Arc<str>>) -> Self {
        Self {
            inner,
            state: Arc::new(Mutex::new(State::Closed { failures: 0 })),
            policy,
            endpoint: endpoint.into(),
            wake_at: None,
        }
    }

    /// Not ready until `until`; the timer wakes the balancer then.
    fn wait_until(&mut self, until: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let sleep = self
            .wake_at
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        if sleep.deadline() != until {
            sleep.as_mut().reset(until);
        }
        sleep.as_mut().poll(cx)
    }
}

/// While a probe is out, others wait this long before asking again.
const PROBE_WAIT: Duration = Duration::from_millis(50);

impl<S, B> Service<Request<B>> for Breaker<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        loop {
            let state = *self.state.lock().expect("breaker lock is never poisoned");
            match state {
                State::Closed { .. } | State::HalfOpen { probing: false, .. } => break,
                State::Open { until, ejections } => {
                    if self.wait_until(until, cx).is_pending() {
                        return Poll::Pending;
                    }
                    *self.state.lock().expect("breaker lock is never poisoned") = State::HalfOpen {
                        probing: false,
                        ejections,
                    };
                }
                State::HalfOpen { probing: true, .. } => {
                    if self.wait_until(Instant::now() + PROBE_WAIT, cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
        self.wake_at = None;
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let is_probe = {
            let mut state = self.state.lock().expect("breaker lock is never poisoned");
            match *state {
                State::HalfOpen { ejections, .. } => {
                    *state = State::HalfOpen {
                        probing: true,
                        ejections,
                    };
                    true
                }
                _ => false,
            }
        };
        let call = self.inner.call(request);
        let mut pending = PendingCall {
            state: self.state.clone(),
            is_probe,
        };
        let policy = self.policy;
        let endpoint = self.endpoint.clone();
        Box::pin(async move {
            let result = call.await;
            let outcome = match &result {
                Ok(response) if status_in(response.headers()) == Some(Code::Unavailable) => Outcome::Failed,
                Ok(_) => Outcome::Answered,
                Err(_) => Outcome::Unreachable,
            };
            pending.is_probe = false;
            record(&pending.state, &policy, &endpoint, outcome);
            result
        })
    }
}

/// A call through the breaker that has not ended yet. A probe dropped before its answer (its
/// caller's deadline passed, or the caller went away) taught nothing: the endpoint is
/// half-open again, so the next call probes it, instead of staying "probing" for good.
struct PendingCall {
    state: Arc<Mutex<State>>,
    is_probe: bool,
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if !self.is_probe {
            return;
        }
        let mut state = self.state.lock().expect("breaker lock is never poisoned");
        if let State::HalfOpen {
            probing: true,
            ejections,
        } = *state
        {
            *state = State::HalfOpen {
                probing: false,
                ejections,
            };
        }
    }
}

/// How one call through an endpoint went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Any answer but `UNAVAILABLE`.
    Answered,
    /// `UNAVAILABLE`.
    Failed,
    /// No answer: the connection failed.
    Unreachable,
}

fn record(state: &Mutex<State>, policy: &BreakerPolicy, endpoint: &str, outcome: Outcome) {
    let mut state = state.lock().expect("breaker lock is never poisoned");
    let next = match (*state, outcome) {
        (State::Closed { .. }, Outcome::Answered) => State::Closed { failures: 0 },
        (State::HalfOpen { .. }, Outcome::Answered) => {
            tracing::info!(endpoint, "endpoint answers again; back in the balancer");
            RESILIENCE.ejected(endpoint, false);
            State::Closed { failures: 0 }
        }
        (State::Closed { failures }, Outcome::Failed) if failures + 1 < policy.eject_after => State::Closed {
            failures: failures + 1,
        },
        (State::Closed { .. }, _) => eject(policy, endpoint, 1),
        (State::HalfOpen { ejections, .. }, _) => eject(policy, endpoint, ejections + 1),
        // Calls that were in flight when the endpoint was ejected: nothing new to learn.
        (open @ State::Open { .. }, _) => open,
    };
    *state = next;
}

fn eject(policy: &BreakerPolicy, endpoint: &str, ejections: u32) -> State {
    let factor = 2u32.saturating_pow(ejections.saturating_sub(1).min(16));
    let length = policy.eject_for.saturating_mul(factor).min(policy.max_eject_for);
    tracing::warn!(endpoint, ?length, ejections, "endpoint keeps failing; ejected");
    RESILIENCE.ejected(endpoint, true);
    State::Open {
        until: Instant::now() + length,
        ejections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BreakerPolicy = BreakerPolicy {
        eject_after: 3,
        eject_for: Duration::from_secs(1),
        max_eject_for: Duration::from_secs(3),
    };

    #[tokio::test]
    async fn ejects_after_consecutive_failures_and_backs_off() {
        let state = Mutex::new(State::Closed { failures: 0 });
        record(&state, &POLICY, "e", Outcome::Failed);
        record(&state, &POLICY, "e", Outcome::Answered);
        record(&state, &POLICY, "e", Outcome::Failed);
        record(&state, &POLICY, "e", Outcome::Failed);
        assert_eq!(
            *state.lock().unwrap(),
            State::Closed { failures: 2 },
            "a success resets the count"
        );
        record(&state, &POLICY, "e", Outcome::Failed);
        let State::Open { until, ejections: 1 } = *state.lock().unwrap() else {
            panic!("ejected after three failures in a row")
        };
        assert!(until > Instant::now());

        *state.lock().unwrap() = State::HalfOpen {
            probing: true,
            ejections: 2,
        };
        record(&state, &POLICY, "e", Outcome::Failed);
        let State::Open { until, ejections: 3 } = *state.lock().unwrap() else {
            panic!("a failed probe ejects again")
        };
        assert!(
            until <= Instant::now() + POLICY.max_eject_for,
            "ejections are capped"
        );

        *state.lock().unwrap() = State::HalfOpen {
            probing: true,
            ejections: 3,
        };
        record(&state, &POLICY, "e", Outcome::Answered);
        assert_eq!(
            *state.lock().unwrap(),
            State::Closed { failures: 0 },
            "a good probe closes"
        );
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_ejected_at_once() {
        let state = Mutex::new(State::Closed { failures: 0 });
        record(&state, &POLICY, "e", Outcome::Unreachable);
        assert!(matches!(*state.lock().unwrap(), State::Open { ejections: 1, .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_cancelled_before_its_answer_lets_the_next_call_probe() {
        use tower::ServiceExt;

        // An endpoint that never answers.
        let silent = tower::service_fn(|_: Request<()>| {
            std::future::pending::<Result<Response<tonic::body::Body>, Code>>()
        });
        let mut breaker = Breaker::new(silent, POLICY, "e");
        *breaker.state.lock().unwrap() = State::HalfOpen {
            probing: false,
            ejections: 1,
        };
        let probe = breaker.ready().await.unwrap().call(Request::new(()));
        assert!(matches!(
            *breaker.state.lock().unwrap(),
            State::HalfOpen { probing: true, .. }
        ));

        // The probe's caller gives up (its deadline passed).
        drop(probe);
        assert_eq!(
            *breaker.state.lock().unwrap(),
            State::HalfOpen {
                probing: false,
                ejections: 1
            }
        );
        let next = tokio::time::timeout(Duration::from_secs(1), breaker.ready()).await;
        assert!(next.is_ok(), "the endpoint takes a new probe at once");
    }
}
