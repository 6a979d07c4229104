//! After a run: wait for the writer to catch up, then check what must always
//! hold, each as a pass/fail verdict.
//!
//! - every 201 the generator received names its own booking, and PostgreSQL
//!   has that booking exactly once;
//! - no seat of the event has two live bookings in PostgreSQL;
//! - Redis and PostgreSQL agree seat by seat (`herdgate check`).

use std::{collections::HashSet, time::Duration};

use anyhow::Context;
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use herdgate::{check, holds::Store};

const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub name: String,
    pub pass: bool,
    pub detail: String,
}

/// The run's 201s as booking ids; ids that do not parse are kept apart, as failures.
pub struct Created {
    pub ids: Vec<Uuid>,
    pub malformed: usize,
}

impl Created {
    pub fn parse(raw: &[String]) -> Self {
        let ids: Vec<Uuid> = raw.iter().filter_map(|s| s.parse().ok()).collect();
        Created {
            malformed: raw.len() - ids.len(),
            ids,
        }
    }
}

/// Waits until PostgreSQL has every created booking or `timeout` passes;
/// returns when it had them all, if it did.
pub async fn drain(
    pg: &tokio_postgres::Client,
    created: &Created,
    timeout: Duration,
) -> anyhow::Result<Option<Instant>> {
    let deadline = Instant::now() + timeout;
    let want = created.ids.iter().collect::<HashSet<_>>().len() as i64;
    loop {
        let found: i64 = pg
            .query_one(
                "SELECT count(*) FROM bookings WHERE id = ANY($1)",
                &[&created.ids],
            )
            .await
            .context("failed to count the run's bookings in PostgreSQL")?
            .get(0);
        if found >= want {
            return Ok(Some(Instant::now()));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Every verdict, in the order the module header lists them.
pub async fn check(
    pg: &deadpool_postgres::Pool,
    store: &Store,
    event: i64,
    created: &Created,
    wait: Duration,
) -> anyhow::Result<Vec<Verdict>> {
    let client = pg.get().await.context("failed to connect to PostgreSQL")?;
    let rows = client
        .query(
            "SELECT id FROM bookings WHERE id = ANY($1)",
            &[&created.ids],
        )
        .await
        .context("failed to look up the run's bookings")?;
    let found: HashSet<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    let doubled: Vec<i64> = client
        .query(
            "SELECT seat_id FROM bookings
              WHERE event_id = $1 AND status IN ('PENDING', 'CONFIRMED')
              GROUP BY seat_id HAVING count(*) > 1 ORDER BY seat_id LIMIT 10",
            &[&event],
        )
        .await
        .context("failed to look for doubly booked seats")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let report = check::reconcile(store, pg, wait).await?;
    Ok(vec![
        exactly_once(created, &found),
        one_live_booking_per_seat(&doubled),
        stores_agree(&report),
    ])
}

/// Each 201 names a booking no other 201 named, and PostgreSQL has it.
pub fn exactly_once(created: &Created, found: &HashSet<Uuid>) -> Verdict {
    let distinct: HashSet<&Uuid> = created.ids.iter().collect();
    let repeated = created.ids.len() - distinct.len();
    let missing = distinct.iter().filter(|id| !found.contains(id)).count();
    let pass = repeated == 0 && missing == 0 && created.malformed == 0;
    let detail = if pass {
        format!("all {} in PostgreSQL, once each", created.ids.len())
    } else {
        format!(
            "{missing} missing from PostgreSQL, {repeated} booking ids given out twice, \
             {} 201s without a booking id",
            created.malformed
        )
    };
    Verdict {
        name: "every 201 has its booking in PostgreSQL exactly once".into(),
        pass,
        detail,
    }
}

pub fn one_live_booking_per_seat(doubled: &[i64]) -> Verdict {
    Verdict {
        name: "no seat has two live bookings in PostgreSQL".into(),
        pass: doubled.is_empty(),
        detail: if doubled.is_empty() {
            "none has".into()
        } else {
            format!("seats {doubled:?} have")
        },
    }
}

pub fn stores_agree(report: &check::Report) -> Verdict {
    let mut detail = format!(
        "{} seats, {} live holds or bookings, {} differences",
        report.seats,
        report.live,
        report.differences.len()
    );
    if let Some(first) = report.differences.first() {
        detail.push_str(&format!(", first: {first}"));
    }
    Verdict {
        name: "Redis and PostgreSQL agree (herdgate check)".into(),
        pass: report.differences.is_empty(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::now_v7()).collect()
    }

    #[test]
    fn every_201_found_once_passes() {
        let ids = ids(3);
        let created = Created {
            ids: ids.clone(),
            malformed: 0,
        };
        let verdict = exactly_once(&created, &ids.into_iter().collect());
        assert!(verdict.pass, "{verdict:?}");
    }

    #[test]
    fn a_missing_repeated_or_unreadable_201_fails() {
        let ids = ids(3);
        let found: HashSet<Uuid> = ids[..2].iter().copied().collect();
        let missing = Created {
            ids: ids.clone(),
            malformed: 0,
        };
        let verdict = exactly_once(&missing, &found);
        assert!(!verdict.pass && verdict.detail.starts_with("1 missing"));

        let all: HashSet<Uuid> = ids.iter().copied().collect();
        let twice = Created {
            ids: vec![ids[0], ids[0], ids[1]],
            malformed: 0,
        };
        let verdict = exactly_once(&twice, &all);
        assert!(!verdict.pass && verdict.detail.contains("1 booking ids given out twice"));

        let unreadable = Created::parse(&[ids[0].to_string(), "nope".into()]);
        assert_eq!(unreadable.malformed, 1);
        assert!(!exactly_once(&unreadable, &all).pass);
    }

    #[test]
    fn a_doubly_booked_seat_or_a_difference_fails() {
        assert!(one_live_booking_per_seat(&[]).pass);
        assert!(!one_live_booking_per_seat(&[7]).pass);
        let mut report = check::Report::default();
        assert!(stores_agree(&report).pass);
        report.differences.push("event 1 seat 7: ...".into());
        let verdict = stores_agree(&report);
        assert!(!verdict.pass && verdict.detail.contains("first: event 1 seat 7"));
    }
}
