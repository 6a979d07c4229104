//! An event's waiting room in Redis: its settings, written by the loader and
//! the operator API (`set_room.lua`, never going back to older ones), and one
//! visit of a buyer (join, or look at one's place), one script call each.

use fred::{
    interfaces::{HashesInterface, KeysInterface, ListInterface, SortedSetsInterface},
    types::Value,
};

use super::{EventKeys, SET_ROOM, Store, StoreError, WAITING_ROOM, keys::event_field, reply_error};

/// Users the bookkeeping of one visit moves at most (admitted, dropped).
const STEP: u32 = 100;

/// How a waiting room runs, as the loader writes it (see `waiting_room.lua`).
#[derive(Debug, Clone, PartialEq)]
pub struct RoomSettings {
    /// Joining opens (ms since epoch): the pre-queue.
    pub opens_ms: i64,
    /// Admission starts (ms); the pre-queue's order is drawn from `seed`.
    pub starts_ms: i64,
    /// Admissions per second.
    pub rate: f64,
    pub max_active: u32,
    /// An admission ends this long after its buyer's last visit or hold.
    pub idle_ms: i64,
    /// ... and this long after it began, whatever the buyer does.
    pub cap_ms: i64,
    /// A queued buyer who does not visit for this long loses the place.
    pub grace_ms: i64,
    pub seed: String,
    pub paused: bool,
    /// Leading zero bits a join's proof of work must have (0: none); checked by
    /// the gateway, not the script.
    pub proof_bits: u8,
    /// `waiting_rooms.version`: every change of the row gets a higher one.
    pub version: i64,
}

/// Who writes a room's settings (see `set_room.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomWrite {
    /// The loader: the room is made when Redis does not have it.
    Load,
    /// The operator API: only a room Redis has (its event loaded) is changed.
    Change,
}

/// What a settings write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomWritten {
    Set,
    /// Redis has newer settings (written by another process since): kept.
    Stale,
    /// A change of a room Redis does not have: the loader writes it at the load.
    NoRoom,
}

/// Join the queue, or only look at one's place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisitKind {
    Join,
    Look,
}

impl VisitKind {
    /// As `waiting_room.lua` and the metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            VisitKind::Join => "join",
            VisitKind::Look => "look",
        }
    }
}

/// What one visit found.
#[derive(Debug, Clone, PartialEq)]
pub enum Visit {
    /// May book until `ends_ms` (renewed by each visit and hold), never past `cap_ms`.
    Admitted {
        ends_ms: i64,
        cap_ms: i64,
    },
    /// `position` (1: next) of `queued`; `rate` admissions per second, measured;
    /// the place is lost after `grace_ms` without a visit; nobody is admitted
    /// while `paused`.
    Queued {
        position: u64,
        queued: u64,
        rate: f64,
        seed: String,
        grace_ms: i64,
        paused: bool,
    },
    /// Joined before the start: the order is drawn at `starts_ms`.
    PreQueue {
        starts_ms: i64,
        queued: u64,
        rate: f64,
        seed: String,
        grace_ms: i64,
        paused: bool,
    },
    /// A look by a buyer who is not in the queue (never joined, or lost the place).
    NotQueued,
    NotOpen {
        opens_ms: i64,
    },
    /// The event admits buyers without a waiting room, or is not loaded.
    NoRoom,
}

impl Store {
    /// Writes an event's waiting-room settings, unless Redis has newer ones
    /// (the queue, admissions and bucket are kept).
    pub async fn set_room(
        &self,
        event_id: i64,
        room: &RoomSettings,
        write: RoomWrite,
    ) -> Result<RoomWritten, StoreError> {
        let mode = match write {
            RoomWrite::Load => "load",
            RoomWrite::Change => "change",
        };
        let mut args = vec![mode.to_string(), room.version.to_string()];
        for (field, value) in [
            ("opensAt", room.opens_ms.to_string()),
            ("startsAt", room.starts_ms.to_string()),
            ("rate", room.rate.to_string()),
            ("maxActive", room.max_active.to_string()),
            ("idleMs", room.idle_ms.to_string()),
            ("capMs", room.cap_ms.to_string()),
            ("graceMs", room.grace_ms.to_string()),
            ("seed", room.seed.clone()),
            ("paused", if room.paused { "1" } else { "0" }.to_string()),
        ] {
            args.extend([field.to_string(), value]);
        }
        let k = self.keys.event(event_id);
        let reply = self
            .eval(&SET_ROOM, &self.set_room, vec![k.room()], args)
            .await?;
        match reply.as_str().as_deref() {
            Some("set") => Ok(RoomWritten::Set),
            Some("stale") => Ok(RoomWritten::Stale),
            Some("no_room") => Ok(RoomWritten::NoRoom),
            _ => Err(reply_error(&SET_ROOM, &reply)),
        }
    }

    /// The version of the settings Redis has for the event's room, if it has one.
    pub async fn room_version(&self, event_id: i64) -> Result<Option<i64>, StoreError> {
        let version: Option<String> = self
            .live_client()?
            .hget(self.keys.event(event_id).room(), "version")
            .await?;
        Ok(version.and_then(|v| v.parse().ok()))
    }

    /// Makes buyers of a loaded event need admission, with sessions idling out
    /// after `idle_ms`; `None` ends it, and the room with its queue goes.
    pub async fn require_admission(
        &self,
        event_id: i64,
        idle_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let k = self.keys.event(event_id);
        match idle_ms {
            Some(idle_ms) => {
                self.client()
                    .hset::<(), _, _>(k.event(), (event_field::ADMISSION, idle_ms))
                    .await?
            }
            None => {
                self.client()
                    .hdel::<(), _, _>(k.event(), event_field::ADMISSION)
                    .await?;
                self.client().del::<(), _>(room_keys(&k)).await?
            }
        }
        Ok(())
    }

    /// One visit of `user_id` to the event's waiting room (see `waiting_room.lua`).
    pub async fn visit_room(
        &self,
        event_id: i64,
        user_id: i64,
        kind: VisitKind,
    ) -> Result<Visit, StoreError> {
        let k = self.keys.event(event_id);
        let reply = self
            .eval(
                &WAITING_ROOM,
                &self.waiting_room,
                room_keys(&k),
                vec![
                    user_id.to_string(),
                    kind.as_str().to_string(),
                    STEP.to_string(),
                ],
            )
            .await?;
        parse_visit(&reply).ok_or_else(|| reply_error(&WAITING_ROOM, &reply))
    }
}

/// Every key of the event's waiting room, in `waiting_room.lua`'s KEYS order.
fn room_keys(k: &EventKeys) -> Vec<String> {
    vec![
        k.room(),
        k.room_queue(),
        k.room_arrivals(),
        k.room_seen(),
        k.room_admitted(),
        k.room_caps(),
        k.room_joined(),
        k.room_waits(),
    ]
}

fn parse_visit(reply: &Value) -> Option<Visit> {
    let Value::Array(items) = reply else {
        return None;
    };
    let int = |i: usize| items.get(i).and_then(Value::as_i64);
    let count = |i: usize| items.get(i).and_then(Value::as_u64);
    let rate = || Some(int(3)? as f64 / 1000.0);
    let seed = || items.get(4)?.as_string();
    let paused = || Some(int(6)? == 1);
    Some(match &*items.first()?.as_str()? {
        "admitted" => Visit::Admitted {
            ends_ms: int(1)?,
            cap_ms: int(2)?,
        },
        "queued" => Visit::Queued {
            position: count(1)?,
            queued: count(2)?,
            rate: rate()?,
            seed: seed()?,
            grace_ms: int(5)?,
            paused: paused()?,
        },
        "pre_queue" => Visit::PreQueue {
            starts_ms: int(1)?,
            queued: count(2)?,
            rate: rate()?,
            seed: seed()?,
            grace_ms: int(5)?,
            paused: paused()?,
        },
        "not_queued" => Visit::NotQueued,
        "not_open" => Visit::NotOpen { opens_ms: int(1)? },
        "no_room" => Visit::NoRoom,
        _ => return None,
    })
}

/// An event's waiting room as a whole, for operators: read in one pipeline,
/// not atomically (a visit between two reads may move a count by one).
#[derive(Debug, Clone, PartialEq)]
pub struct RoomStats {
    pub opens_ms: i64,
    pub starts_ms: i64,
    /// Admissions per second, as set.
    pub rate: f64,
    /// ... and as measured over the last full ten seconds, once there is one.
    pub measured_rate: Option<f64>,
    pub max_active: u64,
    pub paused: bool,
    pub seed: String,
    pub queued: u64,
    /// Admissions live now.
    pub active: u64,
    /// Admissions ever made.
    pub admitted: u64,
    pub out_of_order: u64,
    /// The last admissions' waits from join to admission (ms), newest first.
    pub waits_ms: Vec<i64>,
}

impl Store {
    /// The room's settings and counts, or `None` when the event has no room loaded.
    pub async fn room_stats(
        &self,
        event_id: i64,
        now_ms: i64,
    ) -> Result<Option<RoomStats>, StoreError> {
        let k = self.keys.event(event_id);
        let pipeline = self.client().pipeline();
        pipeline
            .hmget::<(), _, _>(
                k.room(),
                vec![
                    "opensAt",
                    "startsAt",
                    "rate",
                    "measured",
                    "maxActive",
                    "paused",
                    "seed",
                    "admitted",
                    "outOfOrder",
                ],
            )
            .await?;
        pipeline.zcard::<(), _>(k.room_queue()).await?;
        pipeline
            .zcount::<(), _>(k.room_admitted(), now_ms as f64 + 0.5, f64::INFINITY)
            .await?;
        pipeline.lrange::<(), _>(k.room_waits(), 0, -1).await?;
        let replies: Vec<Value> = pipeline.all().await?;
        let bad = || StoreError::Reply {
            call: "room stats pipeline",
            reply: format!("{replies:?}"),
        };
        let [fields, queued, active, waits] = &replies[..] else {
            return Err(bad());
        };
        let fields: Vec<Option<String>> = fields.clone().convert().map_err(|_| bad())?;
        let field = |i: usize| fields.get(i).cloned().flatten();
        let number = |i: usize| field(i).and_then(|v| v.parse::<f64>().ok());
        let Some(opens_ms) = number(0) else {
            return Ok(None);
        };
        Ok(Some(RoomStats {
            opens_ms: opens_ms as i64,
            starts_ms: number(1).ok_or_else(bad)? as i64,
            rate: number(2).ok_or_else(bad)?,
            measured_rate: number(3),
            max_active: number(4).ok_or_else(bad)? as u64,
            paused: field(5).as_deref() == Some("1"),
            seed: field(6).ok_or_else(bad)?,
            admitted: number(7).unwrap_or(0.0) as u64,
            out_of_order: number(8).unwrap_or(0.0) as u64,
            queued: queued.as_u64().ok_or_else(bad)?,
            active: active.as_u64().ok_or_else(bad)?,
            waits_ms: waits.clone().convert().map_err(|_| bad())?,
        }))
    }
}
