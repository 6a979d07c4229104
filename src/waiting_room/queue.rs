//! A buyer's place in an event's waiting room, as `POST /waiting-room/:id/join`
//! and `GET /waiting-room/:id` answer it: the exact position, a wait estimate
//! from the measured admission rate, when to look again, and the pre-queue's
//! order commitment (the seed's SHA-256 before the start, the seed after it).

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{
    bookings::timestamp,
    holds::{RoomStats, Visit},
};

/// Visits are asked for at most this far apart, however long the queue.
const MAX_POLL_SECS: f64 = 30.0;
/// ... and at least this far apart: a short queue need not be polled faster.
const MIN_POLL_SECS: f64 = 1.0;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueView {
    pub event_id: i64,
    /// `pre_queue` (joined before the start: the order is drawn then),
    /// `queued` or `admitted`.
    pub status: &'static str,
    /// 1: next to be admitted. Only once the start has drawn the order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// Buyers waiting, this one included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<u64>,
    /// None while admission is paused: nobody knows for how long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_wait_seconds: Option<u64>,
    /// The operator has paused admission; every place is kept. Only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Admissions per second, measured over the last ten seconds (the set rate before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission_rate: Option<f64>,
    /// When to visit again; a buyer who stays away much longer loses the place.
    pub poll_after_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    /// Admitted: book before this (each visit and hold renews it) ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admitted_until: Option<String>,
    /// ... and never after this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission_ends_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<Order>,
}

/// How the pre-queue was ordered: ascending SHA-1 of `seed:userId`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// SHA-256 of the seed, hex: published before the start.
    pub commitment: String,
    /// Revealed from the start, so anyone can recompute the order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
}

impl Order {
    fn of(seed: &str, revealed: bool) -> Self {
        let digest = Sha256::digest(seed.as_bytes());
        Order {
            commitment: digest.iter().map(|b| format!("{b:02x}")).collect(),
            seed: revealed.then(|| seed.to_string()),
        }
    }
}

/// The answer for a visit that found the buyer queued or admitted; `None`
/// for the other outcomes, which are problems.
pub fn queue_view(event_id: i64, visit: &Visit, now_ms: i64) -> Option<QueueView> {
    let empty = QueueView {
        event_id,
        status: "queued",
        position: None,
        queued: None,
        estimated_wait_seconds: None,
        paused: false,
        admission_rate: None,
        poll_after_seconds: MIN_POLL_SECS,
        starts_at: None,
        admitted_until: None,
        admission_ends_at: None,
        order: None,
    };
    Some(match visit {
        Visit::Admitted { ends_ms, cap_ms } => QueueView {
            status: "admitted",
            // A visit renews the admission: well within its idle timeout.
            poll_after_seconds: poll(((ends_ms - now_ms) as f64 / 3_000.0).max(0.1), i64::MAX),
            admitted_until: Some(timestamp(*ends_ms)),
            admission_ends_at: Some(timestamp(*cap_ms)),
            ..empty
        },
        Visit::Queued {
            position,
            queued,
            rate,
            seed,
            grace_ms,
            paused,
        } => {
            let wait = (*position as f64 / rate.max(1e-3)).ceil();
            QueueView {
                position: Some(*position),
                queued: Some(*queued),
                estimated_wait_seconds: (!paused).then_some(wait as u64),
                paused: *paused,
                admission_rate: Some(*rate),
                // Paused too: those near the head keep visiting every second,
                // so the queue moves on at once when admission resumes (only
                // visits move it).
                poll_after_seconds: poll(wait / 10.0, *grace_ms),
                order: Some(Order::of(seed, true)),
                ..empty
            }
        }
        Visit::PreQueue {
            starts_ms,
            queued,
            seed,
            grace_ms,
            paused,
            ..
        } => QueueView {
            status: "pre_queue",
            queued: Some(*queued),
            paused: *paused,
            poll_after_seconds: poll((starts_ms - now_ms) as f64 / 10_000.0, *grace_ms),
            starts_at: Some(timestamp(*starts_ms)),
            order: Some(Order::of(seed, false)),
            ..empty
        },
        Visit::NotQueued | Visit::NotOpen { .. } | Visit::NoRoom => return None,
    })
}

/// `GET /waiting-room/:id/stats`: the room as a whole, public and read-only.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsView {
    pub event_id: i64,
    pub opens_at: String,
    pub starts_at: String,
    pub paused: bool,
    /// Admissions per second, as set.
    pub admission_rate: f64,
    /// ... and as measured over the last full ten seconds, once there is one.
    pub measured_rate: Option<f64>,
    pub max_active: u64,
    pub queued: u64,
    /// Admissions live now.
    pub active: u64,
    /// Admissions ever made.
    pub admitted: u64,
    /// Admissions whose order was below an earlier admission's: 0 unless the
    /// start was moved back after admissions began.
    pub out_of_order: u64,
    /// From join to admission, over the last 1,000 admissions.
    pub wait_seconds: Option<Waits>,
    pub order: Order,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Waits {
    pub p50: f64,
    pub p90: f64,
}

pub fn stats_view(event_id: i64, stats: &RoomStats, now_ms: i64) -> StatsView {
    let mut waits = stats.waits_ms.clone();
    waits.sort_unstable();
    // Nearest rank: the smallest wait at least `p`% of admissions did not exceed.
    let rank = |p: usize| waits[(waits.len() * p).div_ceil(100).max(1) - 1] as f64 / 1_000.0;
    StatsView {
        event_id,
        opens_at: timestamp(stats.opens_ms),
        starts_at: timestamp(stats.starts_ms),
        paused: stats.paused,
        admission_rate: stats.rate,
        measured_rate: stats.measured_rate,
        max_active: stats.max_active,
        queued: stats.queued,
        active: stats.active,
        admitted: stats.admitted,
        out_of_order: stats.out_of_order,
        wait_seconds: (!waits.is_empty()).then(|| Waits {
            p50: rank(50),
            p90: rank(90),
        }),
        order: Order::of(&stats.seed, now_ms >= stats.starts_ms),
    }
}

/// `wanted` seconds between visits, kept within [`MIN_POLL_SECS`] and
/// [`MAX_POLL_SECS`] and to a third of the grace a queued buyer has.
fn poll(wanted: f64, grace_ms: i64) -> f64 {
    let most = MAX_POLL_SECS.min(grace_ms as f64 / 3_000.0);
    let secs = wanted.clamp(MIN_POLL_SECS.min(most), most);
    (secs * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(position: u64, rate: f64, grace_ms: i64) -> Visit {
        Visit::Queued {
            position,
            queued: position + 10,
            rate,
            seed: "s".repeat(32),
            grace_ms,
            paused: false,
        }
    }

    #[test]
    fn the_wait_follows_the_measured_rate_and_polls_grow_with_it_within_bounds() {
        let near = queue_view(1, &queued(5, 10.0, 60_000), 0).unwrap();
        assert_eq!(near.estimated_wait_seconds, Some(1));
        assert_eq!(near.poll_after_seconds, 1.0);
        let far = queue_view(1, &queued(10_000, 10.0, 60_000), 0).unwrap();
        assert_eq!(far.estimated_wait_seconds, Some(1_000));
        assert_eq!(far.poll_after_seconds, 20.0);
        // Never so long that the buyer loses the place, never longer than 30 s.
        let short_grace = queue_view(1, &queued(10_000, 10.0, 3_000), 0).unwrap();
        assert_eq!(short_grace.poll_after_seconds, 1.0);
        let slow = queue_view(1, &queued(10_000, 1.0, 600_000), 0).unwrap();
        assert_eq!(slow.poll_after_seconds, 30.0);
        // Paused: no estimate (nobody knows for how long), the pace of the place.
        let paused = Visit::Queued {
            position: 10,
            queued: 20,
            rate: 5.0,
            seed: "s".repeat(32),
            grace_ms: 60_000,
            paused: true,
        };
        let view = queue_view(1, &paused, 0).unwrap();
        assert!(view.paused);
        assert_eq!(view.estimated_wait_seconds, None);
        assert_eq!(view.poll_after_seconds, 1.0);
        let json = serde_json::to_value(&near).unwrap();
        assert!(json.get("paused").is_none(), "only said when true");
    }

    #[test]
    fn the_seed_is_committed_before_the_start_and_revealed_after() {
        let seed = "a".repeat(32);
        let pre = Visit::PreQueue {
            starts_ms: 60_000,
            queued: 3,
            rate: 5.0,
            seed: seed.clone(),
            grace_ms: 60_000,
            paused: false,
        };
        let view = queue_view(1, &pre, 0).unwrap();
        assert_eq!(view.status, "pre_queue");
        assert_eq!(view.position, None);
        let order = view.order.unwrap();
        assert_eq!(order.seed, None);
        assert_eq!(order.commitment.len(), 64);
        let started = Visit::Queued {
            position: 1,
            queued: 3,
            rate: 5.0,
            seed: seed.clone(),
            grace_ms: 60_000,
            paused: false,
        };
        let after = queue_view(1, &started, 61_000).unwrap();
        let revealed = after.order.unwrap();
        assert_eq!(revealed.commitment, order.commitment);
        assert_eq!(revealed.seed.as_deref(), Some(seed.as_str()));
        // sha256("a" x 32)
        assert!(
            order
                .commitment
                .starts_with("3ba3f5f43b92602683c19aee62a20342")
        );
    }

    #[test]
    fn stats_give_wait_percentiles_by_nearest_rank_and_reveal_the_seed_from_the_start() {
        let stats = RoomStats {
            opens_ms: 0,
            starts_ms: 1_000,
            rate: 5.0,
            measured_rate: None,
            max_active: 10,
            paused: false,
            seed: "s".repeat(32),
            queued: 3,
            active: 1,
            admitted: 10,
            out_of_order: 0,
            waits_ms: (1..=10).rev().map(|s| s * 1_000).collect(),
        };
        let before = stats_view(1, &stats, 500);
        assert_eq!(before.order.seed, None);
        assert_eq!(before.wait_seconds, Some(Waits { p50: 5.0, p90: 9.0 }));
        let after = stats_view(1, &stats, 1_000);
        assert_eq!(after.order.seed.as_deref(), Some(stats.seed.as_str()));
        let none = stats_view(
            1,
            &RoomStats {
                waits_ms: vec![],
                ..stats
            },
            0,
        );
        assert_eq!(none.wait_seconds, None);
    }

    #[test]
    fn an_admission_says_until_when() {
        let view = queue_view(
            1,
            &Visit::Admitted {
                ends_ms: 30_000,
                cap_ms: 600_000,
            },
            0,
        )
        .unwrap();
        assert_eq!(view.status, "admitted");
        assert_eq!(view.poll_after_seconds, 10.0);
        assert_eq!(
            view.admitted_until.as_deref(),
            Some("1970-01-01T00:00:30.000Z")
        );
        assert!(queue_view(1, &Visit::NotQueued, 0).is_none());
    }
}
