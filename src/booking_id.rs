//! Booking ids: UUIDv7 that also carry their event.
//!
//! Every Redis key of a booking lives in its event's slot, so a request that
//! names only a booking (`GET /api/bookings/:id`) must learn the event from the
//! id itself. The id is a standard UUIDv7 (time-ordered, version and variant
//! bits intact) whose `rand_b` field holds the event id in 32 of its 62 bits;
//! 42 random bits remain per millisecond and event, so gateways never need to
//! coordinate.

use uuid::Uuid;

/// A new booking id for `event_id`, or `None` when the id does not fit 32 bits.
pub fn new(event_id: i64) -> Option<Uuid> {
    let event = u32::try_from(event_id).ok()?;
    let mut bytes = *Uuid::now_v7().as_bytes();
    // Bytes 9..13 sit inside rand_b; byte 8 keeps the variant bits.
    bytes[9..13].copy_from_slice(&event.to_be_bytes());
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
        let ids: Vec<Uuid> = (0..10_000).map(|_| new(7).unwrap()).collect();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        // The first 48 bits are the millisecond timestamp.
        assert!(
            ids.windows(2)
                .all(|w| w[0].as_bytes()[..6] <= w[1].as_bytes()[..6])
        );
    }
}
