//! A short-lived, single-flight cache for hot reads.
//!
//! When a herd asks the same question in the same instant, one caller fetches and
//! the others wait for its answer; the answer is then reused for `ttl`. Failed
//! fetches are not cached, so the next caller tries again. Staleness is bounded by
//! `ttl`, counted from before the fetch started.

use std::{collections::HashMap, hash::Hash, sync::Arc, sync::Mutex, time::Duration};

use tokio::{sync::OnceCell, time::Instant};

pub struct Flight<K, V> {
    ttl: Duration,
    /// Past this many keys, expired entries are dropped, so odd keys cannot grow it forever.
    max_entries: usize,
    entries: Mutex<HashMap<K, Arc<Slot<V>>>>,
}

struct Slot<V> {
    born: Instant,
    value: OnceCell<V>,
}

impl<K: Eq + Hash + Clone, V: Clone> Flight<K, V> {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Flight {
            ttl,
            max_entries,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached answer for `key`, or the one `fetch` gives, shared with every
    /// concurrent caller of the same key.
    pub async fn get_or_fetch<E, Fut>(&self, key: K, fetch: impl FnOnce() -> Fut) -> Result<V, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        let slot = self.slot(key);
        slot.value.get_or_try_init(fetch).await.cloned()
    }

    fn slot(&self, key: K) -> Arc<Slot<V>> {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("flight cache lock");
        if let Some(slot) = entries.get(&key)
            && now.duration_since(slot.born) < self.ttl
        {
            return slot.clone();
        }
        if entries.len() >= self.max_entries {
            entries.retain(|_, slot| now.duration_since(slot.born) < self.ttl);
        }
        let slot = Arc::new(Slot {
            born: now,
            value: OnceCell::new(),
        });
        if entries.len() < self.max_entries {
            entries.insert(key, slot.clone());
        }
        slot
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_fetch() {
        let flight = Arc::new(Flight::<u32, u32>::new(Duration::from_millis(100), 16));
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

    #[tokio::test(start_paused = true)]
    async fn answers_expire_after_ttl() {
        let flight = Flight::<u32, u32>::new(Duration::from_millis(100), 16);
        let first = flight.get_or_fetch(1, || async { Ok::<_, ()>(1) }).await;
        tokio::time::advance(Duration::from_millis(50)).await;
        let cached = flight.get_or_fetch(1, || async { Ok::<_, ()>(2) }).await;
        tokio::time::advance(Duration::from_millis(60)).await;
        let fresh = flight.get_or_fetch(1, || async { Ok::<_, ()>(3) }).await;
        assert_eq!((first, cached, fresh), (Ok(1), Ok(1), Ok(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_not_cached() {
        let flight = Flight::<u32, u32>::new(Duration::from_secs(10), 16);
        let failed = flight
            .get_or_fetch(1, || async { Err::<u32, _>("down") })
            .await;
        let retried = flight.get_or_fetch(1, || async { Ok::<_, &str>(5) }).await;
        assert_eq!((failed, retried), (Err("down"), Ok(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_map_stays_bounded() {
        let flight = Flight::<u32, u32>::new(Duration::from_secs(10), 4);
        for key in 0..100 {
            let got = flight
                .get_or_fetch(key, || async { Ok::<_, ()>(key) })
                .await;
            assert_eq!(got, Ok(key));
        }
        assert!(flight.entries.lock().unwrap().len() <= 4);
    }
}
