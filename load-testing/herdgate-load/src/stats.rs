//! What a run measures: answers by status, transport failures, the booking ids
//! of every 201, and latency in an HDR histogram. Workers record into a few
//! shards (one histogram per worker would cost gigabytes for a 10,000-user
//! herd); reports merge the shards.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, 1 µs to 5 minutes, to 3 significant digits.
const LATENCY_MAX_US: u64 = 300_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;
/// Status codes are counted in an array indexed by the code.
const STATUSES: usize = 600;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, SIGNIFICANT_DIGITS)
        .expect("the histogram bounds are valid")
}

/// True for answers that mean something went wrong: a transport failure, a
/// 5xx, or a 4xx other than 409 (taken) and 429 (limit), which are correct answers.
pub fn is_error(status: Option<u16>) -> bool {
    match status {
        None => true,
        Some(409 | 429) => false,
        Some(s) => s >= 400,
    }
}

struct Shard {
    latency: Histogram<u64>,
    created: Vec<String>,
}

pub struct Recorder {
    shards: Box<[Mutex<Shard>]>,
    statuses: Box<[AtomicU64]>,
    /// Requests that got no answer: refused or broken connections, timeouts.
    failures: AtomicU64,
}

impl Recorder {
    pub fn new(shards: usize) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| {
                Mutex::new(Shard {
                    latency: new_histogram(),
                    created: Vec::new(),
                })
            })
            .collect();
        Recorder {
            shards,
            statuses: (0..STATUSES).map(|_| AtomicU64::new(0)).collect(),
            failures: AtomicU64::new(0),
        }
    }

    /// Records one request; `status` is `None` when no answer came. `created`
    /// is the booking id of a 201.
    pub fn record(
        &self,
        worker: usize,
        status: Option<u16>,
        latency: Duration,
        created: Option<String>,
    ) {
        match status.filter(|&s| (s as usize) < STATUSES) {
            Some(s) => self.statuses[s as usize].fetch_add(1, Ordering::Relaxed),
            None => self.failures.fetch_add(1, Ordering::Relaxed),
        };
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let mut shard = self.shard(worker);
        shard.latency.saturating_record(micros.max(1));
        if let Some(id) = created {
            shard.created.push(id);
        }
    }

    fn shard(&self, worker: usize) -> std::sync::MutexGuard<'_, Shard> {
        let shard = &self.shards[worker % self.shards.len()];
        // A worker that panicked mid-record leaves a usable histogram behind.
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything so far, the shards merged.
    pub fn snapshot(&self) -> Snapshot {
        let mut latency = new_histogram();
        for i in 0..self.shards.len() {
            latency
                .add(&self.shard(i).latency)
                .expect("shards share their bounds");
        }
        let statuses: BTreeMap<u16, u64> = self
            .statuses
            .iter()
            .enumerate()
            .filter_map(|(code, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then_some((code as u16, n))
            })
            .collect();
        // Totals are counted from the statuses, so they can never disagree with them.
        let failures = self.failures.load(Ordering::Relaxed);
        let answered = |keep: fn(u16) -> bool| -> u64 {
            statuses
                .iter()
                .filter(|&(&c, _)| keep(c))
                .map(|(_, n)| n)
                .sum()
        };
        let errors = failures + answered(|code| is_error(Some(code)));
        Snapshot {
            requests: failures + answered(|_| true),
            errors,
            failures,
            statuses,
            latency,
        }
    }

    /// The booking ids of every 201, in no particular order.
    pub fn created(&self) -> Vec<String> {
        (0..self.shards.len())
            .flat_map(|i| self.shard(i).created.clone())
            .collect()
    }
}

pub struct Snapshot {
    pub requests: u64,
    pub errors: u64,
    pub failures: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub latency: Histogram<u64>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1_000.0;
        if histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1_000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_shards_give_the_percentiles_of_one_histogram() {
        let recorder = Recorder::new(4);
        let mut single = new_histogram();
        for i in 1..=10_000u64 {
            recorder.record(i as usize, Some(201), Duration::from_micros(i), None);
            single.record(i).unwrap();
        }
        let snapshot = recorder.snapshot();
        assert_eq!(snapshot.latency.len(), 10_000);
        assert_eq!(Percentiles::of(&snapshot.latency), Percentiles::of(&single));
        let p = Percentiles::of(&single);
        assert!((p.p50 - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.p99 - 9.9).abs() < 0.01, "{p:?}");
        assert!((p.max - 10.0).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn outcomes_are_counted_by_status_and_errors_apart() {
        let recorder = Recorder::new(2);
        let ms = Duration::from_millis(1);
        for status in [Some(201), Some(409), Some(409), Some(429), Some(503), None] {
            recorder.record(0, status, ms, None);
        }
        recorder.record(1, Some(201), ms, Some("b-1".into()));
        let snapshot = recorder.snapshot();
        assert_eq!(snapshot.requests, 7);
        assert_eq!(
            snapshot.statuses,
            BTreeMap::from([(201, 2), (409, 2), (429, 1), (503, 1)])
        );
        assert_eq!((snapshot.failures, snapshot.errors), (1, 2));
        assert_eq!(recorder.created(), ["b-1"]);
    }

    #[test]
    fn only_failures_5xx_and_unexpected_4xx_are_errors() {
        for ok in [Some(200), Some(201), Some(409), Some(429)] {
            assert!(!is_error(ok), "{ok:?}");
        }
        for bad in [
            None,
            Some(400),
            Some(401),
            Some(404),
            Some(422),
            Some(500),
            Some(503),
        ] {
            assert!(is_error(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_latency_past_the_top_is_kept_at_the_top() {
        let recorder = Recorder::new(1);
        recorder.record(0, Some(200), Duration::from_secs(3_600), None);
        recorder.record(0, Some(200), Duration::ZERO, None);
        let latency = recorder.snapshot().latency;
        assert_eq!(latency.len(), 2);
        assert!(latency.max() >= LATENCY_MAX_US * 999 / 1000);
        assert_eq!(latency.min(), 1);
    }
}
