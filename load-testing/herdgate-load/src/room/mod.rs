//! The `waiting-room` scenario: buyers of an event behind a waiting room, as
//! the room sees them. Each buyer is a task with a connection of its own (as a
//! browser has), opened again when the gateway closed it while the buyer
//! waited: it arrives within `--ramp`, joins, looks again every
//! `pollAfterSeconds` the server says, and once admitted holds a seat and
//! confirms it (which ends its admission and frees the slot for the next).
//! A share (`--leave`) walk away: half while in line (their place lapses after
//! the grace period), half once admitted, without booking (the admission
//! idles out). See `buyer`.
//!
//! Meanwhile the room's public stats are read once a second: admissions a
//! second, by the server's own count, against the set rate, over the time the
//! line was never empty. A room whose start is still ahead is paused at its
//! start (with the operator's secret) until every buyer in its pre-queue has
//! read a place: those places are checked against the draw recomputed from the
//! seed the room then reveals (see `draw`); admission then resumes.

mod buyer;
mod draw;
mod measure;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio::time::Instant;

use crate::{
    client::{Conn, Target},
    plan::Call,
    run::Timeline,
    stats::Recorder,
    users::Tokens,
};

pub use measure::{RoomReport, Sample};

/// How long to wait for every pre-queue buyer's first place after the start.
const DRAW_WAIT: Duration = Duration::from_secs(30);

/// The buyers of one run and what they need.
pub struct Buyers {
    pub target: Target,
    pub event: i64,
    pub users: usize,
    /// Buyers stop this long after the start.
    pub deadline: Duration,
    pub ramp: Duration,
    pub leave: f64,
    pub timeout: Duration,
    /// Seats to book, each handed to one buyer.
    pub seats: Vec<i64>,
    pub tokens: Arc<Tokens>,
    pub recorder: Arc<Recorder>,
}

/// Settings the run gives the room first, through the operator API.
pub struct Change {
    pub admission_rate: Option<f64>,
    pub max_active: Option<u32>,
}

/// `GET /waiting-room/:id/stats`, as far as the run reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub admission_rate: f64,
    pub max_active: u64,
    pub paused: bool,
    pub starts_at: chrono::DateTime<chrono::Utc>,
    pub queued: u64,
    pub active: u64,
    pub admitted: u64,
    pub out_of_order: u64,
    pub order: Order,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Order {
    pub commitment: String,
    pub seed: Option<String>,
}

/// Talks to the room as its operator and as the public: its own connection.
struct Room {
    target: Target,
    event: i64,
    operator: Option<http::HeaderValue>,
    conn: Option<Conn>,
}

impl Room {
    async fn call(
        &mut self,
        call: &Call,
        bearer: Option<http::HeaderValue>,
    ) -> anyhow::Result<(u16, bytes::Bytes)> {
        if self.conn.as_ref().is_none_or(Conn::is_closed) {
            self.conn = Some(Conn::open(&self.target).await?);
        }
        let request = self.target.request(self.event, call, bearer);
        let conn = self.conn.as_mut().expect("opened above");
        match conn.send(request).await {
            Ok(answer) => Ok(answer),
            Err(e) => {
                self.conn = None;
                Err(e.into())
            }
        }
    }

    async fn stats(&mut self) -> anyhow::Result<Stats> {
        let (status, body) = self.call(&Call::RoomStats, None).await?;
        anyhow::ensure!(
            status == 200,
            "GET /waiting-room/{}/stats answered {status}: the event has no waiting room? {}",
            self.event,
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).context("unexpected stats")
    }

    /// `PATCH /waiting-room/:id/settings` as the operator.
    async fn change(&mut self, settings: serde_json::Value) -> anyhow::Result<()> {
        let bearer = self.operator.clone().context(
            "changing the room needs the operator's secret: set HERDGATE_OPERATOR_TOKEN as the gateway has it",
        )?;
        let call = Call::ChangeRoom {
            settings: settings.to_string(),
        };
        let (status, body) = self.call(&call, Some(bearer)).await?;
        anyhow::ensure!(
            status == 200,
            "PATCH /waiting-room/{}/settings {settings} answered {status}: {}",
            self.event,
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }
}

/// Runs the buyers to the deadline while measuring the room.
pub async fn run(
    buyers: Buyers,
    change: Change,
    config: &herdgate::config::Config,
) -> anyhow::Result<(Timeline, RoomReport)> {
    let operator = config.auth.operator_token.as_ref().map(|secret| {
        http::HeaderValue::try_from(format!("Bearer {}", secret.expose_secret()))
            .expect("a secret from the environment is a valid header value")
    });
    let mut room = Room {
        target: buyers.target.clone(),
        event: buyers.event,
        operator,
        conn: None,
    };
    let mut settings = serde_json::Map::new();
    if let Some(rate) = change.admission_rate {
        settings.insert("admissionRate".into(), rate.into());
    }
    if let Some(max) = change.max_active {
        settings.insert("maxActive".into(), max.into());
    }
    if !settings.is_empty() {
        room.change(settings.into()).await?;
    }
    let before = room.stats().await?;
    if before.paused {
        eprintln!("load: the room is paused: nobody is admitted until an operator resumes it");
    }
    // A draw ahead: hold admission at the start until the places are read.
    let starts_in = (before.starts_at - chrono::Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO);
    let check_draw = starts_in > Duration::ZERO && room.operator.is_some() && !before.paused;
    if check_draw {
        room.change(serde_json::json!({"paused": true})).await?;
        eprintln!(
            "load: the room draws its order in {:.1} s: paused at the start until the pre-queue's places are checked",
            starts_in.as_secs_f64()
        );
    }

    let crowd = Arc::new(buyer::Crowd::new(&buyers, check_draw));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..buyers.users {
        let crowd = crowd.clone();
        let offset = buyers
            .ramp
            .mul_f64(index as f64 / buyers.users.max(1) as f64);
        tasks.spawn(async move { crowd.buyer(index, started, offset).await });
    }
    let progress = tokio::spawn(crate::report::progress(buyers.recorder.clone(), started));

    let mut samples = Vec::new();
    let mut resumed_at = (!check_draw).then(|| started + starts_in.min(buyers.deadline));
    let mut draw = None;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let end = started + buyers.deadline;
    while Instant::now() < end {
        ticker.tick().await;
        match room.stats().await {
            Ok(stats) => {
                samples.push(Sample::of(&stats, started));
                if check_draw && draw.is_none() && stats.order.seed.is_some() {
                    let ready =
                        crowd.places_read() || Instant::now() >= started + starts_in + DRAW_WAIT;
                    if ready {
                        let (pre_queue, places) = crowd.close_draw();
                        draw = Some(draw::check(
                            pre_queue,
                            &places,
                            &before.order.commitment,
                            stats.order.seed.as_deref(),
                        ));
                        room.change(serde_json::json!({"paused": false})).await?;
                        resumed_at = Some(Instant::now());
                    }
                }
            }
            Err(e) => tracing::warn!(error = format!("{e:#}"), "room stats not read"),
        }
    }
    while tasks.join_next().await.is_some() {}
    progress.abort();
    crate::report::end_progress();
    // After the run, for the count out of order only: nobody visits any more.
    let out_of_order = match room.stats().await {
        Ok(stats) => stats.out_of_order,
        Err(_) => samples.last().map_or(0, |s| s.out_of_order),
    };
    // The last second's sample may catch buyers already stopping.
    let until = buyers.deadline.as_secs_f64() - 1.0;
    let report = measure::report(
        &before,
        samples,
        resumed_at.map(|at| ((at - started).as_secs_f64(), until)),
        draw,
        crowd.journeys(),
        out_of_order,
    );
    let timeline = Timeline {
        started,
        last_answer: crowd.last_answer(),
        last_created: crowd.last_created(),
        connections: buyers.users,
    };
    Ok((timeline, report))
}
