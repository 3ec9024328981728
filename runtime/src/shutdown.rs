//! Shutdown is one token: SIGTERM and SIGINT both cancel it, and every task selects on it.

use tokio_util::sync::CancellationToken;

/// Returns a token that is cancelled on the first SIGTERM or SIGINT. A second signal exits
/// the process at once, for the operator whose graceful shutdown is stuck.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!(message = "Cannot install signal handlers; shutdown only by kill -9.");
            return;
        };
        for n in 0..2 {
            tokio::select! {
                _ = term.recv() => tracing::info!(message = "SIGTERM received.", signal = "SIGTERM"),
                _ = int.recv() => tracing::info!(message = "SIGINT received.", signal = "SIGINT"),
            }
            if n == 0 {
                t.cancel();
            } else {
                tracing::warn!(message = "Second signal: exiting without waiting.");
                std::process::exit(130);
            }
        }
    });
    token
}
