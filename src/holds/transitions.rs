//! Changing a hold: every state change is one script, decided in Redis alone.

use fred::{
    interfaces::{HashesInterface, SortedSetsInterface},
    prelude::Client,
    types::Value,
};

use super::{
    CANCEL_HOLD, CONFIRM_HOLD, EXPIRE_HOLD, EventKeys, HOLD_RETENTION_MS, Keys, PLACE_HOLD,
    SET_EVENT_STATUS, Store, StoreError, reply_error,
};
use crate::status::{BookingStatus, EventStatus};

/// A request to hold a seat, in the order of `place_hold.lua`'s ARGV.
#[derive(Debug, Clone)]
pub struct PlaceHold<'a> {
    pub event_id: i64,
    pub seat_id: i64,
    pub user_id: i64,
    pub booking_id: &'a str,
    pub ttl_ms: i64,
    pub max_per_user: u32,
    pub idempotency_key: Option<&'a str>,
    pub idempotency_ttl_ms: i64,
    pub outbox_max: u64,
    pub traceparent: &'a str,
}

/// What `place_hold.lua` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    Placed {
        booking_id: String,
        expires_ms: i64,
    },
    /// The same Idempotency-Key and seat as an earlier request: its answer again.
    Replayed {
        booking_id: String,
        expires_ms: i64,
    },
    /// The seat is already this user's own live (PENDING) hold.
    Own {
        booking_id: String,
        expires_ms: i64,
    },
    IdempotencyMismatch,
    NoEvent,
    NoSeat,
    Taken,
    UserLimit {
        retry_after_ms: i64,
    },
    Busy,
    /// The event admits buyers through its waiting room, and this user has no
    /// live admission.
    NotAdmitted,
    /// The booking id is taken by another hold (vanishingly rare): draw another.
    IdCollision,
}

/// What `confirm_hold.lua` or `cancel_hold.lua` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Now (or already) in `status`.
    Done {
        status: BookingStatus,
        seat_id: i64,
        expires_ms: i64,
        confirmed_ms: Option<i64>,
    },
    /// No booking of this user with this id in Redis.
    NotFound,
    /// Cancelling a CONFIRMED booking.
    Confirmed,
    /// The hold ended otherwise (EXPIRED, CANCELLED).
    Gone(BookingStatus),
}

impl Store {
    /// Holds a seat in one atomic step (one round-trip), or says why not.
    #[tracing::instrument(skip_all, fields(event_id = req.event_id, seat_id = req.seat_id))]
    pub async fn place_hold(&self, req: &PlaceHold<'_>) -> Result<HoldOutcome, StoreError> {
        let (keys, args) = place_hold_call(&self.keys, req);
        let reply = self.eval(&PLACE_HOLD, &self.place_hold, keys, args).await?;
        let outcome = parse_hold_outcome(&reply).ok_or_else(|| reply_error(&PLACE_HOLD, &reply))?;
        // A replay or the user's own hold is answered as theirs too: it may
        // be the retry of a hold whose barrier fell short.
        if let HoldOutcome::Placed { .. } | HoldOutcome::Replayed { .. } | HoldOutcome::Own { .. } =
            outcome
        {
            self.replicated(req.event_id).await?;
        }
        Ok(outcome)
    }

    /// Up to `limit` booking ids of the event whose hold is due at `now_ms`.
    pub async fn due_holds(
        &self,
        event_id: i64,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let holds = self.keys.event(event_id).holds();
        let due = |c: Client| {
            let holds = holds.clone();
            let first = Some((0, i64::from(limit)));
            async move {
                c.zrangebyscore(holds, f64::NEG_INFINITY, now_ms as f64, false, first)
                    .await
            }
        };
        self.on_master_of_waiting(&self.keys.event(event_id).holds(), due)
            .await
    }

    /// Releases one due hold (see `expire_hold.lua`); true when this call expired it.
    pub async fn expire_hold(
        &self,
        event_id: i64,
        booking_id: &str,
        retention_ms: i64,
    ) -> Result<bool, StoreError> {
        let k = self.keys.event(event_id);
        let (seat, user) = self.hold_owner(&k, booking_id).await?;
        let keys = vec![
            k.hold(booking_id),
            k.lock(seat),
            k.holds(),
            k.user_holds(user),
            k.available(),
            k.outbox(),
            k.seq(),
            k.outbox_announced(),
        ];
        let args = vec![
            booking_id.to_string(),
            retention_ms.to_string(),
            self.keys.activity(),
            event_id.to_string(),
        ];
        let reply = self
            .eval(&EXPIRE_HOLD, &self.expire_hold, keys, args)
            .await?;
        let Value::Array(items) = &reply else {
            return Err(reply_error(&EXPIRE_HOLD, &reply));
        };
        match items.first().and_then(Value::as_str).as_deref() {
            Some("expired") => Ok(true),
            Some("skip") => Ok(false),
            _ => Err(reply_error(&EXPIRE_HOLD, &reply)),
        }
    }

    /// The seat and user of a hold, which name its other keys; (0, 0) when
    /// there is no such hold (the scripts then find nothing and say so).
    async fn hold_owner(&self, k: &EventKeys, booking_id: &str) -> Result<(i64, i64), StoreError> {
        let key = k.hold(booking_id);
        let owner: Vec<Option<i64>> = self
            .on_master_of(&key, |client| {
                let key = key.clone();
                async move { client.hmget(key, vec!["seatId", "userId"]).await }
            })
            .await?;
        Ok(match owner.as_slice() {
            [Some(seat), Some(user)] => (*seat, *user),
            _ => (0, 0),
        })
    }

    /// Confirms a user's PENDING hold (see `confirm_hold.lua`).
    pub async fn confirm_hold(
        &self,
        event_id: i64,
        booking_id: &str,
        user_id: i64,
        traceparent: &str,
    ) -> Result<Transition, StoreError> {
        let k = self.keys.event(event_id);
        let (seat, _) = self.hold_owner(&k, booking_id).await?;
        let keys = vec![
            k.hold(booking_id),
            k.lock(seat),
            k.holds(),
            k.user_holds(user_id),
            k.outbox(),
            k.seq(),
            k.outbox_announced(),
            k.room_admitted(),
            k.room_caps(),
        ];
        let args = vec![
            booking_id.to_string(),
            user_id.to_string(),
            traceparent.to_string(),
            self.keys.activity(),
            event_id.to_string(),
        ];
        let reply = self
            .eval(&CONFIRM_HOLD, &self.confirm_hold, keys, args)
            .await?;
        let transition =
            parse_transition(&reply).ok_or_else(|| reply_error(&CONFIRM_HOLD, &reply))?;
        self.replicated_if_done(event_id, transition).await
    }

    /// Cancels a user's PENDING hold (see `cancel_hold.lua`).
    pub async fn cancel_hold(
        &self,
        event_id: i64,
        booking_id: &str,
        user_id: i64,
        traceparent: &str,
    ) -> Result<Transition, StoreError> {
        let k = self.keys.event(event_id);
        let (seat, _) = self.hold_owner(&k, booking_id).await?;
        let keys = vec![
            k.hold(booking_id),
            k.lock(seat),
            k.holds(),
            k.user_holds(user_id),
            k.available(),
            k.outbox(),
            k.seq(),
            k.outbox_announced(),
            k.room_admitted(),
            k.room_caps(),
        ];
        let args = vec![
            booking_id.to_string(),
            user_id.to_string(),
            traceparent.to_string(),
            HOLD_RETENTION_MS.to_string(),
            self.keys.activity(),
            event_id.to_string(),
        ];
        let reply = self
            .eval(&CANCEL_HOLD, &self.cancel_hold, keys, args)
            .await?;
        let transition =
            parse_transition(&reply).ok_or_else(|| reply_error(&CANCEL_HOLD, &reply))?;
        self.replicated_if_done(event_id, transition).await
    }

    /// A confirm or cancel done (now or before: a retry) is answered once replicated.
    async fn replicated_if_done(
        &self,
        event_id: i64,
        transition: Transition,
    ) -> Result<Transition, StoreError> {
        if let Transition::Done { .. } = transition {
            self.replicated(event_id).await?;
        }
        Ok(transition)
    }

    /// Sets a loaded event's status; true when it changed.
    pub async fn set_event_status(
        &self,
        event_id: i64,
        status: EventStatus,
    ) -> Result<bool, StoreError> {
        let k = self.keys.event(event_id);
        let reply = self
            .eval(
                &SET_EVENT_STATUS,
                &self.set_event_status,
                vec![k.event()],
                vec![status.as_str().to_string()],
            )
            .await?;
        reply
            .as_i64()
            .map(|changed| changed == 1)
            .ok_or_else(|| reply_error(&SET_EVENT_STATUS, &reply))
    }
}

/// `place_hold.lua`'s KEYS and ARGV for `req`, in its header's order. The
/// Idempotency-Key is the only text from the client in either; the KEYS[8]
/// placeholder `-` of a request without one is never touched by the script.
fn place_hold_call(keys: &Keys, req: &PlaceHold<'_>) -> (Vec<String>, Vec<String>) {
    let k = keys.event(req.event_id);
    let idem = req.idempotency_key.unwrap_or("");
    let names = vec![
        k.event(),
        k.seats(),
        k.available(),
        k.lock(req.seat_id),
        k.holds(),
        k.hold(req.booking_id),
        k.user_holds(req.user_id),
        k.idempotency(req.user_id, if idem.is_empty() { "-" } else { idem }),
        k.outbox(),
        k.seq(),
        k.outbox_announced(),
        k.room_admitted(),
        k.room_caps(),
    ];
    let args = vec![
        req.booking_id.to_string(),
        req.seat_id.to_string(),
        req.user_id.to_string(),
        req.ttl_ms.to_string(),
        req.max_per_user.to_string(),
        idem.to_string(),
        req.idempotency_ttl_ms.to_string(),
        req.outbox_max.to_string(),
        req.traceparent.to_string(),
        keys.activity(),
        req.event_id.to_string(),
    ];
    (names, args)
}

fn parse_hold_outcome(reply: &Value) -> Option<HoldOutcome> {
    let Value::Array(items) = reply else {
        return None;
    };
    let tag = items.first()?.as_str()?;
    let booking = || items.get(1)?.as_string();
    let number = |i: usize| items.get(i)?.as_i64();
    Some(match &*tag {
        "ok" => HoldOutcome::Placed {
            booking_id: booking()?,
            expires_ms: number(2)?,
        },
        "replay" => HoldOutcome::Replayed {
            booking_id: booking()?,
            expires_ms: number(2)?,
        },
        "own" => HoldOutcome::Own {
            booking_id: booking()?,
            expires_ms: number(2)?,
        },
        "mismatch" => HoldOutcome::IdempotencyMismatch,
        "no_event" => HoldOutcome::NoEvent,
        "no_seat" => HoldOutcome::NoSeat,
        "taken" => HoldOutcome::Taken,
        "limit" => HoldOutcome::UserLimit {
            retry_after_ms: number(1)?,
        },
        "busy" => HoldOutcome::Busy,
        "not_admitted" => HoldOutcome::NotAdmitted,
        "collision" => HoldOutcome::IdCollision,
        _ => return None,
    })
}

fn parse_transition(reply: &Value) -> Option<Transition> {
    let Value::Array(items) = reply else {
        return None;
    };
    Some(match &*items.first()?.as_str()? {
        "ok" => Transition::Done {
            status: BookingStatus::parse(&items.get(1)?.as_str()?).ok()?,
            seat_id: items.get(2)?.as_i64()?,
            expires_ms: items.get(3)?.as_i64()?,
            confirmed_ms: items.get(4).and_then(Value::as_i64),
        },
        "not_found" => Transition::NotFound,
        "confirmed" => Transition::Confirmed,
        "gone" => Transition::Gone(BookingStatus::parse(&items.get(1)?.as_str()?).ok()?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{bookings::valid_idempotency_key, telemetry::context::normalize};

    /// The highest `<what>[n]` the script's header mentions.
    fn declared(source: &str, what: &str) -> usize {
        let header = source.split("]]").next().unwrap();
        header
            .match_indices(what)
            .filter_map(|(at, _)| {
                let rest = &header[at + what.len()..];
                rest[..rest.find(']')?].parse::<usize>().ok()
            })
            .max()
            .unwrap_or(0)
    }

    /// The part of a key Redis Cluster hashes: between the first `{` and the
    /// next `}`, when not empty; else the whole key.
    fn hash_tag(key: &str) -> &str {
        key.find('{')
            .and_then(|open| {
                let close = key[open + 1..].find('}')? + open + 1;
                (close > open + 1).then(|| &key[open + 1..close])
            })
            .unwrap_or(key)
    }

    /// Idempotency-Keys the gateway lets through: its own rule, as the route applies it.
    fn idempotency_key() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(
            prop_oneof!["[A-Za-z0-9._:-]{1,128}", "[-:.]{1,4}", "[0-9:]{1,6}"]
                .prop_filter("the route refuses it", |k| valid_idempotency_key(k)),
        )
    }

    fn traceparent() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}"
                .prop_filter_map("the route drops it", |t| normalize(&t)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the client sent, the script gets as many KEYS and ARGV as its
        /// header lists, all KEYS in the event's cluster slot, and the values
        /// back unchanged in their places.
        #[test]
        fn place_hold_arguments_follow_the_header_and_stay_in_the_event_slot(
            event_id in any::<i64>(),
            seat_id in any::<i64>(),
            user_id in 1..=i64::MAX,
            idem in idempotency_key(),
            traceparent in traceparent(),
            booking in any::<u128>(),
        ) {
            let booking_id = uuid::Uuid::from_u128(booking).to_string();
            let req = PlaceHold {
                event_id,
                seat_id,
                user_id,
                booking_id: &booking_id,
                ttl_ms: 600_000,
                max_per_user: 8,
                idempotency_key: idem.as_deref(),
                idempotency_ttl_ms: 86_400_000,
                outbox_max: 200_000,
                traceparent: &traceparent,
            };
            let (names, args) = place_hold_call(&Keys::new("hg:"), &req);
            prop_assert_eq!(names.len(), PLACE_HOLD.keys);
            prop_assert_eq!(args.len(), declared(PLACE_HOLD.source, "ARGV["));
            let slot = format!("e:{event_id}");
            for name in &names {
                prop_assert_eq!(hash_tag(name), slot.as_str(), "{}", name);
            }
            prop_assert_eq!(&args[0], &booking_id);
            prop_assert_eq!(args[1].parse::<i64>().unwrap(), seat_id);
            prop_assert_eq!(args[2].parse::<i64>().unwrap(), user_id);
            prop_assert_eq!(&args[5], idem.as_deref().unwrap_or(""));
            prop_assert_eq!(&args[8], &traceparent);
            prop_assert_eq!(args[10].parse::<i64>().unwrap(), event_id);
        }

        /// Two requests share an idempotency record only when they are the same
        /// user with the same key, and a seat lock only for the same seat.
        #[test]
        fn client_values_never_share_a_key_by_accident(
            a in (1..=i64::MAX, idempotency_key(), any::<i64>()),
            b in (1..=i64::MAX, idempotency_key(), any::<i64>()),
        ) {
            let ((user_a, Some(key_a), seat_a), (user_b, Some(key_b), seat_b)) = (a, b) else {
                return Ok(());
            };
            let k = Keys::new("hg:").event(1);
            let same_record = k.idempotency(user_a, &key_a) == k.idempotency(user_b, &key_b);
            prop_assert_eq!(same_record, user_a == user_b && key_a == key_b);
            prop_assert_eq!(k.lock(seat_a) == k.lock(seat_b), seat_a == seat_b);
        }
    }
}
