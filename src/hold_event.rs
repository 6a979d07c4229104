//! The hold event: what a script appends to the outbox, the relay publishes to
//! RabbitMQ and the writer applies to PostgreSQL. Its JSON is a public contract
//! (other services bind their own queues), documented in the README; fields are
//! only ever added, and `schemaVersion` says which set a message has.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BookingStatus {
    Pending,
    Confirmed,
    Cancelled,
    Expired,
}

impl BookingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::Pending => "PENDING",
            BookingStatus::Confirmed => "CONFIRMED",
            BookingStatus::Cancelled => "CANCELLED",
            BookingStatus::Expired => "EXPIRED",
        }
    }

    /// The event type that leads to this status.
    pub fn event_type(self) -> &'static str {
        match self {
            BookingStatus::Pending => "hold.placed",
            BookingStatus::Confirmed => "hold.confirmed",
            BookingStatus::Cancelled => "hold.cancelled",
            BookingStatus::Expired => "hold.expired",
        }
    }

    /// PENDING and CONFIRMED bookings occupy their seat.
    pub fn is_live(self) -> bool {
        matches!(self, BookingStatus::Pending | BookingStatus::Confirmed)
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PENDING" => BookingStatus::Pending,
            "CONFIRMED" => BookingStatus::Confirmed,
            "CANCELLED" => BookingStatus::Cancelled,
            "EXPIRED" => BookingStatus::Expired,
            _ => return None,
        })
    }
}

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
}

impl HoldEvent {
    /// Builds the event from an outbox entry's fields.
    pub fn from_outbox(event_id: i64, fields: &HashMap<String, String>) -> Result<Self, String> {
        let get = |name: &str| {
            fields
                .get(name)
                .map(String::as_str)
                .ok_or_else(|| format!("outbox entry has no {name}"))
        };
        let int = |name: &str| {
            get(name)?
                .parse::<i64>()
                .map_err(|e| format!("outbox field {name}: {e}"))
        };
        let time = |name: &str| -> Result<DateTime<Utc>, String> {
            let ms = int(name)?;
            Utc.timestamp_millis_opt(ms)
                .single()
                .ok_or_else(|| format!("outbox field {name}: {ms} is no time"))
        };
        let status = get("status")?;
        let event = HoldEvent {
            schema_version: SCHEMA_VERSION,
            kind: get("type")?.to_string(),
            booking_id: get("bookingId")?
                .parse()
                .map_err(|e| format!("outbox field bookingId: {e}"))?,
            event_id,
            seat_id: int("seatId")?,
            user_id: int("userId")?,
            status: BookingStatus::parse(status)
                .ok_or_else(|| format!("outbox field status: {status:?}"))?,
            version: int("version")?,
            seq: int("seq")?,
            expires_at: time("expiresAt")?,
            confirmed_at: fields
                .contains_key("confirmedAt")
                .then(|| time("confirmedAt"))
                .transpose()?,
            occurred_at: time("occurredAt")?,
            traceparent: fields.get("traceparent").filter(|t| !t.is_empty()).cloned(),
        };
        event.validate()?;
        Ok(event)
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
        let event = HoldEvent::from_outbox(1, &fields()).unwrap();
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
    fn inconsistent_entries_are_refused() {
        let mut wrong_type = fields();
        wrong_type.insert("type".into(), "hold.expired".into());
        assert!(HoldEvent::from_outbox(1, &wrong_type).is_err());
        let mut no_seat = fields();
        no_seat.remove("seatId");
        assert!(HoldEvent::from_outbox(1, &no_seat).is_err());
        let mut zero_version = fields();
        zero_version.insert("version".into(), "0".into());
        assert!(HoldEvent::from_outbox(1, &zero_version).is_err());
    }
}
