//! What a person (or a script, with `--json`) sees of a run: a progress line on
//! standard error while it runs, then the summary on standard output.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    sync::Arc,
    time::Duration,
};

use serde::Serialize;
use tokio::time::Instant;

use super::{
    invariants::Verdict,
    plan::Scenario,
    room::RoomReport,
    stats::{Percentiles, Recorder},
};

/// A terminal gets a line that redraws each second; a log gets a line every few.
const TICK: Duration = Duration::from_secs(1);
const LOG_EVERY: u32 = 5;

/// Prints progress until aborted.
pub async fn progress(recorder: Arc<Recorder>, started: Instant) {
    let terminal = std::io::stderr().is_terminal();
    let mut ticker = tokio::time::interval_at(started + TICK, TICK);
    let (mut last_requests, mut last_at) = (0, started);
    for tick in 1u32.. {
        let now = ticker.tick().await;
        if !terminal && tick % LOG_EVERY != 0 {
            continue;
        }
        let snapshot = recorder.snapshot();
        let rate = (snapshot.requests - last_requests) as f64 / (now - last_at).as_secs_f64();
        (last_requests, last_at) = (snapshot.requests, now);
        let line = format!(
            "{:>5.0?}  {:>9} req/s  {:>11} requests  {:>7} errors  p99 {}",
            now - started,
            thousands(rate as u64),
            thousands(snapshot.requests),
            thousands(snapshot.errors),
            millis(Percentiles::of(&snapshot.latency).p99),
        );
        let mut err = std::io::stderr().lock();
        let _ = if terminal {
            write!(err, "\r{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
}

/// Ends a redrawn progress line so what follows starts on its own.
pub fn end_progress() {
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
}

/// Everything a run found, as printed and as `--json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub scenario: Scenario,
    pub base: String,
    pub event: i64,
    pub users: usize,
    pub seats: usize,
    pub connections: usize,
    pub rate: Option<f64>,
    pub requests: u64,
    pub duration_secs: f64,
    pub throughput: f64,
    /// Answers by status code; keys are strings so the JSON is an object.
    pub statuses: BTreeMap<String, u64>,
    /// Requests that got no answer at all (part of `errors`).
    pub failures: u64,
    pub errors: u64,
    pub latency_ms: Percentiles,
    pub histogram: Option<String>,
    pub sellout: Option<Sellout>,
    /// From the last answer until PostgreSQL held every acknowledged booking.
    pub writer_lag_secs: Option<f64>,
    /// The waiting-room scenario's own figures.
    pub waiting_room: Option<RoomReport>,
    pub invariants: Vec<Verdict>,
    pub passed: bool,
}

/// How long the on-sale took.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sellout {
    pub seats: usize,
    /// Seats this run holds (each of its 201s).
    pub held: u64,
    /// From the release until the last seat was held, when every one was.
    pub all_held_secs: Option<f64>,
    /// From the release until PostgreSQL held every one of them.
    pub in_postgres_secs: Option<f64>,
}

impl Summary {
    /// The summary as a person reads it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |label: &str, text: String| out.push_str(&format!("{label:<11}{text}\n"));
        line(
            "scenario",
            format!(
                "{} on {}: event {}, {} users, {} seats, {} connections{}",
                self.scenario.name(),
                self.base,
                self.event,
                thousands(self.users as u64),
                thousands(self.seats as u64),
                thousands(self.connections as u64),
                self.rate.map_or(String::new(), |r| format!(
                    ", {} req/s scheduled",
                    thousands(r as u64)
                )),
            ),
        );
        line(
            "requests",
            format!(
                "{} in {:.2} s: {} req/s",
                thousands(self.requests),
                self.duration_secs,
                thousands(self.throughput as u64)
            ),
        );
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(code, n)| format!("{code}: {}", thousands(*n)))
            .collect();
        line("answers", statuses.join("   "));
        line(
            "errors",
            format!(
                "{} ({} without an answer)",
                thousands(self.errors),
                thousands(self.failures)
            ),
        );
        let p = &self.latency_ms;
        line(
            "latency",
            format!(
                "p50 {}   p90 {}   p99 {}   p99.9 {}   max {}",
                millis(p.p50),
                millis(p.p90),
                millis(p.p99),
                millis(p.p999),
                millis(p.max)
            ),
        );
        if let Some(path) = &self.histogram {
            line("histogram", path.clone());
        }
        if let Some(s) = &self.sellout {
            let held = match s.all_held_secs {
                Some(secs) => format!(
                    "all {} seats held after {secs:.2} s",
                    thousands(s.seats as u64)
                ),
                None => format!(
                    "{} of {} seats held (not sold out)",
                    thousands(s.held),
                    thousands(s.seats as u64)
                ),
            };
            let pg = s.in_postgres_secs.map_or(String::new(), |secs| {
                format!(", all in PostgreSQL after {secs:.2} s")
            });
            line("sellout", format!("{held}{pg}"));
        }
        if let Some(lag) = self.writer_lag_secs {
            line(
                "writer",
                format!("PostgreSQL held every 201 {lag:.2} s after the last answer"),
            );
        }
        if let Some(room) = &self.waiting_room {
            out.push_str(&room.render());
        }
        if !self.invariants.is_empty() {
            out.push_str("invariants\n");
            for v in &self.invariants {
                let verdict = if v.pass { "PASS" } else { "FAIL" };
                out.push_str(&format!("  {verdict}  {}: {}\n", v.name, v.detail));
            }
        }
        out
    }
}

/// 1234567 as "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Milliseconds with the precision they deserve.
pub fn millis(ms: f64) -> String {
    match ms {
        ms if ms < 10.0 => format!("{ms:.2} ms"),
        ms if ms < 1_000.0 => format!("{ms:.1} ms"),
        ms => format!("{:.2} s", ms / 1_000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_easily() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(millis(1.234), "1.23 ms");
        assert_eq!(millis(12.34), "12.3 ms");
        assert_eq!(millis(2_500.0), "2.50 s");
    }

    #[test]
    fn the_summary_names_every_outcome_and_verdict() {
        let summary = Summary {
            scenario: Scenario::Herd,
            base: "http://127.0.0.1:8080".into(),
            event: 1,
            users: 10_000,
            seats: 1,
            connections: 10_000,
            rate: None,
            requests: 10_000,
            duration_secs: 1.5,
            throughput: 6_666.0,
            statuses: BTreeMap::from([("201".into(), 1), ("409".into(), 9_999)]),
            failures: 0,
            errors: 0,
            latency_ms: Percentiles::default(),
            histogram: Some("herd.svg".into()),
            sellout: None,
            writer_lag_secs: Some(0.25),
            waiting_room: None,
            invariants: vec![Verdict {
                name: "one live booking per seat".into(),
                pass: true,
                detail: "no seat has two".into(),
            }],
            passed: true,
        };
        let text = summary.render();
        assert!(text.contains("201: 1   409: 9,999"), "{text}");
        assert!(
            text.contains("scenario   herd on http://127.0.0.1:8080"),
            "{text}"
        );
        assert!(text.contains("PASS  one live booking per seat"), "{text}");
        let json: serde_json::Value = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["statuses"]["409"], 9_999);
        assert_eq!(json["scenario"], "herd");
        assert_eq!(json["latencyMs"]["p99.9"], 0.0);
        assert_eq!(json["invariants"][0]["pass"], true);
    }
}
