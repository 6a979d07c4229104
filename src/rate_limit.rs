//! Rate limits on work a client can make the server do (login: an argon2 check
//! and a PostgreSQL query per attempt): at most `limit` counted attempts per key
//! in a fixed window, after which the key gets 429 until its window ends.
//!
//! Counters live in this process, in a moka cache bounded by entries, so a client
//! inventing keys evicts old counters instead of growing memory. With several
//! gateways each counts on its own: the limit a client meets is per gateway.

use std::{
    hash::Hash,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use moka::future::Cache;

/// Keys remembered at most, per limit.
const MAX_KEYS: u64 = 100_000;

pub struct RateLimit<K> {
    limit: u32,
    window: Duration,
    windows: Cache<K, Arc<Window>>,
}

struct Window {
    started: Instant,
    count: AtomicU32,
}

impl<K: Hash + Eq + Send + Sync + 'static> RateLimit<K> {
    pub fn new(limit: u32, window: Duration) -> Self {
        RateLimit {
            limit,
            window,
            // A window ends when its entry expires: the next attempt opens a new one.
            windows: Cache::builder()
                .max_capacity(MAX_KEYS)
                .time_to_live(window)
                .build(),
        }
    }

    async fn window(&self, key: K) -> Arc<Window> {
        self.windows
            .get_with(key, async {
                Arc::new(Window {
                    started: Instant::now(),
                    count: AtomicU32::new(0),
                })
            })
            .await
    }

    /// Counts one attempt; `Err(retry after)` when the key is over its limit.
    pub async fn hit(&self, key: K) -> Result<(), Duration> {
        let window = self.window(key).await;
        let count = window.count.fetch_add(1, Ordering::Relaxed) + 1;
        self.verdict(&window, count)
    }

    /// Whether `key` may try now, without counting (see [`RateLimit::count`]).
    pub async fn check(&self, key: K) -> Result<(), Duration> {
        let window = self.window(key).await;
        let count = window.count.load(Ordering::Relaxed) + 1;
        self.verdict(&window, count)
    }

    /// Counts an attempt checked before (a failed login, say).
    pub async fn count(&self, key: K) {
        self.window(key).await.count.fetch_add(1, Ordering::Relaxed);
    }

    fn verdict(&self, window: &Window, count: u32) -> Result<(), Duration> {
        if count <= self.limit {
            return Ok(());
        }
        Err(self.window.saturating_sub(window.started.elapsed()))
    }
}

/// Whole seconds for `Retry-After`, at least one.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_over_its_limit_waits_for_its_window() {
        let limit = RateLimit::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(limit.hit("a").await.is_ok());
        }
        let wait = limit.hit("a").await.unwrap_err();
        assert!(wait > Duration::from_secs(55) && wait <= Duration::from_secs(60));
        assert!(limit.hit("b").await.is_ok(), "other keys are not limited");
    }

    #[tokio::test]
    async fn only_counted_attempts_use_the_limit() {
        let limit = RateLimit::new(2, Duration::from_secs(60));
        for _ in 0..5 {
            assert!(limit.check("a").await.is_ok());
        }
        limit.count("a").await;
        limit.count("a").await;
        assert!(limit.check("a").await.is_err());
    }

    #[tokio::test]
    async fn a_window_ends() {
        let limit = RateLimit::new(1, Duration::from_millis(200));
        assert!(limit.hit("a").await.is_ok());
        assert!(limit.hit("a").await.is_err());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(limit.hit("a").await.is_ok());
    }
}
