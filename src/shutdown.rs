//! The stop signal: SIGINT (Ctrl-C) or SIGTERM. Runners take any future as their
//! stop signal, so tests stop them without sending signals.

use tokio::signal::unix::{self, SignalKind};

/// Installs the handlers now and resolves on the first SIGINT or SIGTERM.
///
/// Call it first thing: a signal that arrives before the handlers exist kills
/// the process instead of draining it.
pub fn signal() -> impl Future<Output = ()> {
    let mut term = unix::signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = unix::signal(SignalKind::interrupt()).expect("install SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, draining"),
            _ = int.recv() => tracing::info!("SIGINT received, draining"),
        }
    }
}
