//! Booking ids: UUIDv7 that also carry their event.
//!
//! Every Redis key of a booking lives in its event's slot, so a request that
//! names only a booking (`GET /api/bookings/:id`) must learn the event from the
//! id itself. The id is a standard UUIDv7 (48-bit millisecond timestamp,
//! version and variant bits) laid out as:
//!
//! - `rand_a` (12 bits): a per-process counter, so one gateway's ids within a
//!   millisecond differ;
//! - `rand_b` (62 bits): the event id (32 bits) and 30 random bits, so ids of
//!   different gateways differ without coordination.
//!
//! A collision is still not impossible; `place_hold.lua` refuses an id whose
//! hold already exists and the gateway draws another.

use std::sync::atomic::{AtomicU16, Ordering};

use uuid::Uuid;

static COUNTER: AtomicU16 = AtomicU16::new(0);

/// A new booking id for `event_id`, or `None` when the id does not fit 32 bits.
pub fn new(event_id: i64) -> Option<Uuid> {
    let event = u32::try_from(event_id).ok()?;
    let ms = chrono::Utc::now().timestamp_millis() as u64;
    let count = COUNTER.fetch_add(1, Ordering::Relaxed) & 0x0fff;
    let random = Uuid::new_v4();
    let random = random.as_bytes();
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    bytes[6] = 0x70 | (count >> 8) as u8;
    bytes[7] = count as u8;
    bytes[8] = 0x80 | (random[0] & 0x3f);
    bytes[9..13].copy_from_slice(&event.to_be_bytes());
    bytes[13..].copy_from_slice(&random[1..4]);
    Some(Uuid::from_bytes(bytes))
}

/// The event a booking id was made for (meaningless for ids not made by [`new`]).
pub fn event_of(id: &Uuid) -> i64 {
    let bytes = id.as_bytes();
    i64::from(u32::from_be_bytes([
        bytes[9], bytes[10], bytes[11], bytes[12],
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_carries_its_event_and_stays_a_uuid_v7() {
        for event in [1, 42, i64::from(u32::MAX)] {
            let id = new(event).unwrap();
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(event_of(&id), event);
        }
        assert!(new(i64::from(u32::MAX) + 1).is_none());
        assert!(new(-1).is_none());
    }

    #[test]
    fn ids_are_unique_and_time_ordered() {
        let ids: Vec<Uuid> = (0..100_000).map(|_| new(7).unwrap()).collect();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        // The first 48 bits are the millisecond timestamp.
        assert!(
            ids.windows(2)
                .all(|w| w[0].as_bytes()[..6] <= w[1].as_bytes()[..6])
        );
    }
}
