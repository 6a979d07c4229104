//! Keeping a background worker alive: run its session, and after a failure
//! wait (doubling up to a cap) before the next one, until told to stop.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A session that lasted this long was healthy: the next failure starts the backoff over.
const HEALTHY: Duration = Duration::from_secs(30);

/// Runs `session` until it returns Ok or `stop` is cancelled.
pub async fn with_backoff<F, Fut>(name: &str, stop: &CancellationToken, mut session: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut backoff = FIRST_BACKOFF;
    while !stop.is_cancelled() {
        let started = Instant::now();
        match session().await {
            Ok(()) => return,
            Err(e) => {
                if started.elapsed() >= HEALTHY {
                    backoff = FIRST_BACKOFF;
                }
                tracing::warn!(error = format!("{e:#}"), ?backoff, "{name} session ended");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_with_growing_pauses_until_success() {
        let stop = CancellationToken::new();
        let attempts = AtomicU32::new(0);
        let started = Instant::now();
        with_backoff("test", &stop, || async {
            match attempts.fetch_add(1, Ordering::SeqCst) {
                0..=3 => anyhow::bail!("down"),
                _ => Ok(()),
            }
        })
        .await;
        assert_eq!(attempts.load(Ordering::SeqCst), 5);
        // 100 + 200 + 400 + 800 ms of pauses.
        assert_eq!(started.elapsed(), Duration::from_millis(1_500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_stop_ends_the_retries() {
        let stop = CancellationToken::new();
        stop.cancel();
        with_backoff("test", &stop, || async { anyhow::bail!("never runs") }).await;
    }
}
