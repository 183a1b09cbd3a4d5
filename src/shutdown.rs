//! The shutdown signal: one `CancellationToken`, cancelled on SIGTERM or SIGINT.
//!
//! The server drains when it is cancelled, and every long-lived stream (WatchOrders) ends
//! on it, so a drain never waits on a stream that would run forever. Tests cancel the token
//! themselves, or send the real signal to a real process.

use tokio_util::sync::CancellationToken;

/// A token cancelled when the process receives SIGTERM or SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; draining");
        cancel.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).expect("installing a SIGTERM handler succeeds once per process");
    let mut interrupt =
        signal(SignalKind::interrupt()).expect("installing a SIGINT handler succeeds once per process");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
