//! Redis key names, decided here and nowhere else.
//!
//! Every key of one event carries the hash tag `{e:<id>}`, so each script touches
//! one cluster slot and the layout runs unchanged on Redis Cluster. The configured
//! prefix comes first, so tests and deployments can share one Redis.

/// Builds key names under one prefix (`hg:` by default).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Set of the event ids whose outbox the relay must drain. The only key
    /// outside an event's slot: written by the loader and read by the relay,
    /// never touched by a script.
    pub fn outboxes(&self) -> String {
        format!("{}outboxes", self.prefix)
    }

    /// Pub/sub channel (not a key) on which scripts publish an event's id when
    /// it has new work: the relay has read every earlier outbox entry (see
    /// [`EventKeys::outbox_announced`]), or a hold is its first to fall due.
    pub fn activity(&self) -> String {
        format!("{}activity", self.prefix)
    }

    pub fn event(&self, event_id: i64) -> EventKeys {
        EventKeys {
            base: format!("{}{{e:{event_id}}}:", self.prefix),
        }
    }
}

/// The keys of one event; all share its hash tag.
#[derive(Debug, Clone)]
pub struct EventKeys {
    base: String,
}

impl EventKeys {
    /// Hash `name venue startsAt totalSeats status`; written last when loading,
    /// so its presence means the inventory is complete.
    pub fn event(&self) -> String {
        format!("{}event", self.base)
    }

    /// Hash seat id -> the seat's JSON (`{"id","section","row","number"}`).
    pub fn seats(&self) -> String {
        format!("{}seats", self.base)
    }

    /// Sorted set of the seat ids nobody holds, scored by seat id (for paging).
    pub fn available(&self) -> String {
        format!("{}available", self.base)
    }

    /// String held by the one process loading this event's inventory.
    pub fn loading(&self) -> String {
        format!("{}loading", self.base)
    }

    /// String: the booking id holding the seat, expiring with the hold.
    pub fn lock(&self, seat_id: i64) -> String {
        format!("{}lock:{seat_id}", self.base)
    }

    /// Sorted set of live booking ids scored by expiry (ms since epoch).
    pub fn holds(&self) -> String {
        format!("{}holds", self.base)
    }

    /// Hash: one booking's state (seatId, userId, status, version, expiresAt, ...).
    pub fn hold(&self, booking_id: &str) -> String {
        format!("{}hold:{booking_id}", self.base)
    }

    /// Sorted set of one user's live holds of this event, scored by expiry.
    pub fn user_holds(&self, user_id: i64) -> String {
        format!("{}user:{user_id}:holds", self.base)
    }

    /// String: what an Idempotency-Key of this user answered (`seat:booking:expires`).
    pub fn idempotency(&self, user_id: i64, key: &str) -> String {
        format!("{}idem:{user_id}:{key}", self.base)
    }

    /// Stream of hold events not yet in PostgreSQL (the transactional outbox):
    /// the relay publishes an entry, and the writer deletes it after its commit.
    pub fn outbox(&self) -> String {
        format!("{}outbox", self.base)
    }

    /// String set (`SET NX`) by the script that announced new outbox entries on
    /// the activity channel; the relay deletes it once it has read them all, so
    /// the next entry is announced again.
    pub fn outbox_announced(&self) -> String {
        format!("{}outbox:announced", self.base)
    }

    /// Counter ordering every change of this event's holds.
    pub fn seq(&self) -> String {
        format!("{}seq", self.base)
    }

    /// String written (short-lived) by a replication barrier on this event's
    /// master, so the `WAIT` after it covers every earlier write there (see
    /// `holds::replication`).
    pub fn barrier(&self) -> String {
        format!("{}barrier", self.base)
    }

    /// Hash: the event's waiting room, its settings and its admission bucket
    /// (see `waiting_room.lua`); absent when buyers need no admission.
    pub fn room(&self) -> String {
        format!("{}room", self.base)
    }

    /// Sorted set of the users waiting, scored by their order in the queue.
    pub fn room_queue(&self) -> String {
        format!("{}room:queue", self.base)
    }

    /// Counter numbering the joins after the waiting room's start.
    pub fn room_arrivals(&self) -> String {
        format!("{}room:arrivals", self.base)
    }

    /// Sorted set of the users waiting, scored by their last visit (ms).
    pub fn room_seen(&self) -> String {
        format!("{}room:seen", self.base)
    }

    /// Sorted set of the admitted users, scored by when their admission ends
    /// (ms): the buyers `place_hold.lua` lets hold a seat.
    pub fn room_admitted(&self) -> String {
        format!("{}room:admitted", self.base)
    }

    /// Hash: admitted user id -> the hard end of their admission (ms).
    pub fn room_caps(&self) -> String {
        format!("{}room:caps", self.base)
    }

    /// Hash: waiting user id -> when it joined (ms).
    pub fn room_joined(&self) -> String {
        format!("{}room:joined", self.base)
    }

    /// List of the last admissions' waits from join to admission (ms), newest first.
    pub fn room_waits(&self) -> String {
        format!("{}room:waits", self.base)
    }
}

/// The fields of an event hash ([`EventKeys::event`]), as `read_event.lua`
/// and `set_event_status.lua` read them.
pub(super) mod event_field {
    pub const NAME: &str = "name";
    pub const VENUE: &str = "venue";
    pub const STARTS_AT: &str = "startsAt";
    pub const TOTAL_SEATS: &str = "totalSeats";
    pub const STATUS: &str = "status";
    /// Set when buyers need admission: the waiting room's idle timeout, ms.
    pub const ADMISSION: &str = "admission";
}

/// The fields of a hold hash ([`EventKeys::hold`]), as `place_hold.lua`
/// writes them and the other hold scripts read them.
pub(super) mod hold_field {
    pub const BOOKING: &str = "bookingId";
    pub const SEAT: &str = "seatId";
    pub const USER: &str = "userId";
    pub const STATUS: &str = "status";
    pub const VERSION: &str = "version";
    pub const SEQ: &str = "seq";
    pub const EXPIRES: &str = "expiresAt";
    pub const CREATED: &str = "createdAt";
    pub const CONFIRMED: &str = "confirmedAt";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_an_event_shares_its_hash_tag() {
        let keys = Keys::new("hg:").event(42);
        for key in [
            keys.event(),
            keys.seats(),
            keys.available(),
            keys.loading(),
            keys.lock(7),
            keys.holds(),
            keys.hold("b"),
            keys.user_holds(3),
            keys.idempotency(3, "k"),
            keys.outbox(),
            keys.outbox_announced(),
            keys.seq(),
            keys.barrier(),
            keys.room(),
            keys.room_queue(),
            keys.room_arrivals(),
            keys.room_seen(),
            keys.room_admitted(),
            keys.room_caps(),
            keys.room_joined(),
            keys.room_waits(),
        ] {
            assert!(key.starts_with("hg:{e:42}:"), "{key}");
        }
        assert_eq!(keys.available(), "hg:{e:42}:available");
    }

    #[test]
    fn the_scripts_write_the_fields_rust_reads() {
        let place_hold = include_str!("../../lua/place_hold.lua");
        let confirm_hold = include_str!("../../lua/confirm_hold.lua");
        for field in [
            hold_field::BOOKING,
            hold_field::SEAT,
            hold_field::USER,
            hold_field::STATUS,
            hold_field::VERSION,
            hold_field::SEQ,
            hold_field::EXPIRES,
            hold_field::CREATED,
        ] {
            assert!(place_hold.contains(&format!("'{field}'")), "{field}");
        }
        assert!(confirm_hold.contains(&format!("'{}'", hold_field::CONFIRMED)));
        let read_event = include_str!("../../lua/read_event.lua");
        for field in [
            event_field::NAME,
            event_field::VENUE,
            event_field::STARTS_AT,
            event_field::TOTAL_SEATS,
            event_field::STATUS,
        ] {
            assert!(read_event.contains(&format!("'{field}'")), "{field}");
        }
    }
}
