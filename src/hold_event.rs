//! The hold event: what a script appends to the outbox, the relay publishes to
//! RabbitMQ and the writer applies to PostgreSQL. Its JSON is a public contract
//! (other services bind their own queues), documented in docs/data.md; fields are
//! only ever added, and `schemaVersion` says which set a message has.
//!
//! The relay publishes hold events in batches ([`HoldBatch`], schema 2): one
//! message carries the events of one on-sale event and one type, in outbox
//! order, so one confirm, one queue append and one delivery cover many holds.
//! Each of its `events` is a schema-1 hold event, the shape a message had before
//! batches; [`parse_message`] reads either.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::status::BookingStatus;

/// The schema of one hold event (and of a message carrying only one).
pub const SCHEMA_VERSION: u32 = 1;
/// The schema of a message carrying a batch of hold events.
pub const BATCH_SCHEMA_VERSION: u32 = 2;

/// One change of one booking, carrying the booking's whole state after it, so
/// events can be applied in any order: the highest `version` wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldEvent {
    pub schema_version: u32,
    /// `hold.placed`, `hold.confirmed`, `hold.cancelled` or `hold.expired`.
    #[serde(rename = "type")]
    pub kind: String,
    pub booking_id: Uuid,
    pub event_id: i64,
    pub seat_id: i64,
    pub user_id: i64,
    pub status: BookingStatus,
    /// Per booking, 1 when placed, one more per change.
    pub version: i64,
    /// Per event, increasing with every change Redis made: orders bookings of one seat.
    pub seq: i64,
    pub expires_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<DateTime<Utc>>,
    pub occurred_at: DateTime<Utc>,
    /// W3C trace context of the request that caused the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The outbox entry the relay published this event from: the writer
    /// deletes it once the event is in PostgreSQL. Other consumers ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_id: Option<String>,
}

/// The one field of an outbox entry: the event as one line of space-separated
/// values, `<type> <bookingId> <seatId> <userId> <status> <version> <seq>
/// <expiresAt> <occurredAt> <confirmedAt> <traceparent>`, times in ms since the
/// epoch, `-` for no confirmedAt or traceparent. One field instead of one per
/// value makes every stream operation on the entry cheaper (XADD, the relay's
/// XREADGROUP, the writer's XDEL) and its reply one string to parse.
pub const OUTBOX_FIELD: &str = "event";

/// An outbox entry's values, still as text.
struct OutboxValues<'a> {
    kind: &'a str,
    booking_id: &'a str,
    seat_id: &'a str,
    user_id: &'a str,
    status: &'a str,
    version: &'a str,
    seq: &'a str,
    expires_at: &'a str,
    occurred_at: &'a str,
    confirmed_at: Option<&'a str>,
    traceparent: Option<&'a str>,
}

impl<'a> OutboxValues<'a> {
    /// From the entry's [`OUTBOX_FIELD`] line.
    fn from_line(line: &'a str) -> Result<Self, String> {
        let values: Vec<&str> = line.split(' ').collect();
        let [
            kind,
            booking_id,
            seat_id,
            user_id,
            status,
            version,
            seq,
            expires_at,
            occurred_at,
            confirmed_at,
            traceparent,
        ] = values[..]
        else {
            return Err(format!(
                "outbox entry has {} values, not 11: {line}",
                values.len()
            ));
        };
        let given = |value: &'a str| (value != "-").then_some(value);
        Ok(OutboxValues {
            kind,
            booking_id,
            seat_id,
            user_id,
            status,
            version,
            seq,
            expires_at,
            occurred_at,
            confirmed_at: given(confirmed_at),
            traceparent: given(traceparent),
        })
    }

    /// From an entry with a field per value, as the scripts wrote them before
    /// [`OUTBOX_FIELD`]: an outbox written by an older gateway still drains.
    fn from_fields(fields: &'a HashMap<String, String>) -> Result<Self, String> {
        let get = |name: &str| {
            fields
                .get(name)
                .map(String::as_str)
                .ok_or_else(|| format!("outbox entry has no {name}"))
        };
        Ok(OutboxValues {
            kind: get("type")?,
            booking_id: get("bookingId")?,
            seat_id: get("seatId")?,
            user_id: get("userId")?,
            status: get("status")?,
            version: get("version")?,
            seq: get("seq")?,
            expires_at: get("expiresAt")?,
            occurred_at: get("occurredAt")?,
            confirmed_at: fields.get("confirmedAt").map(String::as_str),
            traceparent: fields
                .get("traceparent")
                .map(String::as_str)
                .filter(|t| !t.is_empty()),
        })
    }

    fn into_event(self, event_id: i64, id: &str) -> Result<HoldEvent, String> {
        let int = |name: &str, value: &str| {
            value
                .parse::<i64>()
                .map_err(|e| format!("outbox field {name}: {e}"))
        };
        let time = |name: &str, value: &str| -> Result<DateTime<Utc>, String> {
            let ms = int(name, value)?;
            Utc.timestamp_millis_opt(ms)
                .single()
                .ok_or_else(|| format!("outbox field {name}: {ms} is no time"))
        };
        let event = HoldEvent {
            schema_version: SCHEMA_VERSION,
            kind: self.kind.to_string(),
            booking_id: self
                .booking_id
                .parse()
                .map_err(|e| format!("outbox field bookingId: {e}"))?,
            event_id,
            seat_id: int("seatId", self.seat_id)?,
            user_id: int("userId", self.user_id)?,
            status: BookingStatus::parse(self.status)
                .map_err(|e| format!("outbox field status: {e}"))?,
            version: int("version", self.version)?,
            seq: int("seq", self.seq)?,
            expires_at: time("expiresAt", self.expires_at)?,
            confirmed_at: self
                .confirmed_at
                .map(|at| time("confirmedAt", at))
                .transpose()?,
            occurred_at: time("occurredAt", self.occurred_at)?,
            traceparent: self.traceparent.map(str::to_string),
            outbox_id: Some(id.to_string()),
        };
        event.validate()?;
        Ok(event)
    }
}

impl HoldEvent {
    /// Builds the event from outbox entry `id` and its fields.
    pub fn from_outbox(
        event_id: i64,
        id: &str,
        fields: &HashMap<String, String>,
    ) -> Result<Self, String> {
        let values = match fields.get(OUTBOX_FIELD) {
            Some(line) => OutboxValues::from_line(line)?,
            None => OutboxValues::from_fields(fields)?,
        };
        values.into_event(event_id, id)
    }

    /// Checks what serde cannot: the event is internally consistent.
    pub fn validate(&self) -> Result<(), String> {
        if self.schema_version == 0 || self.schema_version > SCHEMA_VERSION {
            return Err(format!("unknown schemaVersion {}", self.schema_version));
        }
        if self.kind != self.status.event_type() {
            return Err(format!(
                "type {} does not fit status {}",
                self.kind,
                self.status.as_str()
            ));
        }
        if self.event_id <= 0 || self.seat_id <= 0 || self.user_id <= 0 {
            return Err("eventId, seatId and userId must be positive".into());
        }
        if self.version <= 0 || self.seq <= 0 {
            return Err("version and seq must be positive".into());
        }
        if (self.status == BookingStatus::Confirmed) != self.confirmed_at.is_some() {
            return Err("confirmedAt is set exactly when the status is CONFIRMED".into());
        }
        Ok(())
    }
}

/// Several hold events of one on-sale event and one type, in outbox order:
/// the message the relay publishes (schema 2), routed by `type` as a single
/// event is. The events of one booking are never split out of order: a booking
/// has one `hold.placed` and at most one later event, and the relay publishes a
/// round's `hold.placed` batch before its other batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldBatch {
    pub schema_version: u32,
    /// The type every event of the batch has.
    #[serde(rename = "type")]
    pub kind: String,
    pub event_id: i64,
    pub events: Vec<HoldEvent>,
}

impl HoldBatch {
    pub fn new(kind: &str, event_id: i64, events: Vec<HoldEvent>) -> Self {
        HoldBatch {
            schema_version: BATCH_SCHEMA_VERSION,
            kind: kind.to_string(),
            event_id,
            events,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.schema_version != BATCH_SCHEMA_VERSION {
            return Err(format!("batch has schemaVersion {}", self.schema_version));
        }
        if self.events.is_empty() {
            return Err("batch has no events".into());
        }
        for event in &self.events {
            event.validate()?;
            if event.kind != self.kind || event.event_id != self.event_id {
                return Err(format!(
                    "batch of {} for event {} holds a {} of event {}",
                    self.kind, self.event_id, event.kind, event.event_id
                ));
            }
        }
        Ok(())
    }
}

/// The hold events of one message from the queue: a batch (schema 2) or a
/// single event (schema 1, as published before batches).
pub fn parse_message(data: &[u8]) -> Result<Vec<HoldEvent>, String> {
    #[derive(Deserialize)]
    struct Schema {
        #[serde(rename = "schemaVersion")]
        version: u32,
    }
    let schema: Schema =
        serde_json::from_slice(data).map_err(|e| format!("not a hold event message: {e}"))?;
    if schema.version == BATCH_SCHEMA_VERSION {
        let batch: HoldBatch =
            serde_json::from_slice(data).map_err(|e| format!("not a hold event batch: {e}"))?;
        batch.validate()?;
        return Ok(batch.events);
    }
    let event: HoldEvent =
        serde_json::from_slice(data).map_err(|e| format!("not a hold event: {e}"))?;
    event.validate()?;
    Ok(vec![event])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> HashMap<String, String> {
        [
            ("type", "hold.placed"),
            ("bookingId", "0190b3c4-0000-7000-8000-000000000001"),
            ("seatId", "12"),
            ("userId", "3"),
            ("status", "PENDING"),
            ("version", "1"),
            ("seq", "5"),
            ("expiresAt", "1800000600000"),
            ("occurredAt", "1800000000000"),
            ("traceparent", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn an_outbox_entry_becomes_a_message_and_back() {
        let event = HoldEvent::from_outbox(1, "1800000000000-0", &fields()).unwrap();
        assert_eq!(event.status, BookingStatus::Pending);
        assert_eq!(event.traceparent, None);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "hold.placed");
        assert_eq!(json["schemaVersion"], 1);
        assert_eq!(json["expiresAt"], "2027-01-15T08:10:00Z");
        let back: HoldEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn a_batch_and_a_single_event_both_parse_into_events() {
        let event = HoldEvent::from_outbox(1, "1800000000000-0", &fields()).unwrap();
        let mut second = event.clone();
        second.booking_id = Uuid::now_v7();
        let batch = HoldBatch::new("hold.placed", 1, vec![event.clone(), second.clone()]);
        let json = serde_json::to_vec(&batch).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["schemaVersion"], 2);
        assert_eq!(value["events"][1]["schemaVersion"], 1);
        assert_eq!(parse_message(&json).unwrap(), vec![event.clone(), second]);
        let single = serde_json::to_vec(&event).unwrap();
        assert_eq!(parse_message(&single).unwrap(), vec![event]);
    }

    #[test]
    fn a_batch_that_mixes_types_or_events_is_refused() {
        let event = HoldEvent::from_outbox(1, "1800000000000-0", &fields()).unwrap();
        let other_event = HoldBatch::new("hold.placed", 2, vec![event.clone()]);
        let other_type = HoldBatch::new("hold.expired", 1, vec![event]);
        let empty = HoldBatch::new("hold.placed", 1, Vec::new());
        for batch in [other_event, other_type, empty] {
            let json = serde_json::to_vec(&batch).unwrap();
            assert!(parse_message(&json).is_err(), "{batch:?}");
        }
        assert!(parse_message(b"{\"schemaVersion\": 3}").is_err());
        assert!(parse_message(b"not json").is_err());
    }

    fn line(line: &str) -> HashMap<String, String> {
        HashMap::from([(OUTBOX_FIELD.to_string(), line.to_string())])
    }

    #[test]
    fn an_entry_of_one_line_reads_as_the_same_event_as_one_of_fields() {
        let from_fields = HoldEvent::from_outbox(1, "1800000000000-0", &fields()).unwrap();
        let from_line = HoldEvent::from_outbox(
            1,
            "1800000000000-0",
            &line(
                "hold.placed 0190b3c4-0000-7000-8000-000000000001 12 3 PENDING 1 5 \
                 1800000600000 1800000000000 - -",
            ),
        )
        .unwrap();
        assert_eq!(from_line, from_fields);
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let confirmed = HoldEvent::from_outbox(
            1,
            "1800000000001-0",
            &line(&format!(
                "hold.confirmed 0190b3c4-0000-7000-8000-000000000001 12 3 CONFIRMED 2 6 \
                 1800000600000 1800000060000 1800000060000 {traceparent}"
            )),
        )
        .unwrap();
        assert_eq!(confirmed.status, BookingStatus::Confirmed);
        assert_eq!(confirmed.confirmed_at, Some(confirmed.occurred_at));
        assert_eq!(confirmed.traceparent.as_deref(), Some(traceparent));
    }

    #[test]
    fn a_line_with_a_value_missing_or_wrong_is_refused() {
        for wrong in [
            "hold.placed 0190b3c4-0000-7000-8000-000000000001 12 3 PENDING 1 5 1800000600000 1800000000000 -",
            "hold.placed 0190b3c4-0000-7000-8000-000000000001 twelve 3 PENDING 1 5 1800000600000 1800000000000 - -",
            "hold.expired 0190b3c4-0000-7000-8000-000000000001 12 3 PENDING 1 5 1800000600000 1800000000000 - -",
            "hold.placed 0190b3c4-0000-7000-8000-000000000001 12 3 PENDING 1 5 1800000600000 1800000000000 1800000000000 -",
        ] {
            assert!(
                HoldEvent::from_outbox(1, "1800000000000-0", &line(wrong)).is_err(),
                "{wrong}"
            );
        }
    }

    #[test]
    fn inconsistent_entries_are_refused() {
        let mut wrong_type = fields();
        wrong_type.insert("type".into(), "hold.expired".into());
        assert!(HoldEvent::from_outbox(1, "1800000000000-0", &wrong_type).is_err());
        let mut no_seat = fields();
        no_seat.remove("seatId");
        assert!(HoldEvent::from_outbox(1, "1800000000000-0", &no_seat).is_err());
        let mut zero_version = fields();
        zero_version.insert("version".into(), "0".into());
        assert!(HoldEvent::from_outbox(1, "1800000000000-0", &zero_version).is_err());
    }
}
