//! Bookings: placing holds (`POST /api/bookings`: validate, then one Redis
//! script call), reading them, confirming and cancelling them. Redis alone
//! decides; PostgreSQL hears of it later through the outbox, and answers for a
//! booking only once Redis has let it go.

use std::time::Duration;

use chrono::{SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    booking_id,
    coalesce::{Coalescer, Shared, Turn},
    config::HoldConfig,
    holds::{HoldOutcome, PlaceHold, Store, StoreError, Transition},
    metric,
    status::BookingStatus,
};

/// The longest Idempotency-Key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldRequest {
    pub event_id: i64,
    pub seat_id: i64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BookingView {
    pub booking_id: String,
    pub status: BookingStatus,
    pub event_id: i64,
    pub seat_id: i64,
    pub user_id: i64,
    pub expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<String>,
}

/// Why a booking cannot be shown, confirmed or cancelled.
#[derive(Debug, thiserror::Error)]
pub enum BookingError {
    #[error("no booking {0} of yours")]
    NotFound(Uuid),
    #[error("booking {id} is {status}: it can no longer be confirmed or cancelled")]
    Gone { id: Uuid, status: BookingStatus },
    #[error("booking {0} is confirmed and cannot be cancelled")]
    Confirmed(Uuid),
    /// The confirm or cancel was sent but its answer never came (a timeout):
    /// it may have taken effect, which a retry then answers.
    #[error("no answer from redis to a confirm or cancel: {0}")]
    Undecided(fred::error::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
}

/// How a hold request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// This request placed the hold (201).
    New,
    /// The same Idempotency-Key and seat as an earlier request: its booking.
    Replayed,
    /// The seat was already this user's own live hold, and still is: that
    /// booking (200), for a retry whose first answer was lost, say a 503
    /// after a timeout while the script still ran.
    Own,
}

#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("eventId and seatId must be positive integers")]
    InvalidIds,
    #[error("seat {seat_id} is held by someone else or already booked")]
    Taken { seat_id: i64 },
    #[error("event {0} is unknown or not on sale")]
    NoEvent(i64),
    #[error("seat {seat_id} is not a seat of event {event_id}")]
    NoSeat { event_id: i64, seat_id: i64 },
    #[error("you already hold {max} seats of this event")]
    UserLimit { max: u32, retry_after: Duration },
    #[error("too many holds are waiting to be recorded; try again shortly")]
    Busy,
    #[error("this Idempotency-Key was used for another seat")]
    IdempotencyMismatch,
    #[error(
        "event {0} admits buyers through its waiting room: join it (POST /waiting-room/{0}/join), \
         visit it (GET /waiting-room/{0}) until you are admitted, then book"
    )]
    NotAdmitted(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Holds `req.seat_id` for `user_id`, or finds the hold that was there
/// already (see [`Held`]): the answer an earlier request with the same
/// Idempotency-Key got, or the user's own live hold of this seat (a retry
/// after a lost answer, with or without a key). With a `coalescer`, concurrent
/// requests for the same seat share one Redis call (see [`crate::coalesce`]).
#[tracing::instrument(skip_all, fields(event_id = req.event_id, seat_id = req.seat_id, user_id))]
pub async fn place(
    store: &Store,
    coalescer: Option<&Coalescer>,
    config: &HoldConfig,
    user_id: i64,
    req: &HoldRequest,
    idempotency_key: Option<&str>,
    traceparent: &str,
) -> Result<(BookingView, Held), HoldError> {
    if req.event_id <= 0 || req.seat_id <= 0 {
        return Err(HoldError::InvalidIds);
    }
    let attempt = Attempt {
        store,
        config,
        user_id,
        req,
        idempotency_key,
        traceparent,
    };
    let result = match coalescer.filter(|_| idempotency_key.is_none()) {
        Some(coalescer) => attempt.coalesced(coalescer).await,
        None => attempt.alone().await,
    };
    let outcome = match &result {
        Ok((_, Held::New)) => "placed",
        Ok((_, Held::Replayed)) => "replayed",
        Ok((_, Held::Own)) => "own",
        Err(HoldError::Taken { .. }) => "taken",
        Err(HoldError::UserLimit { .. }) => "limited",
        Err(HoldError::Busy) => "busy",
        Err(HoldError::NoEvent(_) | HoldError::NoSeat { .. }) => "not_found",
        Err(HoldError::IdempotencyMismatch) => "mismatch",
        Err(HoldError::NotAdmitted(_)) => "not_admitted",
        Err(HoldError::InvalidIds) => "invalid",
        Err(HoldError::Store(StoreError::Unreplicated { .. })) => "unreplicated",
        Err(HoldError::Store(_)) => "unavailable",
    };
    metrics::counter!(metric::HOLDS, "outcome" => outcome).increment(1);
    result
}

/// One hold request, on its way to Redis.
#[derive(Clone, Copy)]
struct Attempt<'a> {
    store: &'a Store,
    config: &'a HoldConfig,
    user_id: i64,
    req: &'a HoldRequest,
    idempotency_key: Option<&'a str>,
    traceparent: &'a str,
}

impl Attempt<'_> {
    /// Leads the script call for this seat, or shares the outcome of the one in flight.
    async fn coalesced(&self, coalescer: &Coalescer) -> Result<(BookingView, Held), HoldError> {
        let req = self.req;
        let shared = match coalescer.join(req.event_id, req.seat_id).await {
            Turn::Lead(leader) => {
                let result = self.alone().await;
                leader.finish(match &result {
                    Ok(_) => Shared::TakenBy(self.user_id),
                    Err(HoldError::Taken { .. }) => Shared::Taken,
                    Err(HoldError::NoEvent(_)) => Shared::NoEvent,
                    Err(HoldError::NoSeat { .. }) => Shared::NoSeat,
                    Err(_) => Shared::AskAgain,
                });
                return result;
            }
            Turn::Follow(Shared::AskAgain) => {
                return self.alone().await;
            }
            // The seat is this user's own now: Redis answers it as theirs.
            Turn::Follow(Shared::TakenBy(user_id)) if user_id == self.user_id => {
                return self.alone().await;
            }
            Turn::Follow(shared) => shared,
        };
        metrics::counter!(metric::HOLDS_COALESCED).increment(1);
        Err(match shared {
            Shared::NoEvent => HoldError::NoEvent(req.event_id),
            Shared::NoSeat => HoldError::NoSeat {
                event_id: req.event_id,
                seat_id: req.seat_id,
            },
            _ => HoldError::Taken {
                seat_id: req.seat_id,
            },
        })
    }

    /// One script call, decided by Redis alone.
    async fn alone(&self) -> Result<(BookingView, Held), HoldError> {
        let Attempt {
            store,
            config,
            user_id,
            req,
            idempotency_key,
            traceparent,
        } = *self;
        // A fresh id for each attempt; a second collision in a row is beyond belief.
        let mut attempts = 0;
        let outcome = loop {
            let Some(booking_id) = booking_id::new(req.event_id) else {
                return Err(HoldError::NoEvent(req.event_id));
            };
            let outcome = store
                .place_hold(&PlaceHold {
                    event_id: req.event_id,
                    seat_id: req.seat_id,
                    user_id,
                    booking_id: &booking_id.to_string(),
                    ttl_ms: config.ttl.as_millis() as i64,
                    max_per_user: config.max_per_user,
                    idempotency_key,
                    idempotency_ttl_ms: config.idempotency_ttl.as_millis() as i64,
                    outbox_max: config.outbox_max,
                    traceparent,
                })
                .await?;
            attempts += 1;
            if outcome != HoldOutcome::IdCollision || attempts == 3 {
                break outcome;
            }
            tracing::warn!(%booking_id, "booking id collision, drawing another");
        };
        let view = |booking_id: String, expires_ms: i64| BookingView {
            booking_id,
            status: BookingStatus::Pending,
            event_id: req.event_id,
            seat_id: req.seat_id,
            user_id,
            expires_at: timestamp(expires_ms),
            confirmed_at: None,
        };
        match outcome {
            HoldOutcome::Placed {
                booking_id,
                expires_ms,
            } => Ok((view(booking_id, expires_ms), Held::New)),
            HoldOutcome::Replayed {
                booking_id,
                expires_ms,
            } => Ok((view(booking_id, expires_ms), Held::Replayed)),
            HoldOutcome::Own {
                booking_id,
                expires_ms,
            } => Ok((view(booking_id, expires_ms), Held::Own)),
            HoldOutcome::Taken => Err(HoldError::Taken {
                seat_id: req.seat_id,
            }),
            HoldOutcome::NoEvent => Err(HoldError::NoEvent(req.event_id)),
            HoldOutcome::NoSeat => Err(HoldError::NoSeat {
                event_id: req.event_id,
                seat_id: req.seat_id,
            }),
            HoldOutcome::UserLimit { retry_after_ms } => Err(HoldError::UserLimit {
                max: config.max_per_user,
                retry_after: Duration::from_millis(retry_after_ms.max(0) as u64),
            }),
            HoldOutcome::Busy | HoldOutcome::IdCollision => Err(HoldError::Busy),
            HoldOutcome::IdempotencyMismatch => Err(HoldError::IdempotencyMismatch),
            HoldOutcome::NotAdmitted => Err(HoldError::NotAdmitted(req.event_id)),
        }
    }
}

/// A time (ms since epoch, Redis's clock) as every answer writes it.
pub fn timestamp(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A user's booking: from Redis while it has it, from PostgreSQL after.
pub async fn status(
    store: &Store,
    pg: &deadpool_postgres::Pool,
    user_id: i64,
    id: Uuid,
) -> Result<BookingView, BookingError> {
    let event_id = booking_id::event_of(&id);
    match store.read_hold(event_id, &id.to_string()).await? {
        Some(hold) if hold.user_id == user_id => Ok(BookingView {
            booking_id: id.to_string(),
            status: hold.status,
            event_id,
            seat_id: hold.seat_id,
            user_id,
            expires_at: timestamp(hold.expires_ms),
            confirmed_at: hold.confirmed_ms.map(timestamp),
        }),
        Some(_) => Err(BookingError::NotFound(id)),
        None => stored(pg, user_id, id).await,
    }
}

/// The booking as PostgreSQL has it, once Redis has let it go.
async fn stored(
    pg: &deadpool_postgres::Pool,
    user_id: i64,
    id: Uuid,
) -> Result<BookingView, BookingError> {
    let client = pg.get().await?;
    let row = client
        .query_opt(
            "SELECT status, event_id, seat_id, expires_at, confirmed_at
               FROM bookings WHERE id = $1 AND user_id = $2",
            &[&id, &user_id],
        )
        .await?
        .ok_or(BookingError::NotFound(id))?;
    let at = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    Ok(BookingView {
        booking_id: id.to_string(),
        status: row.get(0),
        event_id: row.get(1),
        seat_id: row.get(2),
        user_id,
        expires_at: at(row.get(3)),
        confirmed_at: row.get::<_, Option<chrono::DateTime<Utc>>>(4).map(at),
    })
}

/// The two ways a user ends a PENDING hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// PENDING -> CONFIRMED (the checkout step): the seat is sold.
    Confirm,
    /// PENDING -> CANCELLED: the seat is free at once.
    Cancel,
}

impl Ending {
    fn status(self) -> BookingStatus {
        match self {
            Ending::Confirm => BookingStatus::Confirmed,
            Ending::Cancel => BookingStatus::Cancelled,
        }
    }

    fn outcome(self) -> &'static str {
        match self {
            Ending::Confirm => "confirmed",
            Ending::Cancel => "cancelled",
        }
    }
}

/// Confirms or cancels a user's hold; doing it again answers the same.
pub async fn end(
    store: &Store,
    pg: &deadpool_postgres::Pool,
    user_id: i64,
    id: Uuid,
    traceparent: &str,
    ending: Ending,
) -> Result<BookingView, BookingError> {
    let event_id = booking_id::event_of(&id);
    let booking = id.to_string();
    let transition = match ending {
        Ending::Confirm => {
            store
                .confirm_hold(event_id, &booking, user_id, traceparent)
                .await
        }
        Ending::Cancel => {
            store
                .cancel_hold(event_id, &booking, user_id, traceparent)
                .await
        }
    };
    // A lost answer may hide a change that happened; a retry finds it done
    // (both scripts answer a booking already in their target status).
    let transition = transition.map_err(|e| match e {
        StoreError::Unavailable(e) => BookingError::Undecided(e),
        e => BookingError::Store(e),
    })?;
    let view = settle(pg, user_id, id, event_id, transition, ending.status()).await?;
    metrics::counter!(metric::HOLDS, "outcome" => ending.outcome()).increment(1);
    Ok(view)
}

/// Turns a script's decision into the answer; a booking Redis no longer has is
/// judged from PostgreSQL: already in `target` answers it, anything else is gone.
async fn settle(
    pg: &deadpool_postgres::Pool,
    user_id: i64,
    id: Uuid,
    event_id: i64,
    transition: Transition,
    target: BookingStatus,
) -> Result<BookingView, BookingError> {
    match transition {
        Transition::Done {
            status,
            seat_id,
            expires_ms,
            confirmed_ms,
        } => Ok(BookingView {
            booking_id: id.to_string(),
            status,
            event_id,
            seat_id,
            user_id,
            expires_at: timestamp(expires_ms),
            confirmed_at: confirmed_ms.map(timestamp),
        }),
        Transition::Confirmed => Err(BookingError::Confirmed(id)),
        Transition::Gone(status) => Err(BookingError::Gone { id, status }),
        Transition::NotFound => {
            let view = stored(pg, user_id, id).await?;
            match view.status {
                status if status == target => Ok(view),
                BookingStatus::Confirmed => Err(BookingError::Confirmed(id)),
                _ => Err(BookingError::Gone {
                    id,
                    status: view.status,
                }),
            }
        }
    }
}

/// An Idempotency-Key is 1 to 128 characters of `A-Z a-z 0-9 - _ . :`.
pub fn valid_idempotency_key(key: &str) -> bool {
    (1..=MAX_IDEMPOTENCY_KEY).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The Idempotency-Key pattern `openapi.json` promises clients.
    fn documented_pattern() -> String {
        let doc: serde_json::Value = serde_json::from_str(crate::http::router::OPENAPI).unwrap();
        let parameters = doc["paths"]["/api/bookings"]["post"]["parameters"]
            .as_array()
            .unwrap();
        let key = parameters
            .iter()
            .find(|p| p["name"] == "Idempotency-Key")
            .unwrap();
        key["schema"]["pattern"].as_str().unwrap().to_string()
    }

    /// The documented pattern without its anchors, for generating strings: it
    /// must be anchored at both ends, or it would allow anything around a match.
    fn documented_keys() -> impl Strategy<Value = String> {
        let pattern = documented_pattern();
        let inner = pattern
            .strip_prefix('^')
            .and_then(|p| p.strip_suffix('$'))
            .expect("the Idempotency-Key pattern is anchored");
        proptest::string::string_regex(inner).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Every key the document allows is accepted.
        #[test]
        fn documented_idempotency_keys_are_accepted(
            key in documented_keys()
        ) {
            prop_assert!(valid_idempotency_key(&key), "{key:?}");
        }

        /// Every key accepted is one the document allows, a valid header value,
        /// and free of the braces and spaces that would change a Redis key's slot
        /// or shape; anything else is refused without a panic.
        #[test]
        fn accepted_idempotency_keys_are_documented_and_plain(
            key in prop_oneof![any::<String>(), "[ -~]{0,130}", "[A-Za-z0-9._:-]{120,130}"]
        ) {
            let allowed = (1..=128).contains(&key.chars().count())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
            prop_assert_eq!(valid_idempotency_key(&key), allowed, "{:?}", key);
            if allowed {
                let header = http::HeaderValue::from_str(&key).unwrap();
                prop_assert_eq!(header.to_str().unwrap(), key.as_str());
                prop_assert!(!key.contains(['{', '}', ' ']), "{:?}", key);
            }
        }
    }

    #[test]
    fn idempotency_keys_are_short_and_plain() {
        assert!(valid_idempotency_key("3f2a-retry_1.x:y"));
        assert!(!valid_idempotency_key(""));
        assert!(!valid_idempotency_key("has space"));
        assert!(!valid_idempotency_key("brace{"));
        assert!(!valid_idempotency_key(&"k".repeat(MAX_IDEMPOTENCY_KEY + 1)));
    }
}
