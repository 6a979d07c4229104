//! Applying a batch of hold events to PostgreSQL in one transaction, idempotently
//! and in any order.
//!
//! - Upsert by booking id; a row changes only for a higher `version`, so repeats
//!   and late events change nothing.
//! - Redis allows one live hold per seat, so when two bookings of one seat look
//!   live here, the one with the lower `seq` has ended already and its own event
//!   is still on the way: it is marked EXPIRED provisionally, without raising its
//!   version, so its real final event still applies when it arrives. A CONFIRMED
//!   booking outranks a PENDING one whatever their `seq`: only a Redis that lost
//!   a confirm (its data) can hold a seat PostgreSQL has sold, and the buyer who
//!   paid keeps it. Two CONFIRMED bookings of one seat are a double sale no rule
//!   can settle: the unique index refuses the second, and it is dead-lettered.
//! - Seat statuses are derived from the seat's bookings after the upsert, never
//!   copied from one event, so events of different bookings cannot undo each other.
//!
//! - An event whose user does not exist, or whose seat is not one of its event's,
//!   can never apply: it is refused (the caller dead-letters it) and the rest of
//!   the batch applies. Checked once per batch, set-based, where foreign keys
//!   cost two trigger queries and two row locks per row (migrations/V5).
//!
//! Seats are locked (`FOR UPDATE`, in id order) first, so concurrent writers
//! serialise per seat instead of tripping over the unique index.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use tokio_postgres::Transaction;
use uuid::Uuid;

use crate::{hold_event::HoldEvent, status::BookingStatus};

/// What one batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Bookings inserted or moved to a newer version.
    pub rows: u64,
    /// Events that changed nothing: repeats or older versions.
    pub stale: u64,
    /// Events that can never apply, by their index in the batch, with why
    /// (SQLSTATE 23503 first, as a foreign key would have said).
    pub refused: Vec<(usize, String)>,
}

/// Applies `events` inside `tx` (the caller commits).
pub async fn apply(
    tx: &Transaction<'_>,
    events: &[HoldEvent],
) -> Result<Applied, tokio_postgres::Error> {
    let mut seats: Vec<i64> = events.iter().map(|e| e.seat_id).collect();
    seats.sort_unstable();
    seats.dedup();
    let seat_events: HashMap<i64, i64> = tx
        .query(
            "SELECT id, event_id FROM seats WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&seats],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut users: Vec<i64> = events.iter().map(|e| e.user_id).collect();
    users.sort_unstable();
    users.dedup();
    let known_users: HashSet<i64> = tx
        .query("SELECT id FROM users WHERE id = ANY($1)", &[&users])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut valid = Vec::with_capacity(events.len());
    let mut refused = Vec::new();
    for (i, event) in events.iter().enumerate() {
        match orphan(event, &seat_events, &known_users) {
            Some(reason) => refused.push((i, reason)),
            None => valid.push(event),
        }
    }
    let mut latest = newest_per_booking(valid);
    let superseded = settle_seat_conflicts(tx, &mut latest).await?;
    if !superseded.is_empty() {
        tx.execute(
            "UPDATE bookings SET status = 'EXPIRED', updated_at = now()
              WHERE id = ANY($1) AND status = 'PENDING'",
            &[&superseded],
        )
        .await?;
    }
    let rows = upsert(tx, &latest).await?;
    // One probe of the live-booking index per seat; unchanged seats are not rewritten.
    tx.execute(
        "UPDATE seats s SET status = v.status, updated_at = now()
           FROM (SELECT x.id, coalesce(
                        (SELECT CASE b.status WHEN 'CONFIRMED' THEN 'BOOKED' ELSE 'HELD' END
                           FROM bookings b
                          WHERE b.seat_id = x.id AND b.status IN ('PENDING', 'CONFIRMED')),
                        'AVAILABLE') AS status
                   FROM unnest($1::int8[]) AS x(id)) v
          WHERE s.id = v.id AND s.status <> v.status",
        &[&seats],
    )
    .await?;
    Ok(Applied {
        rows,
        stale: (events.len() - refused.len()) as u64 - rows,
        refused,
    })
}

/// Why `event` can never apply: its user is unknown, or its seat is not one of
/// its event's seats (`seat_events`: seat id -> its event).
fn orphan(
    event: &HoldEvent,
    seat_events: &HashMap<i64, i64>,
    known_users: &HashSet<i64>,
) -> Option<String> {
    if !known_users.contains(&event.user_id) {
        return Some(format!("23503: user {} does not exist", event.user_id));
    }
    match seat_events.get(&event.seat_id) {
        Some(&of) if of == event.event_id => None,
        Some(&of) => Some(format!(
            "23503: seat {} belongs to event {of}, not to event {}",
            event.seat_id, event.event_id
        )),
        None => Some(format!("23503: seat {} does not exist", event.seat_id)),
    }
}

/// One event per booking: the highest version in the batch.
fn newest_per_booking(events: Vec<&HoldEvent>) -> Vec<HoldEvent> {
    let mut newest: HashMap<Uuid, &HoldEvent> = HashMap::new();
    for event in events {
        newest
            .entry(event.booking_id)
            .and_modify(|kept| {
                if event.version > kept.version {
                    *kept = event;
                }
            })
            .or_insert(event);
    }
    let mut latest: Vec<HoldEvent> = newest.into_values().cloned().collect();
    latest.sort_by_key(|e| e.seq);
    latest
}

/// Leaves at most one live booking per seat: among the batch and the rows
/// already stored, the highest `seq` stays live. Returns the stored bookings
/// that must be expired; batch events that lost are changed in place.
async fn settle_seat_conflicts(
    tx: &Transaction<'_>,
    latest: &mut [HoldEvent],
) -> Result<Vec<Uuid>, tokio_postgres::Error> {
    // Live claim per seat: (its rank, index into latest).
    let mut claims: HashMap<i64, (Rank, usize)> = HashMap::new();
    for i in 0..latest.len() {
        if !latest[i].status.is_live() {
            continue;
        }
        let seat = latest[i].seat_id;
        let rank = Rank::of(latest[i].status, latest[i].seq);
        match claims.get(&seat).copied() {
            Some((kept, _)) if kept > rank => expire_in_batch(&mut latest[i]),
            Some((_, loser)) => {
                expire_in_batch(&mut latest[loser]);
                claims.insert(seat, (rank, i));
            }
            None => {
                claims.insert(seat, (rank, i));
            }
        }
    }
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let seats: Vec<i64> = claims.keys().copied().collect();
    let batch_ids: Vec<Uuid> = latest.iter().map(|e| e.booking_id).collect();
    let stored = tx
        .query(
            "SELECT id, seat_id, seq, status = 'CONFIRMED' FROM bookings
              WHERE seat_id = ANY($1) AND status IN ('PENDING', 'CONFIRMED') AND id <> ALL($2)",
            &[&seats, &batch_ids],
        )
        .await?;
    let mut superseded = Vec::new();
    for row in stored {
        let (id, seat, seq, confirmed): (Uuid, i64, i64, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let stored = Rank { confirmed, seq };
        let (claim, i) = claims[&seat];
        if claim.confirmed != stored.confirmed && (claim > stored) != (claim.seq > stored.seq) {
            tracing::warn!(
                seat_id = seat,
                confirmed = %if claim.confirmed { latest[i].booking_id } else { id },
                held = %if claim.confirmed { id } else { latest[i].booking_id },
                "a later hold lost its seat to a confirmed booking (Redis lost the confirm?)"
            );
        }
        if claim > stored {
            superseded.push(id);
        } else {
            expire_in_batch(&mut latest[i]);
        }
    }
    Ok(superseded)
}

/// Which of two live bookings of one seat keeps it: the greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    /// Paid: kept over any PENDING hold.
    confirmed: bool,
    /// Then the later change in Redis.
    seq: i64,
}

impl Rank {
    fn of(status: BookingStatus, seq: i64) -> Self {
        Rank {
            confirmed: status == BookingStatus::Confirmed,
            seq,
        }
    }
}

/// The booking ended in Redis before a later one took its seat; its own final
/// event is still on the way and will overwrite this (same version, not higher).
fn expire_in_batch(event: &mut HoldEvent) {
    if event.status == BookingStatus::Pending {
        event.status = BookingStatus::Expired;
    }
}

async fn upsert(tx: &Transaction<'_>, latest: &[HoldEvent]) -> Result<u64, tokio_postgres::Error> {
    let ids: Vec<Uuid> = latest.iter().map(|e| e.booking_id).collect();
    let events: Vec<i64> = latest.iter().map(|e| e.event_id).collect();
    let seats: Vec<i64> = latest.iter().map(|e| e.seat_id).collect();
    let users: Vec<i64> = latest.iter().map(|e| e.user_id).collect();
    let statuses: Vec<&str> = latest.iter().map(|e| e.status.as_str()).collect();
    let expires: Vec<DateTime<Utc>> = latest.iter().map(|e| e.expires_at).collect();
    let confirmed: Vec<Option<DateTime<Utc>>> = latest.iter().map(|e| e.confirmed_at).collect();
    let versions: Vec<i64> = latest.iter().map(|e| e.version).collect();
    let seqs: Vec<i64> = latest.iter().map(|e| e.seq).collect();
    let created: Vec<DateTime<Utc>> = latest.iter().map(|e| e.occurred_at).collect();
    tx.execute(
        "INSERT INTO bookings (id, event_id, seat_id, user_id, status, expires_at, confirmed_at,
                               version, seq, created_at, updated_at)
         SELECT id, event_id, seat_id, user_id, status, expires_at, confirmed_at,
                version, seq, created_at, now()
           FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::int8[], $5::text[],
                       $6::timestamptz[], $7::timestamptz[], $8::int8[], $9::int8[],
                       $10::timestamptz[])
                AS t(id, event_id, seat_id, user_id, status, expires_at, confirmed_at,
                     version, seq, created_at)
         ON CONFLICT (id) DO UPDATE SET
             status = EXCLUDED.status, expires_at = EXCLUDED.expires_at,
             confirmed_at = EXCLUDED.confirmed_at, version = EXCLUDED.version,
             seq = EXCLUDED.seq, updated_at = now()
         WHERE bookings.version < EXCLUDED.version",
        &[
            &ids, &events, &seats, &users, &statuses, &expires, &confirmed, &versions, &seqs,
            &created,
        ],
    )
    .await
}
