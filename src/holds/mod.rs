//! Redis: the key layout ([`keys`]) and the Lua scripts in lua/, one typed call each.
//!
//! Every script is embedded with `include_str!`, run by EVALSHA through fred and
//! loaded again after NOSCRIPT, so a Redis restart or `SCRIPT FLUSH` never breaks
//! the gateway. Replies become Rust values here and nowhere else.

pub mod keys;

use bytes::Bytes;
use fred::{
    interfaces::{ClientLike, HashesInterface, SortedSetsInterface},
    prelude::{Client, Pool},
    types::{Value, scripts::Script},
};

pub use keys::{EventKeys, Keys};

/// A Lua file with the number of KEYS its header declares.
struct ScriptDef {
    name: &'static str,
    source: &'static str,
    keys: usize,
}

const LIST_AVAILABLE: ScriptDef = ScriptDef {
    name: "list_available",
    source: include_str!("../../lua/list_available.lua"),
    keys: 3,
};

const READ_EVENT: ScriptDef = ScriptDef {
    name: "read_event",
    source: include_str!("../../lua/read_event.lua"),
    keys: 2,
};

const PLACE_HOLD: ScriptDef = ScriptDef {
    name: "place_hold",
    source: include_str!("../../lua/place_hold.lua"),
    keys: 10,
};

const SET_EVENT_STATUS: ScriptDef = ScriptDef {
    name: "set_event_status",
    source: include_str!("../../lua/set_event_status.lua"),
    keys: 1,
};

const EXPIRE_HOLD: ScriptDef = ScriptDef {
    name: "expire_hold",
    source: include_str!("../../lua/expire_hold.lua"),
    keys: 7,
};

const CONFIRM_HOLD: ScriptDef = ScriptDef {
    name: "confirm_hold",
    source: include_str!("../../lua/confirm_hold.lua"),
    keys: 6,
};

const CANCEL_HOLD: ScriptDef = ScriptDef {
    name: "cancel_hold",
    source: include_str!("../../lua/cancel_hold.lua"),
    keys: 7,
};

/// How long an ended hold's state stays in Redis for status reads; PostgreSQL answers after.
pub const HOLD_RETENTION_MS: i64 = 3_600_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis did not answer in time or is unreachable; the caller answers 503.
    #[error("redis unavailable: {0}")]
    Unavailable(#[from] fred::error::Error),
    /// A script answered in a shape this code does not know: a bug, not load.
    #[error("unexpected reply from script {script}: {reply}")]
    Reply { script: &'static str, reply: String },
}

/// One page of available seats.
#[derive(Debug, Clone)]
pub struct SeatPage {
    /// Every available seat of the event, not just this page.
    pub count: u64,
    /// Each seat's JSON object, ready to be joined into a response.
    pub seats: Vec<Bytes>,
    /// The id of the page's last seat: `after` for the next page.
    pub last_id: Option<i64>,
}

/// An on-sale event as Redis holds it.
#[derive(Debug, Clone)]
pub struct EventInfo {
    pub name: String,
    pub venue: String,
    pub starts_at: String,
    pub total_seats: u64,
    pub status: String,
    pub available: u64,
}

/// A request to hold a seat, in the order of `place_hold.lua`'s ARGV.
#[derive(Debug, Clone)]
pub struct PlaceHold<'a> {
    pub event_id: i64,
    pub seat_id: i64,
    pub user_id: i64,
    pub booking_id: &'a str,
    pub now_ms: i64,
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
    IdempotencyMismatch,
    NoEvent,
    NoSeat,
    Taken,
    UserLimit {
        retry_after_ms: i64,
    },
    Busy,
}

/// A booking as Redis holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldState {
    pub status: String,
    pub seat_id: i64,
    pub user_id: i64,
    pub expires_ms: i64,
    pub confirmed_ms: Option<i64>,
}

/// What `confirm_hold.lua` or `cancel_hold.lua` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Now (or already) in `status`.
    Done {
        status: String,
        seat_id: i64,
        expires_ms: i64,
        confirmed_ms: Option<i64>,
    },
    /// No booking of this user with this id in Redis.
    NotFound,
    /// Cancelling a CONFIRMED booking.
    Confirmed,
    /// The hold ended otherwise (EXPIRED, CANCELLED).
    Gone(String),
}

/// The Redis side of herdgate: a connection pool, the key layout and the scripts.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    keys: Keys,
    list_available: Script,
    read_event: Script,
    place_hold: Script,
    set_event_status: Script,
    expire_hold: Script,
    confirm_hold: Script,
    cancel_hold: Script,
}

impl Store {
    pub fn new(pool: Pool, keys: Keys) -> Self {
        Store {
            pool,
            keys,
            list_available: Script::from_lua(LIST_AVAILABLE.source),
            read_event: Script::from_lua(READ_EVENT.source),
            place_hold: Script::from_lua(PLACE_HOLD.source),
            set_event_status: Script::from_lua(SET_EVENT_STATUS.source),
            expire_hold: Script::from_lua(EXPIRE_HOLD.source),
            confirm_hold: Script::from_lua(CONFIRM_HOLD.source),
            cancel_hold: Script::from_lua(CANCEL_HOLD.source),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn client(&self) -> &Client {
        self.pool.next()
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.client().ping::<()>(None).await?;
        Ok(())
    }

    /// One page of an event's available seats; `None` when the event is not loaded.
    pub async fn list_available(
        &self,
        event_id: i64,
        after: i64,
        limit: u32,
    ) -> Result<Option<SeatPage>, StoreError> {
        let k = self.keys.event(event_id);
        let reply = self
            .eval(
                &LIST_AVAILABLE,
                &self.list_available,
                vec![k.event(), k.available(), k.seats()],
                vec![after.to_string(), limit.to_string()],
            )
            .await?;
        let bad = || reply_error(&LIST_AVAILABLE, &reply);
        let Value::Array(items) = &reply else {
            return Err(bad());
        };
        match items.first().and_then(Value::as_i64) {
            Some(0) => return Ok(None),
            Some(1) if items.len() >= 3 => {}
            _ => return Err(bad()),
        }
        let count = items[1].as_u64().ok_or_else(bad)?;
        let last_id = items[2].as_i64().ok_or_else(bad)?;
        let seats = items[3..]
            .iter()
            .map(|v| v.as_bytes().map(Bytes::copy_from_slice).ok_or_else(bad))
            .collect::<Result<_, _>>()?;
        Ok(Some(SeatPage {
            count,
            seats,
            last_id: (last_id > 0).then_some(last_id),
        }))
    }

    /// The event as loaded into Redis with its live available count; `None` when
    /// it is not loaded (unknown, or not on sale).
    pub async fn read_event(&self, event_id: i64) -> Result<Option<EventInfo>, StoreError> {
        let k = self.keys.event(event_id);
        let reply = self
            .eval(
                &READ_EVENT,
                &self.read_event,
                vec![k.event(), k.available()],
                Vec::new(),
            )
            .await?;
        let bad = || reply_error(&READ_EVENT, &reply);
        let Value::Array(items) = &reply else {
            return Err(bad());
        };
        if items.is_empty() {
            return Ok(None);
        }
        let [name, venue, starts_at, total, status, available] = &items[..] else {
            return Err(bad());
        };
        let text = |v: &Value| v.as_string().ok_or_else(bad);
        Ok(Some(EventInfo {
            name: text(name)?,
            venue: text(venue)?,
            starts_at: text(starts_at)?,
            total_seats: total.as_u64().ok_or_else(bad)?,
            status: text(status)?,
            available: available.as_u64().ok_or_else(bad)?,
        }))
    }

    /// Holds a seat in one atomic step (one round-trip), or says why not.
    #[tracing::instrument(skip_all, fields(event_id = req.event_id, seat_id = req.seat_id))]
    pub async fn place_hold(&self, req: &PlaceHold<'_>) -> Result<HoldOutcome, StoreError> {
        let k = self.keys.event(req.event_id);
        let idem = req.idempotency_key.unwrap_or("");
        let keys = vec![
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
        ];
        let args = vec![
            req.booking_id.to_string(),
            req.seat_id.to_string(),
            req.user_id.to_string(),
            req.now_ms.to_string(),
            req.ttl_ms.to_string(),
            req.max_per_user.to_string(),
            idem.to_string(),
            req.idempotency_ttl_ms.to_string(),
            req.outbox_max.to_string(),
            req.traceparent.to_string(),
        ];
        let reply = self.eval(&PLACE_HOLD, &self.place_hold, keys, args).await?;
        parse_hold_outcome(&reply).ok_or_else(|| reply_error(&PLACE_HOLD, &reply))
    }

    /// Up to `limit` booking ids of the event whose hold is due at `now_ms`.
    pub async fn due_holds(
        &self,
        event_id: i64,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self
            .client()
            .zrangebyscore(
                self.keys.event(event_id).holds(),
                f64::NEG_INFINITY,
                now_ms as f64,
                false,
                Some((0, i64::from(limit))),
            )
            .await?)
    }

    /// Releases one due hold (see `expire_hold.lua`); true when this call expired it.
    pub async fn expire_hold(
        &self,
        event_id: i64,
        booking_id: &str,
        now_ms: i64,
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
        ];
        let args = vec![
            booking_id.to_string(),
            now_ms.to_string(),
            retention_ms.to_string(),
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
        let owner: Vec<Option<i64>> = self
            .client()
            .hmget(k.hold(booking_id), vec!["seatId", "userId"])
            .await?;
        Ok(match owner.as_slice() {
            [Some(seat), Some(user)] => (*seat, *user),
            _ => (0, 0),
        })
    }

    /// A booking's state while Redis still has it.
    pub async fn read_hold(
        &self,
        event_id: i64,
        booking_id: &str,
    ) -> Result<Option<HoldState>, StoreError> {
        let k = self.keys.event(event_id);
        let fields: std::collections::HashMap<String, String> =
            self.client().hgetall(k.hold(booking_id)).await?;
        let int = |name: &str| fields.get(name).and_then(|v| v.parse::<i64>().ok());
        Ok(
            match (
                fields.get("status"),
                int("seatId"),
                int("userId"),
                int("expiresAt"),
            ) {
                (Some(status), Some(seat_id), Some(user_id), Some(expires_ms)) => Some(HoldState {
                    status: status.clone(),
                    seat_id,
                    user_id,
                    expires_ms,
                    confirmed_ms: int("confirmedAt"),
                }),
                _ => None,
            },
        )
    }

    /// Confirms a user's PENDING hold (see `confirm_hold.lua`).
    pub async fn confirm_hold(
        &self,
        event_id: i64,
        booking_id: &str,
        user_id: i64,
        now_ms: i64,
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
        ];
        let args = vec![
            booking_id.to_string(),
            user_id.to_string(),
            now_ms.to_string(),
            traceparent.to_string(),
        ];
        let reply = self
            .eval(&CONFIRM_HOLD, &self.confirm_hold, keys, args)
            .await?;
        parse_transition(&reply).ok_or_else(|| reply_error(&CONFIRM_HOLD, &reply))
    }

    /// Cancels a user's PENDING hold (see `cancel_hold.lua`).
    pub async fn cancel_hold(
        &self,
        event_id: i64,
        booking_id: &str,
        user_id: i64,
        now_ms: i64,
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
        ];
        let args = vec![
            booking_id.to_string(),
            user_id.to_string(),
            now_ms.to_string(),
            traceparent.to_string(),
            HOLD_RETENTION_MS.to_string(),
        ];
        let reply = self
            .eval(&CANCEL_HOLD, &self.cancel_hold, keys, args)
            .await?;
        parse_transition(&reply).ok_or_else(|| reply_error(&CANCEL_HOLD, &reply))
    }

    /// Sets a loaded event's status; true when it changed.
    pub async fn set_event_status(&self, event_id: i64, status: &str) -> Result<bool, StoreError> {
        let k = self.keys.event(event_id);
        let reply = self
            .eval(
                &SET_EVENT_STATUS,
                &self.set_event_status,
                vec![k.event()],
                vec![status.to_string()],
            )
            .await?;
        reply
            .as_i64()
            .map(|changed| changed == 1)
            .ok_or_else(|| reply_error(&SET_EVENT_STATUS, &reply))
    }

    async fn eval(
        &self,
        def: &ScriptDef,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, StoreError> {
        debug_assert_eq!(keys.len(), def.keys, "{} takes {} keys", def.name, def.keys);
        Ok(script
            .evalsha_with_reload::<Value, _, _>(self.client(), keys, args)
            .await?)
    }
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
        "mismatch" => HoldOutcome::IdempotencyMismatch,
        "no_event" => HoldOutcome::NoEvent,
        "no_seat" => HoldOutcome::NoSeat,
        "taken" => HoldOutcome::Taken,
        "limit" => HoldOutcome::UserLimit {
            retry_after_ms: number(1)?,
        },
        "busy" => HoldOutcome::Busy,
        _ => return None,
    })
}

fn parse_transition(reply: &Value) -> Option<Transition> {
    let Value::Array(items) = reply else {
        return None;
    };
    Some(match &*items.first()?.as_str()? {
        "ok" => Transition::Done {
            status: items.get(1)?.as_string()?,
            seat_id: items.get(2)?.as_i64()?,
            expires_ms: items.get(3)?.as_i64()?,
            confirmed_ms: items.get(4).and_then(Value::as_i64),
        },
        "not_found" => Transition::NotFound,
        "confirmed" => Transition::Confirmed,
        "gone" => Transition::Gone(items.get(1)?.as_string()?),
        _ => return None,
    })
}

fn reply_error(def: &ScriptDef, reply: &Value) -> StoreError {
    StoreError::Reply {
        script: def.name,
        reply: format!("{reply:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The highest `KEYS[n]` a script's header mentions.
    fn declared_keys(source: &str) -> usize {
        let header = source.split("]]").next().unwrap();
        header
            .match_indices("KEYS[")
            .filter_map(|(at, _)| {
                let rest = &header[at + 5..];
                rest[..rest.find(']')?].parse::<usize>().ok()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn each_wrapper_passes_as_many_keys_as_its_header_lists() {
        for def in [
            &LIST_AVAILABLE,
            &READ_EVENT,
            &PLACE_HOLD,
            &SET_EVENT_STATUS,
            &EXPIRE_HOLD,
            &CONFIRM_HOLD,
            &CANCEL_HOLD,
        ] {
            assert!(def.source.starts_with(&format!("--[[ {}:", def.name)));
            assert_eq!(declared_keys(def.source), def.keys, "{}", def.name);
        }
    }
}
