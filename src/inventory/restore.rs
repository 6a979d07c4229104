//! Putting the live bookings PostgreSQL knows back into a Redis that lost them:
//! all of an event's when it is rebuilt, and afterwards, for about a minute,
//! the ones the writer stored only after the rebuild. Those were relayed to
//! RabbitMQ before Redis lost its data and were still on their way to
//! PostgreSQL when the rebuild read it; without the catch-up their buyer would
//! hold a booking PostgreSQL calls PENDING on a seat Redis calls free.

use std::{collections::HashMap, sync::Arc, time::Duration};

use fred::{
    clients::{Client, Pipeline},
    interfaces::{HashesInterface, KeysInterface, PubsubInterface, SortedSetsInterface},
    types::{Expiration, SetOptions, Value},
};
use tokio_util::sync::CancellationToken;

use super::{Inventory, SEQ_GAP};
use crate::holds::EventKeys;

/// Restored bookings per pipeline (about five commands each).
const RESTORE_CHUNK: usize = 1_000;
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

/// A CONFIRMED or PENDING booking as PostgreSQL has it.
struct LiveBooking {
    id: String,
    seat: i64,
    user: i64,
    status: String,
    version: i64,
    seq: i64,
    expires_ms: i64,
    created_ms: i64,
    confirmed_ms: Option<i64>,
}

impl LiveBooking {
    fn pending(&self) -> bool {
        self.status == "PENDING"
    }

    /// A PENDING booking past its expiry: restored without a seat lock, as a
    /// hold the sweeper expires at once (its `hold.expired` died with Redis).
    fn due(&self, now_ms: i64) -> bool {
        self.pending() && self.expires_ms <= now_ms
    }

    /// Its seat lock's expiry: with the hold, or never once confirmed.
    fn lock_expiry(&self, now_ms: i64) -> Option<Expiration> {
        self.pending()
            .then(|| Expiration::PX(self.expires_ms - now_ms))
    }
}

impl Inventory {
    /// Every booking of `event_id` PostgreSQL has as CONFIRMED or PENDING, and
    /// the highest `seq` it stored for the event.
    async fn live_bookings(&self, event_id: i64) -> anyhow::Result<(i64, Vec<LiveBooking>)> {
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
    ) -> anyhow::Result<HashMap<i64, Vec<LiveBooking>>> {
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
        let mut by_event: HashMap<i64, Vec<LiveBooking>> = HashMap::new();
        for row in &rows {
            by_event.entry(row.get(0)).or_default().push(LiveBooking {
                id: row.get(1),
                seat: row.get(2),
                user: row.get(3),
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
        let keys = self.store.keys().event(event_id);
        let redis = self.store.client();
        let (max_seq, live) = self.live_bookings(event_id).await?;
        redis
            .set::<(), _, _>(keys.seq(), max_seq + SEQ_GAP, None, None, false)
            .await?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        // Pipelined: a rebuild under a herd must not wait one round-trip per command.
        for chunk in live.chunks(RESTORE_CHUNK) {
            let pipeline = redis.pipeline();
            for booking in chunk {
                if !booking.due(now_ms) {
                    pipeline
                        .set::<(), _, _>(
                            keys.lock(booking.seat),
                            booking.id.as_str(),
                            booking.lock_expiry(now_ms),
                            None,
                            false,
                        )
                        .await?;
                }
                queue_hold(&pipeline, &keys, booking).await?;
            }
            let _: Vec<Value> = pipeline.all().await?;
        }
        if !live.is_empty() {
            self.announce(event_id).await?;
            tracing::info!(
                event_id,
                holds = live.len(),
                due = live.iter().filter(|b| b.due(now_ms)).count(),
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
    async fn catch_up(&self, event_id: i64, live: Vec<LiveBooking>) -> anyhow::Result<usize> {
        let keys = self.store.keys().event(event_id);
        let redis = self.store.client();
        let mut restored = 0;
        for chunk in live.chunks(RESTORE_CHUNK) {
            let pipeline = redis.pipeline();
            for booking in chunk {
                pipeline
                    .hget::<(), _, _>(keys.hold(&booking.id), "status")
                    .await?;
            }
            let in_redis: Vec<Option<String>> = pipeline.all().await?;
            let mut missing = Vec::new();
            for (booking, status) in chunk.iter().zip(in_redis) {
                if status.is_none() {
                    missing.push(booking);
                } else if let (Some("PENDING"), Some(confirmed_ms)) =
                    (status.as_deref(), booking.confirmed_ms)
                {
                    // Restored PENDING, confirmed in PostgreSQL since (the
                    // script checks again, atomically, with the versions).
                    let confirmed = (booking.version, booking.seq, confirmed_ms);
                    if self
                        .store
                        .restore_confirm(&keys, &booking.id, booking.seat, booking.user, confirmed)
                        .await?
                    {
                        restored += 1;
                    }
                }
            }
            if missing.is_empty() {
                continue;
            }
            let now_ms = chrono::Utc::now().timestamp_millis();
            let pipeline = redis.pipeline();
            for booking in &missing {
                if booking.due(now_ms) {
                    // No lock to take: a free seat needs none, a taken one keeps its holder.
                    continue;
                }
                pipeline
                    .set::<(), _, _>(
                        keys.lock(booking.seat),
                        booking.id.as_str(),
                        booking.lock_expiry(now_ms),
                        Some(SetOptions::NX),
                        false,
                    )
                    .await?;
            }
            let mut locked: Vec<Option<String>> = pipeline.all().await?;
            locked.reverse();
            let pipeline = redis.pipeline();
            for booking in &missing {
                // Replies come in order, one per booking that is not due.
                let took = booking.due(now_ms) || locked.pop().flatten().is_some();
                if took {
                    queue_hold(&pipeline, &keys, booking).await?;
                    restored += 1;
                }
            }
            let _: Vec<Value> = pipeline.all().await?;
        }
        if restored > 0 {
            self.announce(event_id).await?;
            tracing::info!(
                event_id,
                restored,
                "restored bookings the writer stored after the rebuild"
            );
        }
        Ok(restored)
    }

    /// The sweeper learns of restored holds now, not at its next scan.
    async fn announce(&self, event_id: i64) -> anyhow::Result<()> {
        self.store
            .client()
            .publish::<(), _, _>(self.store.keys().activity(), event_id)
            .await?;
        Ok(())
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

/// Queues a restored hold's state, its place in `holds` and in the user's
/// holds, and takes its seat out of `available` (the seat lock is the caller's).
async fn queue_hold(
    pipeline: &Pipeline<Client>,
    keys: &EventKeys,
    booking: &LiveBooking,
) -> Result<(), fred::error::Error> {
    let id = booking.id.as_str();
    pipeline
        .hset::<(), _, _>(
            keys.hold(id),
            vec![
                ("bookingId", id.to_string()),
                ("seatId", booking.seat.to_string()),
                ("userId", booking.user.to_string()),
                ("status", booking.status.clone()),
                ("version", booking.version.to_string()),
                ("seq", booking.seq.to_string()),
                ("expiresAt", booking.expires_ms.to_string()),
                ("createdAt", booking.created_ms.to_string()),
                (
                    "confirmedAt",
                    booking
                        .confirmed_ms
                        .map_or(String::new(), |ms| ms.to_string()),
                ),
            ],
        )
        .await?;
    pipeline
        .zrem::<(), _, _>(keys.available(), booking.seat)
        .await?;
    if booking.pending() {
        let entry = (booking.expires_ms as f64, id);
        pipeline
            .zadd::<(), _, _>(keys.holds(), None, None, false, false, entry)
            .await?;
        pipeline
            .zadd::<(), _, _>(
                keys.user_holds(booking.user),
                None,
                None,
                false,
                false,
                entry,
            )
            .await?;
    }
    Ok(())
}
