//! Files that are read again while the process runs (certificates, a JWKS): a task per
//! watched thing looks every [`RELOAD_INTERVAL`]. Polling, not file-change notifications:
//! Kubernetes rotates a mounted Secret by swapping a symlink, which a watch on the file
//! itself never sees, and a read of two small files a second costs nothing.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

/// How often watched files are read again: well within the 10 s the contract allows for a
/// rotated certificate to reach new handshakes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Calls `reload(&target)` every [`RELOAD_INTERVAL`] until `stop` is cancelled or nothing
/// else holds `target` any more.
pub fn every_interval<T: Send + Sync + 'static>(target: &Arc<T>, stop: CancellationToken, reload: fn(&T)) {
    let target: Weak<T> = Arc::downgrade(target);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(RELOAD_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let Some(target) = target.upgrade() else { return };
            // File reads are blocking; they are tiny, but keep them off the async workers.
            let done = tokio::task::spawn_blocking(move || reload(&target)).await;
            if done.is_err() {
                tracing::error!("a file reload panicked");
            }
        }
    });
}
