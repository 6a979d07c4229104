//! The stop signal: SIGINT (Ctrl-C) or SIGTERM. Runners take any future as their
//! stop signal, so tests stop them without sending signals.

use tokio::signal::unix::{self, SignalKind};

/// Resolves on the first SIGINT or SIGTERM.
pub async fn signal() {
    let mut term = unix::signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = unix::signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, draining"),
        _ = int.recv() => tracing::info!("SIGINT received, draining"),
    }
}
