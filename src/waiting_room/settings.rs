//! A waiting room's settings: PostgreSQL's `waiting_rooms` row, read by the
//! loader at each sync, and the operator's changes to it at run time
//! (`GET`/`PATCH /waiting-room/:id/settings`).
//!
//! A change is written to PostgreSQL first, so every gateway's next sync agrees
//! with it, then to Redis at once, so it takes effect on the next visit without
//! waiting for a sync. Both writes of Redis (the loader's and the operator's) go
//! through `set_room.lua`, which refuses settings older than the ones it has:
//! a sync that read the row just before the change cannot undo it. The queue
//! and the admissions are other keys: nobody loses a place.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    bookings::timestamp,
    holds::{RoomSettings, RoomWrite, RoomWritten, Store, StoreError},
};

/// The highest admission rate, per second (the migration's CHECK).
pub const MAX_RATE: f64 = 100_000.0;

/// Every column of a room, in the order [`from_row`] reads them.
const COLUMNS: &str = "event_id,
        (extract(epoch FROM opens_at) * 1000)::bigint,
        (extract(epoch FROM starts_at) * 1000)::bigint,
        admit_per_sec, max_active, idle_ms, session_cap_ms, grace_ms,
        seed, paused, proof_bits, version";

fn from_row(row: &tokio_postgres::Row) -> (i64, RoomSettings) {
    let room = RoomSettings {
        opens_ms: row.get(1),
        starts_ms: row.get(2),
        rate: row.get(3),
        max_active: row.get::<_, i32>(4) as u32,
        idle_ms: row.get::<_, i32>(5).into(),
        cap_ms: row.get::<_, i32>(6).into(),
        grace_ms: row.get::<_, i32>(7).into(),
        seed: row.get(8),
        paused: row.get(9),
        proof_bits: row.get::<_, i16>(10) as u8,
        version: row.get(11),
    };
    (row.get(0), room)
}

/// Every waiting room PostgreSQL has, by event.
pub async fn all(
    client: &tokio_postgres::Client,
) -> Result<HashMap<i64, RoomSettings>, tokio_postgres::Error> {
    let rows = client
        .query(&format!("SELECT {COLUMNS} FROM waiting_rooms"), &[])
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("event {0} has no waiting room (unknown, or open to every buyer)")]
    NoRoom(i64),
    #[error("no PostgreSQL connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("PostgreSQL failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// PostgreSQL has the change; Redis did not take it (every gateway's next
    /// sync writes it there).
    #[error("the change is saved, Redis did not take it yet: {0}")]
    Unapplied(StoreError),
}

/// What an operator changes; `None` keeps the setting.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Change {
    pub admission_rate: Option<f64>,
    pub max_active: Option<i32>,
    pub paused: Option<bool>,
}

impl Change {
    /// Reads a `PATCH` body: an object of at least one of `admissionRate` (a
    /// number above 0, at most [`MAX_RATE`]), `maxActive` (an integer from 1 to
    /// 2^31 - 1) and `paused` (a boolean), and nothing else, so a misspelt
    /// setting is refused rather than silently not changed.
    pub fn parse(body: &Map<String, Value>) -> Result<Change, String> {
        let mut change = Change::default();
        for (name, value) in body {
            match name.as_str() {
                "admissionRate" => {
                    let rate = value.as_f64().filter(|r| *r > 0.0 && *r <= MAX_RATE);
                    change.admission_rate = Some(rate.ok_or_else(|| {
                        format!("admissionRate must be a number above 0 and at most {MAX_RATE}")
                    })?);
                }
                "maxActive" => {
                    let max = value
                        .as_i64()
                        .filter(|m| *m >= 1)
                        .and_then(|m| i32::try_from(m).ok());
                    change.max_active = Some(max.ok_or_else(|| {
                        format!("maxActive must be an integer from 1 to {}", i32::MAX)
                    })?);
                }
                "paused" => {
                    change.paused = Some(value.as_bool().ok_or("paused must be true or false")?);
                }
                other => {
                    return Err(format!(
                        "{other:?} is not a setting an operator changes (admissionRate, \
                         maxActive, paused)"
                    ));
                }
            }
        }
        if change == Change::default() {
            return Err("nothing to change: give admissionRate, maxActive or paused".into());
        }
        Ok(change)
    }
}

/// A room's settings as the operator API answers them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsView {
    pub event_id: i64,
    pub opens_at: String,
    pub starts_at: String,
    /// Admissions per second.
    pub admission_rate: f64,
    pub max_active: u32,
    pub paused: bool,
    pub idle_seconds: f64,
    pub session_cap_seconds: f64,
    pub grace_seconds: f64,
    pub proof_bits: u8,
    /// Grows with every change.
    pub version: i64,
    /// Redis runs the room with these settings (or newer) now; false while
    /// the event is not loaded (not on sale), which takes them when it is.
    pub live: bool,
}

impl SettingsView {
    fn of(event_id: i64, room: &RoomSettings, live: bool) -> Self {
        SettingsView {
            event_id,
            opens_at: timestamp(room.opens_ms),
            starts_at: timestamp(room.starts_ms),
            admission_rate: room.rate,
            max_active: room.max_active,
            paused: room.paused,
            idle_seconds: room.idle_ms as f64 / 1_000.0,
            session_cap_seconds: room.cap_ms as f64 / 1_000.0,
            grace_seconds: room.grace_ms as f64 / 1_000.0,
            proof_bits: room.proof_bits,
            version: room.version,
            live,
        }
    }
}

/// The room's settings now, and whether Redis runs it with them.
pub async fn read(
    pg: &deadpool_postgres::Pool,
    store: &Store,
    event_id: i64,
) -> Result<SettingsView, SettingsError> {
    let client = pg.get().await?;
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM waiting_rooms WHERE event_id = $1"),
            &[&event_id],
        )
        .await?
        .ok_or(SettingsError::NoRoom(event_id))?;
    drop(client);
    let (_, room) = from_row(&row);
    let live = store
        .room_version(event_id)
        .await?
        .is_some_and(|v| v >= room.version);
    Ok(SettingsView::of(event_id, &room, live))
}

/// Applies an operator's change: PostgreSQL, then Redis.
#[tracing::instrument(skip_all, fields(event_id))]
pub async fn change(
    pg: &deadpool_postgres::Pool,
    store: &Store,
    event_id: i64,
    change: Change,
) -> Result<SettingsView, SettingsError> {
    let client = pg.get().await?;
    let row = client
        .query_opt(
            &format!(
                "UPDATE waiting_rooms
                    SET admit_per_sec = coalesce($2, admit_per_sec),
                        max_active = coalesce($3, max_active),
                        paused = coalesce($4, paused)
                  WHERE event_id = $1
              RETURNING {COLUMNS}"
            ),
            &[
                &event_id,
                &change.admission_rate,
                &change.max_active,
                &change.paused,
            ],
        )
        .await?
        .ok_or(SettingsError::NoRoom(event_id))?;
    drop(client);
    let (_, room) = from_row(&row);
    let written = store
        .set_room(event_id, &room, RoomWrite::Change)
        .await
        .map_err(SettingsError::Unapplied)?;
    tracing::info!(
        event_id,
        rate = room.rate,
        max_active = room.max_active,
        paused = room.paused,
        version = room.version,
        ?written,
        "waiting room changed by the operator"
    );
    // Stale: another change came after this one and is in Redis already.
    let live = written != RoomWritten::NoRoom;
    Ok(SettingsView::of(event_id, &room, live))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(body: Value) -> Result<Change, String> {
        Change::parse(body.as_object().unwrap())
    }

    #[test]
    fn a_change_names_only_known_settings_within_the_schemas_bounds() {
        assert_eq!(
            parse(json!({"admissionRate": 50, "paused": false})),
            Ok(Change {
                admission_rate: Some(50.0),
                max_active: None,
                paused: Some(false),
            })
        );
        assert_eq!(
            parse(json!({"maxActive": 2147483647})).unwrap().max_active,
            Some(i32::MAX)
        );
        assert_eq!(
            parse(json!({"admissionRate": 0.001}))
                .unwrap()
                .admission_rate,
            Some(0.001)
        );
        for bad in [
            json!({}),
            json!({"admissionRate": 0}),
            json!({"admissionRate": -1}),
            json!({"admissionRate": 100000.5}),
            json!({"admissionRate": "50"}),
            json!({"admissionRate": null}),
            json!({"maxActive": 0}),
            json!({"maxActive": 2147483648_i64}),
            json!({"maxActive": 1.5}),
            json!({"maxActive": 10.0}),
            json!({"paused": "true"}),
            json!({"paused": 1}),
            json!({"rate": 50}),
            json!({"paused": true, "seed": "x"}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }
}
