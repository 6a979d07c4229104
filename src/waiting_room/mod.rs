//! Admission: whether an event lets buyers in, and how loaded this gateway is;
//! `queue` (a buyer's place in an event's waiting room, as the API shows it).
//!
//! An event with a waiting room (a `waiting_rooms` row) admits buyers from its
//! queue at a set rate, and `place_hold.lua` holds seats only for admitted
//! buyers (see `waiting_room.lua`). Every on-sale event is open while the
//! gateway has room for more requests in flight.

pub mod page;
pub mod proof;
mod queue;
pub mod settings;

pub use queue::{QueueView, StatsView, queue_view, stats_view};

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use crate::{catalog::EventView, status::EventStatus};

/// In-flight admission: requests in flight in this gateway, bounded by
/// `capacity`; one more is shed (503). Health checks are not counted.
pub struct InFlight {
    in_flight: AtomicUsize,
    capacity: usize,
}

/// Counts one request in flight until dropped.
pub struct InFlightSlot<'a>(&'a InFlight);

impl Drop for InFlightSlot<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    pub fn new(capacity: usize) -> Self {
        InFlight {
            in_flight: AtomicUsize::new(0),
            capacity,
        }
    }

    /// Admits one more request, or `None` when the gateway is full.
    pub fn try_enter(&self) -> Option<InFlightSlot<'_>> {
        let previous = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = InFlightSlot(self);
        (previous < self.capacity).then_some(slot)
    }

    pub fn snapshot(&self) -> InFlightView {
        InFlightView {
            in_flight: self.in_flight.load(Ordering::Acquire),
            capacity: self.capacity,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InFlightView {
    pub in_flight: usize,
    pub capacity: usize,
}

impl InFlightView {
    fn saturated(&self) -> bool {
        self.in_flight >= self.capacity
    }
}

/// The admission state of one event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Admission {
    pub event_id: i64,
    pub name: String,
    /// Buyers may book now.
    pub open: bool,
    pub status: EventStatus,
    pub available_seats: u64,
    pub sold_out: bool,
    /// This gateway's in-flight requests (the API calls it `load`).
    pub load: InFlightView,
}

pub fn admission(event: &EventView, load: InFlightView) -> Admission {
    let sold_out = event.on_sale() && event.available_seats == 0;
    Admission {
        event_id: event.id,
        name: event.name.clone(),
        open: event.on_sale() && !sold_out && !load.saturated(),
        status: event.status,
        available_seats: event.available_seats,
        sold_out,
        load,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_admits_up_to_capacity_and_releases_on_drop() {
        let in_flight = InFlight::new(2);
        let a = in_flight.try_enter().unwrap();
        let _b = in_flight.try_enter().unwrap();
        assert!(in_flight.try_enter().is_none());
        assert_eq!(in_flight.snapshot().in_flight, 2);
        drop(a);
        assert!(in_flight.try_enter().is_some());
    }

    #[test]
    fn admission_is_open_only_on_sale_with_seats_and_room() {
        let event = EventView {
            id: 1,
            name: "x".into(),
            venue: "v".into(),
            starts_at: "2027-01-01T00:00:00Z".into(),
            total_seats: 10,
            available_seats: 3,
            status: EventStatus::OnSale,
        };
        let idle = InFlightView {
            in_flight: 0,
            capacity: 4,
        };
        let full = InFlightView {
            in_flight: 4,
            capacity: 4,
        };
        assert!(admission(&event, idle).open);
        assert!(!admission(&event, full).open);
        let sold_out = EventView {
            available_seats: 0,
            ..event.clone()
        };
        assert!(admission(&sold_out, idle).sold_out);
        assert!(!admission(&sold_out, idle).open);
        let scheduled = EventView {
            status: EventStatus::Scheduled,
            ..event
        };
        assert!(!admission(&scheduled, idle).open);
    }
}
