//! The sweeper: releases holds whose time is up.
//!
//! It keeps, per event, when the event's first hold falls due (the head of its
//! `holds` sorted set, scored by expiry), and wakes when the earliest of those
//! has come: it runs `expire_hold.lua` on each due hold of that event (the seat
//! goes back to `available`, the booking becomes EXPIRED, and a `hold.expired`
//! event goes to the outbox for the writer), then reads the event's next due
//! time. A hold placed as its event's first to fall due is announced on the
//! activity channel, and every loaded event is looked at again every `scan`
//! (and after a lost notice), so a quiet catalogue costs a scan, not a visit
//! per event per round. A due hold is released within `interval` of its time
//! while notices flow, and within `scan` when one was lost.
//!
//! Every gateway runs one; the script expires a hold only while it is PENDING,
//! so each hold expires exactly once.

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use futures::{StreamExt, stream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::holds::{Activity, HOLD_RETENTION_MS, Store, StoreError};

/// Due holds taken per event per round.
const BATCH: u32 = 1_000;
/// Scripts in flight at once; fred pipelines them.
const CONCURRENCY: usize = 64;
/// Pause before subscribing again after Redis failed us.
const RETRY: Duration = Duration::from_secs(1);

pub struct Sweeper {
    store: Store,
    /// Due holds found together are released together, at most this late.
    interval: Duration,
    /// How often every loaded event's first due time is read again.
    scan: Duration,
}

/// When each event's first hold falls due, earliest first.
#[derive(Default)]
struct Deadlines {
    by_event: HashMap<i64, i64>,
    by_time: BTreeSet<(i64, i64)>,
}

impl Deadlines {
    fn set(&mut self, event_id: i64, due_ms: Option<i64>) {
        if let Some(old) = self.by_event.remove(&event_id) {
            self.by_time.remove(&(old, event_id));
        }
        if let Some(due_ms) = due_ms {
            self.by_event.insert(event_id, due_ms);
            self.by_time.insert((due_ms, event_id));
        }
    }

    /// The earliest due time, if any event has a hold.
    fn first(&self) -> Option<(i64, i64)> {
        self.by_time.first().copied()
    }
}

impl Sweeper {
    pub fn new(store: Store, interval: Duration, scan: Duration) -> Self {
        Sweeper {
            store,
            interval,
            scan,
        }
    }

    /// Sweeps until `stop` is cancelled; failures are logged and retried.
    pub async fn run(self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            if let Err(e) = self.session(&stop).await {
                tracing::warn!(error = %e, "sweeper failed; starting again");
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }

    async fn session(&self, stop: &CancellationToken) -> Result<(), StoreError> {
        let mut activity = self.store.watch_activity().await?;
        let mut deadlines = Deadlines::default();
        let mut next_scan = Instant::now();
        loop {
            if Instant::now() >= next_scan {
                next_scan = Instant::now() + self.scan;
                for (event_id, due_ms) in self.store.first_due_all().await? {
                    deadlines.set(event_id, due_ms);
                }
            }
            while let Some(notice) = activity.try_next() {
                self.heed(notice, &mut deadlines, &mut next_scan).await?;
            }
            let now_ms = chrono::Utc::now().timestamp_millis();
            while let Some((due_ms, event_id)) = deadlines.first().filter(|&(d, _)| d <= now_ms) {
                // One event's failure must not keep the others' holds from expiring.
                match self.sweep_event(event_id).await {
                    Ok(0) => {}
                    Ok(expired) => tracing::debug!(event_id, expired, "holds expired"),
                    Err(e) => tracing::warn!(event_id, error = %e, "sweeping an event failed"),
                }
                let next = self.store.first_due(event_id).await?;
                // The same head again (its sweep failed, or the script skipped it): a round later.
                let next = next.map(|n| if n == due_ms { n.max(now_ms + 1) } else { n });
                deadlines.set(event_id, next);
            }
            let wake = match deadlines.first() {
                Some((due_ms, _)) => {
                    let wait = Duration::from_millis((due_ms - now_ms).max(0) as u64);
                    // Wake no more often than `interval`: due holds go out together.
                    (Instant::now() + wait.max(self.interval)).min(next_scan)
                }
                None => next_scan,
            };
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                notice = activity.next() => self.heed(notice, &mut deadlines, &mut next_scan).await?,
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// An event with a new first deadline is read again; lost notices bring the scan forward.
    async fn heed(
        &self,
        notice: Activity,
        deadlines: &mut Deadlines,
        next_scan: &mut Instant,
    ) -> Result<(), StoreError> {
        match notice {
            Activity::Event(event_id) => {
                deadlines.set(event_id, self.store.first_due(event_id).await?)
            }
            Activity::Missed => *next_scan = Instant::now(),
        }
        Ok(())
    }

    /// One round over every loaded event; how many holds this call expired.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let mut expired = 0;
        for event_id in self.store.loaded_events().await? {
            // One event's failure must not keep the others' holds from expiring.
            match self.sweep_event(event_id).await {
                Ok(n) => expired += n,
                Err(e) => tracing::warn!(event_id, error = %e, "sweeping an event failed"),
            }
        }
        Ok(expired)
    }

    async fn sweep_event(&self, event_id: i64) -> Result<usize, StoreError> {
        let mut expired = 0;
        loop {
            let now_ms = chrono::Utc::now().timestamp_millis();
            let due = self.store.due_holds(event_id, now_ms, BATCH).await?;
            let retention_ms = HOLD_RETENTION_MS;
            let expiries: Vec<_> = due
                .iter()
                .map(|booking| self.store.expire_hold(event_id, booking, retention_ms))
                .collect();
            let results: Vec<Result<bool, StoreError>> = stream::iter(expiries)
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            let before = expired;
            for result in results {
                expired += usize::from(result?);
            }
            metrics::counter!(crate::metric::HOLDS, "outcome" => "expired")
                .increment((expired - before) as u64);
            if due.len() < BATCH as usize {
                return Ok(expired);
            }
        }
    }
}
