//! A short-lived, single-flight, bounded cache for hot reads.
//!
//! When a herd asks the same question in the same instant, one caller fetches and
//! the others wait for its answer; the answer is then reused for `ttl`. Failed
//! fetches are not cached, so the next caller tries again. Staleness is bounded by
//! `ttl` plus one fetch.
//!
//! The cache holds at most `max_bytes` by the entries' own [`Weigh`]t: a client
//! asking for many distinct keys (every `after` of a 5,000-seat page) evicts the
//! least used answers instead of growing the process. moka does the bookkeeping.

use std::{hash::Hash, sync::Arc, time::Duration};

use moka::future::Cache;

/// Roughly how many bytes a cached answer keeps alive.
pub trait Weigh {
    fn weight(&self) -> usize;
}

pub struct Flight<K, V> {
    entries: Cache<K, V>,
}

impl<K, V> Flight<K, V>
where
    K: Eq + Hash + Send + Sync + 'static,
    V: Clone + Weigh + Send + Sync + 'static,
{
    pub fn new(ttl: Duration, max_bytes: u64) -> Self {
        let entries = Cache::builder()
            .time_to_live(ttl)
            .max_capacity(max_bytes)
            .weigher(|key: &K, value: &V| {
                let size = std::mem::size_of_val(key) + value.weight();
                u32::try_from(size).unwrap_or(u32::MAX)
            })
            .build();
        Flight { entries }
    }

    /// The cached answer for `key`, or the one `fetch` gives, shared with every
    /// concurrent caller of the same key. A failure reaches every caller that
    /// waited for it, shared.
    pub async fn get_or_fetch<E, Fut>(
        &self,
        key: K,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<V, Arc<E>>
    where
        Fut: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        self.entries.try_get_with(key, fetch()).await
    }

    /// The bytes held now, after pending evictions are applied.
    pub async fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    impl Weigh for u32 {
        fn weight(&self) -> usize {
            1_000
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let flight = Arc::new(Flight::<u32, u32>::new(Duration::from_secs(10), 1 << 20));
        let fetches = Arc::new(AtomicUsize::new(0));
        let callers = (0..50).map(|_| {
            let (flight, fetches) = (flight.clone(), fetches.clone());
            tokio::spawn(async move {
                flight
                    .get_or_fetch(1, || async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        Ok::<_, ()>(7)
                    })
                    .await
            })
        });
        for caller in futures::future::join_all(callers).await {
            assert_eq!(caller.unwrap(), Ok(7));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn answers_expire_after_ttl() {
        // moka keeps its own clock, so this one runs in real time.
        let flight = Flight::<u32, u32>::new(Duration::from_millis(500), 1 << 20);
        let first = flight.get_or_fetch(1, || async { Ok::<_, ()>(1) }).await;
        let cached = flight.get_or_fetch(1, || async { Ok::<_, ()>(2) }).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        let fresh = flight.get_or_fetch(1, || async { Ok::<_, ()>(3) }).await;
        assert_eq!((first, cached, fresh), (Ok(1), Ok(1), Ok(3)));
    }

    #[tokio::test]
    async fn failures_are_not_cached() {
        let flight = Flight::<u32, u32>::new(Duration::from_secs(10), 1 << 20);
        let failed = flight
            .get_or_fetch(1, || async { Err::<u32, _>("down") })
            .await;
        let retried = flight.get_or_fetch(1, || async { Ok::<_, &str>(5) }).await;
        assert_eq!(failed.map_err(|e| *e), Err("down"));
        assert_eq!(retried.map_err(|e| *e), Ok(5));
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_bytes() {
        let flight = Flight::<u32, u32>::new(Duration::from_secs(10), 4_100);
        for key in 0..100 {
            let got = flight
                .get_or_fetch(key, || async { Ok::<_, ()>(key) })
                .await;
            assert_eq!(got, Ok(key));
        }
        assert!(flight.weighted_size().await <= 4_100);
    }
}
