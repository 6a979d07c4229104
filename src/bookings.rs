//! Placing holds (`POST /api/bookings`): validate, then one Redis script call.
//! Redis alone decides; PostgreSQL hears of it later through the outbox.

use std::time::Duration;

use chrono::{SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    coalesce::{Coalescer, Shared, Turn},
    config::HoldConfig,
    holds::{HoldOutcome, PlaceHold, Store, StoreError},
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
    pub status: &'static str,
    pub event_id: i64,
    pub seat_id: i64,
    pub user_id: i64,
    pub expires_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("eventId and seatId must be positive integers")]
    InvalidIds,
    #[error("seat {seat_id} is held or booked by someone else")]
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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Holds `req.seat_id` for `user_id`. `Ok((view, true))` for a new hold,
/// `Ok((view, false))` for the answer an earlier request with the same
/// Idempotency-Key got. With a `coalescer`, concurrent requests for the same
/// seat share one Redis call (see [`crate::coalesce`]).
#[tracing::instrument(skip_all, fields(event_id = req.event_id, seat_id = req.seat_id, user_id))]
pub async fn place(
    store: &Store,
    coalescer: Option<&Coalescer>,
    config: &HoldConfig,
    user_id: i64,
    req: &HoldRequest,
    idempotency_key: Option<&str>,
    traceparent: &str,
) -> Result<(BookingView, bool), HoldError> {
    if req.event_id <= 0 || req.seat_id <= 0 {
        return Err(HoldError::InvalidIds);
    }
    let coalescer = coalescer.filter(|_| idempotency_key.is_none());
    let Some(coalescer) = coalescer else {
        return place_alone(store, config, user_id, req, idempotency_key, traceparent).await;
    };
    let leader = match coalescer.join(req.event_id, req.seat_id).await {
        Turn::Lead(leader) => leader,
        Turn::Follow(Shared::Taken) => {
            return Err(HoldError::Taken {
                seat_id: req.seat_id,
            });
        }
        Turn::Follow(Shared::NoEvent) => return Err(HoldError::NoEvent(req.event_id)),
        Turn::Follow(Shared::NoSeat) => {
            return Err(HoldError::NoSeat {
                event_id: req.event_id,
                seat_id: req.seat_id,
            });
        }
        Turn::Follow(Shared::AskAgain) => {
            return place_alone(store, config, user_id, req, None, traceparent).await;
        }
    };
    let result = place_alone(store, config, user_id, req, None, traceparent).await;
    leader.finish(match &result {
        Ok(_) | Err(HoldError::Taken { .. }) => Shared::Taken,
        Err(HoldError::NoEvent(_)) => Shared::NoEvent,
        Err(HoldError::NoSeat { .. }) => Shared::NoSeat,
        Err(_) => Shared::AskAgain,
    });
    result
}

/// One script call, decided by Redis alone.
async fn place_alone(
    store: &Store,
    config: &HoldConfig,
    user_id: i64,
    req: &HoldRequest,
    idempotency_key: Option<&str>,
    traceparent: &str,
) -> Result<(BookingView, bool), HoldError> {
    let booking_id = uuid::Uuid::now_v7().to_string();
    let outcome = store
        .place_hold(&PlaceHold {
            event_id: req.event_id,
            seat_id: req.seat_id,
            user_id,
            booking_id: &booking_id,
            now_ms: Utc::now().timestamp_millis(),
            ttl_ms: config.ttl.as_millis() as i64,
            max_per_user: config.max_per_user,
            idempotency_key,
            idempotency_ttl_ms: config.idempotency_ttl.as_millis() as i64,
            outbox_max: config.outbox_max,
            traceparent,
        })
        .await?;
    let view = |booking_id: String, expires_ms: i64| BookingView {
        booking_id,
        status: "PENDING",
        event_id: req.event_id,
        seat_id: req.seat_id,
        user_id,
        expires_at: Utc
            .timestamp_millis_opt(expires_ms)
            .single()
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    match outcome {
        HoldOutcome::Placed {
            booking_id,
            expires_ms,
        } => Ok((view(booking_id, expires_ms), true)),
        HoldOutcome::Replayed {
            booking_id,
            expires_ms,
        } => Ok((view(booking_id, expires_ms), false)),
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
        HoldOutcome::Busy => Err(HoldError::Busy),
        HoldOutcome::IdempotencyMismatch => Err(HoldError::IdempotencyMismatch),
    }
}

/// An Idempotency-Key is 1 to 128 characters of `A-Z a-z 0-9 - _ . :`.
pub fn valid_idempotency_key(key: &str) -> bool {
    (1..=MAX_IDEMPOTENCY_KEY).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A W3C `traceparent` of the version-00 shape, or nothing.
pub fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    matches!(parts.as_slice(), [v, t, p, f]
        if v.len() == 2 && t.len() == 32 && p.len() == 16 && f.len() == 2
            && value.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_short_and_plain() {
        assert!(valid_idempotency_key("3f2a-retry_1.x:y"));
        assert!(!valid_idempotency_key(""));
        assert!(!valid_idempotency_key("has space"));
        assert!(!valid_idempotency_key("brace{"));
        assert!(!valid_idempotency_key(&"k".repeat(MAX_IDEMPOTENCY_KEY + 1)));
    }

    #[test]
    fn traceparents_have_the_w3c_shape() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"
        ));
        assert!(!valid_traceparent(
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
    }
}
