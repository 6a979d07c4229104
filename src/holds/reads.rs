//! Reading from Redis: pages of available seats, an event, a booking.

use bytes::Bytes;
use fred::{
    interfaces::{HashesInterface, KeysInterface, SortedSetsInterface},
    types::Value,
};

use super::{
    LIST_AVAILABLE, READ_EVENT, Store, StoreError, keys::hold_field, reply_error, status_field,
};
use crate::status::{BookingStatus, EventStatus};

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
    pub status: EventStatus,
    pub available: u64,
}

/// A booking as Redis holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldState {
    pub status: BookingStatus,
    pub seat_id: i64,
    pub user_id: i64,
    pub expires_ms: i64,
    pub confirmed_ms: Option<i64>,
}

impl Store {
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
            status: EventStatus::parse(&text(status)?).map_err(|_| bad())?,
            available: available.as_u64().ok_or_else(bad)?,
        }))
    }

    /// A booking's state while Redis still has it.
    pub async fn read_hold(
        &self,
        event_id: i64,
        booking_id: &str,
    ) -> Result<Option<HoldState>, StoreError> {
        let k = self.keys.event(event_id);
        let key = k.hold(booking_id);
        let fields: std::collections::HashMap<String, String> = self
            .on_master_of(&key, |client| {
                let key = key.clone();
                async move { client.hgetall(key).await }
            })
            .await?;
        let int = |name: &str| fields.get(name).and_then(|v| v.parse::<i64>().ok());
        let status = fields
            .get(hold_field::STATUS)
            .map(|text| status_field(text.clone()))
            .transpose()?;
        Ok(
            match (
                status,
                int(hold_field::SEAT),
                int(hold_field::USER),
                int(hold_field::EXPIRES),
            ) {
                (Some(status), Some(seat_id), Some(user_id), Some(expires_ms)) => Some(HoldState {
                    status,
                    seat_id,
                    user_id,
                    expires_ms,
                    confirmed_ms: int(hold_field::CONFIRMED),
                }),
                _ => None,
            },
        )
    }

    /// Every seat id in the event's `available` set.
    pub async fn available_seats(
        &self,
        event_id: i64,
    ) -> Result<std::collections::HashSet<i64>, StoreError> {
        let k = self.keys.event(event_id);
        let seats: Vec<i64> = self
            .client()
            .zrange(k.available(), 0, -1, None, false, None, false)
            .await?;
        Ok(seats.into_iter().collect())
    }

    /// For each of `seats`, the booking its lock names and that booking's
    /// status (`None` when its hold state is gone), or `None` for a free seat.
    pub async fn seat_holders(
        &self,
        event_id: i64,
        seats: &[i64],
    ) -> Result<Vec<Option<(String, Option<BookingStatus>)>>, StoreError> {
        let k = self.keys.event(event_id);
        let locks: Vec<Option<String>> = self
            .client()
            .mget(seats.iter().map(|&seat| k.lock(seat)).collect::<Vec<_>>())
            .await?;
        let bookings: Vec<&str> = locks.iter().flatten().map(String::as_str).collect();
        let mut statuses = self.hold_statuses(event_id, &bookings).await?.into_iter();
        Ok(locks
            .into_iter()
            .map(|lock| lock.map(|booking| (booking, statuses.next().flatten())))
            .collect())
    }
}
