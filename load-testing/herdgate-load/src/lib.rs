//! `herdgate-load` (also run as `herdgate load`): the project's own load
//! generator, for machines without k6. A client of herdgate in a crate of its
//! own: the gateway does not depend on it, it depends on the gateway's library
//! for the configuration, the token signer and the stores' checks.
//!
//! A run resolves its plan (`plan`), finds its users and seats in PostgreSQL and
//! signs their tokens (`users`), opens its connections and releases them all at
//! once (`run`, over `client`), measures every answer (`stats`), then waits for
//! the writer and checks the invariants (`invariants`), and reports (`report`,
//! with a latency picture from `svg`). The waiting-room scenario has a driver
//! of its own (`room`): a task per buyer, polling when the server says, and the
//! room's admissions a second against its set rate. It talks to the `--base` server only, and
//! every run stops by itself.

pub mod client;
pub mod invariants;
pub mod plan;
pub mod report;
pub mod room;
pub mod run;
pub mod stats;
pub mod svg;
pub mod users;

use std::sync::Arc;

use anyhow::Context;

pub use plan::Scenario;
use plan::{Shared, Sizes};
use report::{Sellout, Summary, thousands};
use stats::{Percentiles, Recorder};

use herdgate::{auth::Auth, config::Config, holds::Store};

/// The command line of `herdgate-load` (and of `herdgate load`, which runs it).
/// Configuration comes from the environment, as for every herdgate command.
#[derive(Debug, clap::Parser)]
#[command(
    name = "herdgate-load",
    version,
    about = "Drive a running herdgate with a load scenario, then check the invariants."
)]
pub struct LoadArgs {
    /// What the virtual users do.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// The herdgate to drive; the only address the generator talks to.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub base: String,
    /// Distinct users (load-test users from `herdgate seed --users`; missing ones are added).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=5_000_000))]
    pub users: u32,
    /// Seats of the event to use (its first K available ones); default per scenario.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=5_000_000))]
    pub seats: Option<u32>,
    /// The event whose seats are booked (or whose waiting room is visited);
    /// default 1, or 5 (the seed's room) for waiting-room, join and look.
    #[arg(long)]
    pub event: Option<i64>,
    /// Open connections, one virtual user at a time on each; default per scenario.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: Option<u32>,
    /// Stop after this long (e.g. 30s).
    #[arg(long, value_parser = herdgate::config::parse_duration, conflicts_with = "requests")]
    pub duration: Option<std::time::Duration>,
    /// Stop after this many requests.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Requests per second across all connections, on a fixed schedule (open loop):
    /// latency counts from when a request was due, so a stalled server cannot hide it.
    #[arg(long)]
    pub rate: Option<f64>,
    /// A request not answered by then counts as an error and its connection is replaced.
    #[arg(long, default_value = "10s", value_parser = herdgate::config::parse_duration)]
    pub timeout: std::time::Duration,
    /// How long to wait for PostgreSQL to hold every acknowledged booking after the run.
    #[arg(long, default_value = "120s", value_parser = herdgate::config::parse_duration)]
    pub drain_timeout: std::time::Duration,
    /// Skip the post-run drain and invariant checks (for a herdgate whose stores are out of reach).
    #[arg(long)]
    pub no_check: bool,
    /// Where to write the latency picture (SVG); none is drawn without it.
    #[arg(long)]
    pub svg: Option<std::path::PathBuf>,
    /// Print one JSON summary object as the last line of standard output.
    #[arg(long)]
    pub json: bool,
    /// waiting-room: the buyers who walk away, half while in line (their place
    /// lapses), half once admitted without booking (the admission idles out).
    #[arg(long, default_value_t = 0.1, value_parser = parse_share)]
    pub leave: f64,
    /// waiting-room: buyers arrive evenly over this long from the start.
    #[arg(long, default_value = "5s", value_parser = herdgate::config::parse_duration)]
    pub ramp: std::time::Duration,
    /// waiting-room: set the room's admissions per second first, through the
    /// operator API (HERDGATE_OPERATOR_TOKEN from the environment).
    #[arg(long)]
    pub admission_rate: Option<f64>,
    /// waiting-room: set the room's most admissions at once first, likewise.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=2_147_483_647))]
    pub max_active: Option<u32>,
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("{s:?} is not a share from 0 to 1")),
    }
}

/// Latency shards: enough that workers rarely wait on each other.
const SHARDS: usize = 16;

/// Runs a scenario to its end and checks the invariants; progress goes to
/// standard error, nothing to standard output.
pub async fn run(config: &Config, args: &LoadArgs) -> anyhow::Result<Summary> {
    let sizes = Sizes::resolve(args).map_err(anyhow::Error::msg)?;
    let target = client::Target::resolve(&args.base).await?;
    herdgate::limits::raise_open_files(sizes.connections)?;
    let pg = config.pg.pool()?;
    let db = pg
        .get()
        .await
        .context("failed to connect to PostgreSQL (DATABASE_URL)")?;
    let user_ids = users::load_users(&db, args.users).await?;
    let event = sizes.event;
    let seats = users::free_seats(&db, event, sizes.seats).await?;
    anyhow::ensure!(
        !seats.is_empty(),
        "event {event} has no available seats in PostgreSQL (seeded? sold out already?)"
    );
    let seat_count = seats.len();
    let tokens = Arc::new(users::Tokens::new(Auth::new(&config.auth)?, user_ids));
    let recorder = Arc::new(Recorder::new(SHARDS));
    let shared = Arc::new(Shared::new(args.scenario, sizes.users, seats));
    eprintln!(
        "load: {} against {}: {} users, {} seats of event {}, {} connections",
        args.scenario.name(),
        args.base,
        thousands(sizes.users as u64),
        thousands(seat_count as u64),
        event,
        thousands(sizes.connections as u64)
    );
    let (timeline, room) = match args.scenario {
        Scenario::WaitingRoom => {
            let buyers = room::Buyers {
                target,
                event,
                users: sizes.users,
                deadline: sizes.stop.deadline,
                ramp: args.ramp,
                leave: args.leave,
                timeout: args.timeout,
                seats: shared.seats.clone(),
                tokens,
                recorder: recorder.clone(),
            };
            let change = room::Change {
                admission_rate: args.admission_rate,
                max_active: args.max_active,
            };
            let (timeline, report) = room::run(buyers, change, config).await?;
            (timeline, Some(report))
        }
        _ => {
            let driver = Arc::new(run::Driver {
                target,
                event,
                sizes: sizes.clone(),
                shared: shared.clone(),
                tokens,
                recorder: recorder.clone(),
                timeout: args.timeout,
            });
            (driver.run().await?, None)
        }
    };
    let snapshot = recorder.snapshot();
    let latency = Percentiles::of(&snapshot.latency);
    let secs = timeline.last_answer.as_secs_f64();
    let throughput = snapshot.requests as f64 / secs.max(1e-9);

    // Drawn only when asked for: a run must not leave files where it was started.
    let picture = args.svg.clone();
    let created = invariants::Created::parse(&recorder.created());
    let mut summary = Summary {
        scenario: args.scenario,
        base: args.base.clone(),
        event,
        users: sizes.users,
        seats: seat_count,
        connections: timeline.connections,
        rate: sizes.rate,
        requests: snapshot.requests,
        duration_secs: secs,
        throughput,
        statuses: snapshot
            .statuses
            .iter()
            .map(|(code, n)| (code.to_string(), *n))
            .collect(),
        failures: snapshot.failures,
        errors: snapshot.errors,
        latency_ms: latency,
        histogram: picture.as_ref().map(|p| p.display().to_string()),
        sellout: (args.scenario == Scenario::Sellout).then(|| Sellout {
            seats: seat_count,
            held: created.ids.len() as u64,
            all_held_secs: (shared.left() == 0)
                .then_some(timeline.last_created)
                .flatten()
                .map(|d| d.as_secs_f64()),
            in_postgres_secs: None,
        }),
        writer_lag_secs: None,
        waiting_room: room,
        invariants: Vec::new(),
        passed: true,
    };
    if let Some(picture) = &picture {
        match &summary.waiting_room {
            // What this scenario is about: admissions a second against the set rate.
            Some(room) => std::fs::write(picture, room.picture(&summary))
                .with_context(|| format!("failed to write {}", picture.display()))?,
            None => draw(&summary, &snapshot.latency, picture)?,
        }
    }
    if args.no_check {
        return Ok(summary);
    }

    eprintln!(
        "load: waiting for PostgreSQL to hold {} acknowledged bookings",
        thousands(created.ids.len() as u64)
    );
    let drained = invariants::drain(&db, &created, args.drain_timeout).await?;
    if let Some(at) = drained {
        let last_answer = timeline.started + timeline.last_answer;
        summary.writer_lag_secs = Some(at.saturating_duration_since(last_answer).as_secs_f64());
        if let Some(sellout) = &mut summary.sellout {
            sellout.in_postgres_secs = Some((at - timeline.started).as_secs_f64());
        }
    }
    // Benchmarks stop their CPU clocks here (load-testing/cpu.py --until): what
    // follows audits the stores, it is not the cost of the run.
    eprintln!("load: drained; checking the invariants");
    let store = Store::connect(&config.redis).await?;
    summary.invariants =
        invariants::check(&pg, &store, event, &created, args.drain_timeout).await?;
    summary.passed = summary.invariants.iter().all(|v| v.pass);
    Ok(summary)
}

/// Writes the latency picture, titled with the run's figures.
fn draw(
    summary: &Summary,
    latency: &hdrhistogram::Histogram<u64>,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let title = format!(
        "herdgate load {}: {} requests, {} req/s, {} connections",
        summary.scenario.name(),
        thousands(summary.requests),
        thousands(summary.throughput as u64),
        thousands(summary.connections as u64)
    );
    let p = &summary.latency_ms;
    let subtitle = format!(
        "p50 {}  p99 {}  p99.9 {}  max {}   {}",
        report::millis(p.p50),
        report::millis(p.p99),
        report::millis(p.p999),
        report::millis(p.max),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    std::fs::write(path, svg::render(latency, &title, &subtitle))
        .with_context(|| format!("failed to write {}", path.display()))
}

/// `herdgate-load`: runs, prints the summary (and `--json`), fails when an invariant did.
pub async fn run_cli(config: &Config, args: &LoadArgs) -> anyhow::Result<()> {
    let summary = run(config, args).await?;
    print!("{}", summary.render());
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    anyhow::ensure!(summary.passed, "an invariant failed");
    Ok(())
}
