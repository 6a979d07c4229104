//! Writing an event's inventory into Redis: its seats, its event hash (last,
//! so its presence means the inventory is complete), the loading lock, and
//! the live bookings PostgreSQL knows put back as holds after Redis lost them.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use fred::{
    clients::{Client, Pipeline},
    interfaces::{HashesInterface, KeysInterface, SortedSetsInterface},
    types::{Expiration, SetOptions, Value},
};

use super::{
    EventKeys, Store, StoreError,
    keys::{event_field, hold_field},
    status_field,
};
use crate::status::{BookingStatus, EventStatus};

/// Seats written per command while loading.
const SEAT_CHUNK: usize = 5_000;
/// Restored holds per pipeline (about five commands each): a rebuild under a
/// herd must not wait one round-trip per command.
const RESTORE_CHUNK: usize = 1_000;

/// A seat as the loader reads it from PostgreSQL.
#[derive(Debug, Clone)]
pub struct SeatEntry<'a> {
    pub id: i64,
    pub section: &'a str,
    pub row: &'a str,
    pub number: i32,
    /// Nobody holds it: it goes into `available`.
    pub available: bool,
}

/// An event as the loader writes it into its event hash.
#[derive(Debug, Clone)]
pub struct EventEntry<'a> {
    pub name: &'a str,
    pub venue: &'a str,
    pub starts_at: DateTime<Utc>,
    pub total_seats: usize,
    pub status: EventStatus,
    /// Buyers need admission through the waiting room, whose sessions idle out
    /// after this long (ms); `None`: no waiting room.
    pub admission_idle_ms: Option<i64>,
}

/// A CONFIRMED or PENDING booking PostgreSQL has, to be put back into Redis
/// as the hold it was.
#[derive(Debug, Clone)]
pub struct RestoredHold {
    pub booking_id: String,
    pub seat_id: i64,
    pub user_id: i64,
    pub status: BookingStatus,
    pub version: i64,
    pub seq: i64,
    pub expires_ms: i64,
    pub created_ms: i64,
    pub confirmed_ms: Option<i64>,
}

impl RestoredHold {
    pub fn is_pending(&self) -> bool {
        self.status == BookingStatus::Pending
    }

    /// A PENDING booking past its expiry: restored without a seat lock, as a
    /// hold the sweeper expires at once (its `hold.expired` died with Redis).
    pub fn is_due(&self, now_ms: i64) -> bool {
        self.is_pending() && self.expires_ms <= now_ms
    }

    /// Its seat lock's expiry: with the hold, or never once confirmed.
    fn lock_expiry(&self, now_ms: i64) -> Option<Expiration> {
        self.is_pending()
            .then(|| Expiration::PX(self.expires_ms - now_ms))
    }
}

impl Store {
    /// Whether the event's inventory is in Redis (its event hash is).
    pub async fn is_loaded(&self, event_id: i64) -> Result<bool, StoreError> {
        let event = self.keys.event(event_id).event();
        let exists = |c: Client| {
            let event = event.clone();
            async move { c.exists::<u32, _>(event).await }
        };
        Ok(self.on_master_of_waiting(&event, exists).await? == 1)
    }

    /// Takes the event's loading lock for `ttl` (so a loader that died keeps
    /// others out only that long) unless another process holds it.
    pub async fn lock_loading(
        &self,
        event_id: i64,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let k = self.keys.event(event_id);
        let locked: Option<String> = self
            .client()
            .set(
                k.loading(),
                token,
                Some(Expiration::PX(ttl.as_millis() as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        Ok(locked.is_some())
    }

    /// Releases the loading lock while it is still `token`'s; true when released.
    pub async fn unlock_loading(&self, event_id: i64, token: &str) -> Result<bool, StoreError> {
        self.release_lock(self.keys.event(event_id).loading(), token)
            .await
    }

    /// Deletes the seats a loader that died half-way left behind.
    pub async fn clear_seats(&self, event_id: i64) -> Result<(), StoreError> {
        let k = self.keys.event(event_id);
        Ok(self
            .client()
            .del::<(), _>(vec![k.seats(), k.available()])
            .await?)
    }

    /// Adds seats to the event (each seat's JSON, served as it is by
    /// `list_available.lua`), the available ones to `available`.
    pub async fn add_seats(
        &self,
        event_id: i64,
        seats: &[SeatEntry<'_>],
    ) -> Result<(), StoreError> {
        let k = self.keys.event(event_id);
        for chunk in seats.chunks(SEAT_CHUNK) {
            let json: Vec<(String, String)> = chunk
                .iter()
                .map(|seat| {
                    let object = serde_json::json!({
                        "id": seat.id,
                        "section": seat.section,
                        "row": seat.row,
                        "number": seat.number,
                    });
                    (seat.id.to_string(), object.to_string())
                })
                .collect();
            self.client().hset::<(), _, _>(k.seats(), json).await?;
            let free: Vec<(f64, i64)> = chunk
                .iter()
                .filter(|seat| seat.available)
                .map(|seat| (seat.id as f64, seat.id))
                .collect();
            if !free.is_empty() {
                self.client()
                    .zadd::<(), _, _>(k.available(), None, None, false, false, free)
                    .await?;
            }
        }
        Ok(())
    }

    /// Ends a load: the event is watched (its outbox relayed, its holds swept)
    /// before its event hash is written, since from then on it takes holds.
    pub async fn complete_load(
        &self,
        event_id: i64,
        event: &EventEntry<'_>,
    ) -> Result<(), StoreError> {
        self.watch_events(&[event_id]).await?;
        let starts_at = event.starts_at.to_rfc3339_opts(SecondsFormat::Secs, true);
        let mut fields = vec![
            (event_field::NAME, event.name.to_string()),
            (event_field::VENUE, event.venue.to_string()),
            (event_field::STARTS_AT, starts_at),
            (event_field::TOTAL_SEATS, event.total_seats.to_string()),
            (event_field::STATUS, event.status.as_str().to_string()),
        ];
        if let Some(idle_ms) = event.admission_idle_ms {
            fields.push((event_field::ADMISSION, idle_ms.to_string()));
        }
        Ok(self
            .client()
            .hset::<(), _, _>(self.keys.event(event_id).event(), fields)
            .await?)
    }

    /// Sets the event's change counter, so the next change is numbered `seq + 1`.
    pub async fn set_seq(&self, event_id: i64, seq: i64) -> Result<(), StoreError> {
        let k = self.keys.event(event_id);
        Ok(self
            .client()
            .set::<(), _, _>(k.seq(), seq, None, None, false)
            .await?)
    }

    /// Puts holds back into an event being rebuilt: each one's seat lock (but a
    /// due one's: see [`RestoredHold::is_due`]), state, place in `holds` and in
    /// its user's holds, and its seat out of `available`.
    pub async fn restore_holds(
        &self,
        event_id: i64,
        holds: &[RestoredHold],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let k = self.keys.event(event_id);
        for chunk in holds.chunks(RESTORE_CHUNK) {
            let pipeline = self.client().pipeline();
            for hold in chunk {
                if !hold.is_due(now_ms) {
                    queue_lock(&pipeline, &k, hold, now_ms, None).await?;
                }
                queue_hold(&pipeline, &k, hold).await?;
            }
            let _: Vec<Value> = pipeline.all().await?;
        }
        Ok(())
    }

    /// Like [`Store::restore_holds`] into a live event, each hold only while
    /// its seat is free: a seat someone took since keeps its new holder. A due
    /// hold needs no lock and is always restored. Returns how many were.
    pub async fn restore_holds_on_free_seats(
        &self,
        event_id: i64,
        holds: &[&RestoredHold],
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let k = self.keys.event(event_id);
        let mut restored = 0;
        for chunk in holds.chunks(RESTORE_CHUNK) {
            let pipeline = self.client().pipeline();
            for hold in chunk.iter().filter(|hold| !hold.is_due(now_ms)) {
                queue_lock(&pipeline, &k, hold, now_ms, Some(SetOptions::NX)).await?;
            }
            let mut locked: Vec<Option<String>> = pipeline.all().await?;
            locked.reverse();
            let pipeline = self.client().pipeline();
            for hold in chunk {
                // Replies come in order, one per hold that is not due.
                if hold.is_due(now_ms) || locked.pop().flatten().is_some() {
                    queue_hold(&pipeline, &k, hold).await?;
                    restored += 1;
                }
            }
            let _: Vec<Value> = pipeline.all().await?;
        }
        Ok(restored)
    }

    /// The status Redis has for each booking, `None` where it has no hold.
    pub async fn hold_statuses(
        &self,
        event_id: i64,
        booking_ids: &[&str],
    ) -> Result<Vec<Option<BookingStatus>>, StoreError> {
        let k = self.keys.event(event_id);
        let mut statuses = Vec::with_capacity(booking_ids.len());
        for chunk in booking_ids.chunks(RESTORE_CHUNK) {
            let holds: Vec<String> = chunk.iter().map(|booking| k.hold(booking)).collect();
            let read = |c: Client| {
                let holds = holds.clone();
                async move {
                    let pipeline = c.pipeline();
                    for hold in holds {
                        pipeline.hget::<(), _, _>(hold, hold_field::STATUS).await?;
                    }
                    pipeline.all::<Vec<Option<String>>>().await
                }
            };
            let texts = self.on_master_of_waiting(&k.event(), read).await?;
            for text in texts {
                statuses.push(text.map(status_field).transpose()?);
            }
        }
        Ok(statuses)
    }
}

/// Queues a restored hold's seat lock, naming its booking (`NX`: only while the seat is free).
async fn queue_lock(
    pipeline: &Pipeline<Client>,
    k: &EventKeys,
    hold: &RestoredHold,
    now_ms: i64,
    options: Option<SetOptions>,
) -> Result<(), fred::error::Error> {
    pipeline
        .set::<(), _, _>(
            k.lock(hold.seat_id),
            hold.booking_id.as_str(),
            hold.lock_expiry(now_ms),
            options,
            false,
        )
        .await
}

/// Queues a restored hold's state, its place in `holds` and in the user's
/// holds, and takes its seat out of `available` (the seat lock is the caller's).
async fn queue_hold(
    pipeline: &Pipeline<Client>,
    k: &EventKeys,
    hold: &RestoredHold,
) -> Result<(), fred::error::Error> {
    let id = hold.booking_id.as_str();
    let confirmed = hold.confirmed_ms.map_or(String::new(), |ms| ms.to_string());
    pipeline
        .hset::<(), _, _>(
            k.hold(id),
            vec![
                (hold_field::BOOKING, id.to_string()),
                (hold_field::SEAT, hold.seat_id.to_string()),
                (hold_field::USER, hold.user_id.to_string()),
                (hold_field::STATUS, hold.status.as_str().to_string()),
                (hold_field::VERSION, hold.version.to_string()),
                (hold_field::SEQ, hold.seq.to_string()),
                (hold_field::EXPIRES, hold.expires_ms.to_string()),
                (hold_field::CREATED, hold.created_ms.to_string()),
                (hold_field::CONFIRMED, confirmed),
            ],
        )
        .await?;
    pipeline
        .zrem::<(), _, _>(k.available(), hold.seat_id)
        .await?;
    if hold.is_pending() {
        let entry = (hold.expires_ms as f64, id);
        pipeline
            .zadd::<(), _, _>(k.holds(), None, None, false, false, entry)
            .await?;
        pipeline
            .zadd::<(), _, _>(k.user_holds(hold.user_id), None, None, false, false, entry)
            .await?;
    }
    Ok(())
}
