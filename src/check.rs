//! `herdgate check`: reconciles Redis with PostgreSQL, seat by seat.
//!
//! For every loaded event, each seat must tell the same story in both stores:
//! locked in Redis by a live booking exactly when PostgreSQL has that booking
//! live (PENDING and HELD, or CONFIRMED and BOOKED), otherwise free in both
//! (in `available`, and AVAILABLE with no live booking). The writer lags Redis
//! by design, so the check first waits for the outboxes to drain and then
//! compares again until the stores agree or the time is up.

use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use crate::{
    holds::Store,
    status::{BookingStatus, SeatStatus},
};

/// Seats compared per Redis round-trip.
const CHUNK: usize = 1_000;

/// What one comparison found.
#[derive(Debug, Default)]
pub struct Report {
    pub events: usize,
    pub seats: usize,
    pub live: usize,
    /// One line per disagreement; empty when the stores agree.
    pub differences: Vec<String>,
}

/// Compares until the stores agree or `wait` has passed; the last report.
pub async fn reconcile(
    store: &Store,
    pg: &deadpool_postgres::Pool,
    wait: Duration,
) -> anyhow::Result<Report> {
    let deadline = Instant::now() + wait;
    loop {
        let drained = outboxes_drained(store).await?;
        let report = compare(store, pg).await?;
        if (drained && report.differences.is_empty()) || Instant::now() >= deadline {
            return Ok(report);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn events(store: &Store) -> anyhow::Result<Vec<i64>> {
    let mut events = store.loaded_events().await?;
    events.sort_unstable();
    Ok(events)
}

async fn outboxes_drained(store: &Store) -> anyhow::Result<bool> {
    let depths = store.outbox_depths().await?;
    Ok(depths.iter().all(|&(_, depth)| depth == 0))
}

/// A seat as PostgreSQL has it: its status and its live booking, if any.
struct StoredSeat {
    status: SeatStatus,
    live: Option<(String, BookingStatus)>,
}

/// The booking a seat's lock in Redis names, and that hold's status if Redis
/// still has it.
type Holder = (String, Option<BookingStatus>);

async fn compare(store: &Store, pg: &deadpool_postgres::Pool) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let client = pg.get().await.context("failed to connect to PostgreSQL")?;
    for event in events(store).await? {
        report.events += 1;
        let rows = client
            .query(
                "SELECT s.id, s.status, b.id::text, b.status
                   FROM seats s
                   LEFT JOIN bookings b
                     ON b.seat_id = s.id AND b.status IN ('PENDING', 'CONFIRMED')
                  WHERE s.event_id = $1 ORDER BY s.id",
                &[&event],
            )
            .await?;
        let stored: Vec<(i64, StoredSeat)> = rows
            .iter()
            .map(|r| {
                let live = r
                    .get::<_, Option<String>>(2)
                    .zip(r.get::<_, Option<BookingStatus>>(3));
                (
                    r.get(0),
                    StoredSeat {
                        status: r.get(1),
                        live,
                    },
                )
            })
            .collect();
        let available = store.available_seats(event).await?;
        for chunk in stored.chunks(CHUNK) {
            let seats: Vec<i64> = chunk.iter().map(|(seat, _)| *seat).collect();
            let holders = store.seat_holders(event, &seats).await?;
            for ((seat, pg_seat), redis) in chunk.iter().zip(holders) {
                report.seats += 1;
                let locked = redis.is_some();
                if let Some(difference) =
                    differ(event, *seat, redis, pg_seat, available.contains(seat))
                {
                    report.differences.push(difference);
                }
                report.live += usize::from(locked);
            }
        }
    }
    Ok(report)
}

/// How one seat's two stories disagree, if they do.
fn differ(
    event: i64,
    seat: i64,
    redis: Option<Holder>,
    pg: &StoredSeat,
    listed: bool,
) -> Option<String> {
    let expected_seat = pg
        .live
        .as_ref()
        .map_or(SeatStatus::Available, |(_, s)| s.seat_status());
    let stored: Option<Holder> = pg.live.clone().map(|(booking, s)| (booking, Some(s)));
    let problem = if pg.status != expected_seat {
        format!(
            "postgres seat is {} but its live booking says {expected_seat}",
            pg.status
        )
    } else if redis != stored {
        format!(
            "redis lock {redis:?} but postgres live booking {:?}",
            pg.live
        )
    } else if redis.is_some() == listed {
        format!("listed as available: {listed}, locked: {}", redis.is_some())
    } else {
        return None;
    };
    Some(format!("event {event} seat {seat}: {problem}"))
}

/// `herdgate check`: prints each difference and a summary; fails on any.
pub async fn run_cli(config: &crate::config::Config, wait: Duration) -> anyhow::Result<()> {
    let store = Store::connect(&config.redis).await?;
    let pg = config.pg.pool()?;
    let report = reconcile(&store, &pg, wait).await?;
    for difference in &report.differences {
        println!("{difference}");
    }
    println!(
        "check: {} events, {} seats, {} live holds or bookings, {} differences",
        report.events,
        report.seats,
        report.live,
        report.differences.len()
    );
    anyhow::ensure!(
        report.differences.is_empty(),
        "Redis and PostgreSQL disagree"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(status: &str, live: Option<(&str, &str)>) -> StoredSeat {
        StoredSeat {
            status: status.parse().unwrap(),
            live: live.map(|(b, s)| (b.into(), s.parse().unwrap())),
        }
    }

    fn held(booking: &str, status: &str) -> Option<Holder> {
        Some((booking.into(), Some(status.parse().unwrap())))
    }

    #[test]
    fn agreeing_stores_have_no_difference() {
        assert_eq!(differ(1, 7, None, &seat("AVAILABLE", None), true), None);
        let pending = seat("HELD", Some(("b", "PENDING")));
        assert_eq!(differ(1, 7, held("b", "PENDING"), &pending, false), None);
        let confirmed = seat("BOOKED", Some(("b", "CONFIRMED")));
        assert_eq!(
            differ(1, 7, held("b", "CONFIRMED"), &confirmed, false),
            None
        );
    }

    #[test]
    fn each_kind_of_disagreement_is_reported() {
        let free = seat("AVAILABLE", None);
        // Held in Redis only (the writer lost it), or listed while locked.
        assert!(differ(1, 7, held("b", "PENDING"), &free, false).is_some());
        let pending = seat("HELD", Some(("b", "PENDING")));
        assert!(differ(1, 7, held("b", "PENDING"), &pending, true).is_some());
        // Another booking, or another status, on each side.
        assert!(differ(1, 7, held("c", "PENDING"), &pending, false).is_some());
        assert!(differ(1, 7, held("b", "CONFIRMED"), &pending, false).is_some());
        // Locked by a booking whose hold state Redis lost.
        assert!(differ(1, 7, Some(("b".into(), None)), &pending, false).is_some());
        // Free in Redis but not listed, or held only in PostgreSQL.
        assert!(differ(1, 7, None, &free, false).is_some());
        assert!(differ(1, 7, None, &pending, true).is_some());
        // PostgreSQL contradicting itself.
        assert!(differ(1, 7, None, &seat("HELD", None), true).is_some());
    }
}
