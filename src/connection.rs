//! The life of one HTTP/2 connection on the server: served until the client closes it, the
//! server drains, or it has carried no call for `idle_timeout`. In the last two cases the
//! server sends GOAWAY (calls in flight finish) and the connection closes: an idle client
//! that went away without a word does not hold a connection, and its memory, forever.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use hyper_util::server::graceful::GracefulConnection;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::{layers::trace::OnEnd, rpc::OnCallEnd};

/// Calls in flight on one connection, and when the last one ended.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    last_active: Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last_active: Mutex::new(Instant::now()),
        }
    }
}

impl Activity {
    pub fn call_started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    pub fn call_ended(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        *self.last_active.lock().expect("never poisoned") = Instant::now();
    }

    /// Returns once no call has been in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let since = *self.last_active.lock().expect("never poisoned");
            let idle_until = since + limit;
            if self.in_flight.load(Ordering::SeqCst) == 0 && Instant::now() >= idle_until {
                return;
            }
            // Busy or not idle long enough yet: look again when it could first be true.
            tokio::time::sleep_until(idle_until.max(Instant::now() + limit / 4)).await;
        }
    }
}

/// Counts the calls of one connection into its [`Activity`], from request to the end of the
/// response body.
#[derive(Clone)]
pub struct CountCalls<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> CountCalls<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CountCalls<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<OnCallEnd<ResBody, OnEnd>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        self.activity.call_started();
        let activity = self.activity.clone();
        let call = self.inner.call(request);
        Box::pin(async move {
            let ended: OnEnd = Box::new(move |_| activity.call_ended());
            // An error drops `ended` unrun: count the call's end here instead.
            match call.await {
                Ok(response) => Ok(response.map(|body| OnCallEnd::new(body, ended))),
                Err(error) => {
                    ended(tonic::Code::Unknown);
                    Err(error)
                }
            }
        })
    }
}

/// Serves `connection` to its end, shutting it down gracefully on `shutdown` or when idle.
pub async fn serve<C>(
    connection: C,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    shutdown: CancellationToken,
) where
    C: GracefulConnection,
{
    let mut connection = std::pin::pin!(connection);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            () = shutdown.cancelled(), if !closing => {}
            () = activity.idle_for(idle_timeout), if !closing => {}
        }
        connection.as_mut().graceful_shutdown();
        closing = true;
    }
}
