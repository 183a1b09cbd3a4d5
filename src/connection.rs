//! The life of one HTTP/2 connection on the server: served until the client closes it, the
//! server drains, or it has carried no call for `idle_timeout`. In the last two cases the
//! server sends GOAWAY (calls in flight finish) and the connection closes: an idle client
//! that went away without a word does not hold a connection, and its memory, forever.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use hyper_util::server::graceful::GracefulConnection;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Calls in flight on one connection, and when the last one ended. Each request of the
/// connection carries it in its extensions; the server's observe layer counts the call in
/// and out, whatever way the call ends (a reset stream included).
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
