//! Putting the live bookings PostgreSQL knows back into a Redis that lost them:
//! all of an event's when it is rebuilt, and afterwards, for about a minute,
//! the ones the writer stored only after the rebuild. Those were relayed to
//! RabbitMQ before Redis lost its data and were still on their way to
//! PostgreSQL when the rebuild read it; without the catch-up their buyer would
//! hold a booking PostgreSQL calls PENDING on a seat Redis calls free.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{Inventory, SEQ_GAP};
use crate::{holds::RestoredHold, status::BookingStatus};
/// After a rebuild, bookings PostgreSQL gained since are looked for when the
/// rebuild is this old: the writer's lag after a data loss is usually well
/// under a second, and a minute covers a writer that was restarting.
pub const CATCH_UP_AT: [Duration; 7] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(32),
    Duration::from_secs(64),
];
/// How often the catch-up schedule is looked at.
const CATCH_UP_TICK: Duration = Duration::from_millis(250);

impl Inventory {
    /// Every booking of `event_id` PostgreSQL has as CONFIRMED or PENDING, and
    /// the highest `seq` it stored for the event.
    async fn live_bookings(&self, event_id: i64) -> anyhow::Result<(i64, Vec<RestoredHold>)> {
        let client = self.pg.get().await?;
        let max_seq: i64 = client
            .query_one(
                "SELECT coalesce(max(seq), 0) FROM bookings WHERE event_id = $1",
                &[&event_id],
            )
            .await?
            .get(0);
        drop(client);
        let live = self
            .live_bookings_of(&[event_id])
            .await?
            .remove(&event_id)
            .unwrap_or_default();
        Ok((max_seq, live))
    }

    /// The CONFIRMED and PENDING bookings of every event in `event_ids`, by
    /// event, in one query: catch-ups for a whole catalogue loaded at start
    /// must not cost PostgreSQL a scan per event.
    async fn live_bookings_of(
        &self,
        event_ids: &[i64],
    ) -> anyhow::Result<HashMap<i64, Vec<RestoredHold>>> {
        let client = self.pg.get().await?;
        let rows = client
            .query(
                "SELECT event_id, id::text, seat_id, user_id, status, version, seq,
                        (extract(epoch FROM expires_at) * 1000)::bigint AS expires_ms,
                        (extract(epoch FROM created_at) * 1000)::bigint AS created_ms,
                        (extract(epoch FROM confirmed_at) * 1000)::bigint AS confirmed_ms
                   FROM bookings
                  WHERE event_id = ANY($1)
                    AND status IN ('CONFIRMED', 'PENDING')",
                &[&event_ids],
            )
            .await?;
        let mut by_event: HashMap<i64, Vec<RestoredHold>> = HashMap::new();
        for row in &rows {
            by_event.entry(row.get(0)).or_default().push(RestoredHold {
                booking_id: row.get(1),
                seat_id: row.get(2),
                user_id: row.get(3),
                status: row.get(4),
                version: row.get(5),
                seq: row.get(6),
                expires_ms: row.get(7),
                created_ms: row.get(8),
                confirmed_ms: row.get(9),
            });
        }
        Ok(by_event)
    }

    /// Puts the live bookings PostgreSQL knows back into Redis: their seat locks
    /// (expiring with the hold, or never once confirmed), hold state and user
    /// counts, and moves the change counter past every stored `seq`, so the
    /// writer keeps ordering new holds after old ones.
    ///
    /// A PENDING booking already past its expiry is restored too, without a seat
    /// lock, as a hold that is due: its final event died with the Redis that lost
    /// its data, and the sweeper now expires it (seat back in `available`,
    /// `hold.expired` relayed, the row EXPIRED and the seat AVAILABLE in
    /// PostgreSQL) instead of it staying PENDING there for good.
    pub(super) async fn restore_holds(&self, event_id: i64) -> anyhow::Result<()> {
        let (max_seq, live) = self.live_bookings(event_id).await?;
        self.store.set_seq(event_id, max_seq + SEQ_GAP).await?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        self.store.restore_holds(event_id, &live, now_ms).await?;
        if !live.is_empty() {
            self.store.announce_activity(event_id).await?;
            tracing::info!(
                event_id,
                holds = live.len(),
                due = live.iter().filter(|b| b.is_due(now_ms)).count(),
                max_seq,
                "restored live bookings into Redis"
            );
        }
        Ok(())
    }

    /// Restores the live bookings PostgreSQL has that Redis has no hold of (the
    /// writer stored them after the rebuild), each only while its seat is free:
    /// a seat someone else took since keeps its new holder, and the writer ends
    /// the older booking (lower `seq`). A booking Redis restored PENDING and
    /// PostgreSQL has CONFIRMED since (its confirm was on its way) is confirmed
    /// in Redis too, so its seat is not freed at the hold's expiry. How many
    /// were restored or confirmed.
    async fn catch_up(&self, event_id: i64, live: Vec<RestoredHold>) -> anyhow::Result<usize> {
        let ids: Vec<&str> = live.iter().map(|b| b.booking_id.as_str()).collect();
        let in_redis = self.store.hold_statuses(event_id, &ids).await?;
        let mut restored = 0;
        let mut missing = Vec::new();
        for (booking, status) in live.iter().zip(in_redis) {
            match status {
                None => missing.push(booking),
                // Restored PENDING, confirmed in PostgreSQL since (the script
                // checks again, atomically, with the versions).
                Some(BookingStatus::Pending) if booking.confirmed_ms.is_some() => {
                    if self.store.restore_confirm(event_id, booking).await? {
                        restored += 1;
                    }
                }
                Some(_) => {}
            }
        }
        if !missing.is_empty() {
            let now_ms = chrono::Utc::now().timestamp_millis();
            restored += self
                .store
                .restore_holds_on_free_seats(event_id, &missing, now_ms)
                .await?;
        }
        if restored > 0 {
            self.store.announce_activity(event_id).await?;
            tracing::info!(
                event_id,
                restored,
                "restored bookings the writer stored after the rebuild"
            );
        }
        Ok(restored)
    }

    /// Runs each rebuilt event's catch-ups on schedule until `stop` is cancelled.
    pub(super) async fn catch_up_loop(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(CATCH_UP_TICK) => {}
            }
            let due: Vec<i64> = {
                let mut rebuilt = self.rebuilt.lock().expect("inventory lock");
                rebuilt.retain(|_, (_, done)| *done < CATCH_UP_AT.len());
                rebuilt
                    .iter_mut()
                    .filter(|(_, (at, done))| at.elapsed() >= CATCH_UP_AT[*done])
                    .map(|(&id, (_, done))| {
                        *done += 1;
                        id
                    })
                    .collect()
            };
            if due.is_empty() {
                continue;
            }
            let live = match self.live_bookings_of(&due).await {
                Ok(live) => live,
                Err(e) => {
                    tracing::warn!(
                        events = due.len(),
                        error = format!("{e:#}"),
                        "catch-up failed"
                    );
                    continue;
                }
            };
            // Only events with live bookings have anything to restore.
            for (event_id, live) in live {
                if let Err(e) = self.catch_up(event_id, live).await {
                    tracing::warn!(event_id, error = format!("{e:#}"), "catch-up failed");
                }
            }
        }
    }
}
