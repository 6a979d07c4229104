//! The sweeper: releases holds whose time is up.
//!
//! Every `interval` it takes each loaded event's due holds (the `holds` sorted
//! set, scored by expiry) and runs `expire_hold.lua` on each: the seat goes back
//! to `available`, the booking becomes EXPIRED, and a `hold.expired` event goes
//! to the outbox for the writer. Every gateway runs one; the script expires a
//! hold only while it is PENDING, so each hold expires exactly once.

use std::time::Duration;

use fred::interfaces::SetsInterface;
use futures::{StreamExt, stream};
use tokio_util::sync::CancellationToken;

use crate::holds::{HOLD_RETENTION_MS, Store, StoreError};

/// Due holds taken per event per round.
const BATCH: u32 = 1_000;
/// Scripts in flight at once; fred pipelines them.
const CONCURRENCY: usize = 64;

pub struct Sweeper {
    store: Store,
    interval: Duration,
}

impl Sweeper {
    pub fn new(store: Store, interval: Duration) -> Self {
        Sweeper { store, interval }
    }

    /// Sweeps every `interval` until `stop` is cancelled; failures are logged and retried.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            match self.sweep().await {
                Ok(0) => {}
                Ok(expired) => tracing::debug!(expired, "holds expired"),
                Err(e) => tracing::warn!(error = %e, "sweep failed"),
            }
        }
    }

    /// One round over every loaded event; how many holds this call expired.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let events: Vec<i64> = self
            .store
            .client()
            .smembers(self.store.keys().outboxes())
            .await?;
        let mut expired = 0;
        for event_id in events {
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
                .map(|booking| {
                    self.store
                        .expire_hold(event_id, booking, now_ms, retention_ms)
                })
                .collect();
            let results: Vec<Result<bool, StoreError>> = stream::iter(expiries)
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            let before = expired;
            for result in results {
                expired += usize::from(result?);
            }
            metrics::counter!(crate::prometheus::HOLDS, "outcome" => "expired")
                .increment((expired - before) as u64);
            if due.len() < BATCH as usize {
                return Ok(expired);
            }
        }
    }
}
