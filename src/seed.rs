//! Demo data from seed/events.json: events with realistic venues, a waiting
//! room in front of one of them, the demo user and N load-test users. Safe to
//! run again: what exists is left alone.
//!
//! Seats and users are generated inside PostgreSQL (`generate_series`), so 50,000
//! seats or 200,000 users take one statement each. Every load-test user shares
//! one argon2 hash, computed once: hashing 200,000 passwords would take minutes.

use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::{auth::hash_password, config::Config, status::EventStatus};

/// `herdgate seed`'s arguments, owned by the subcommand.
#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// Seats of the demo event 1.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub seats: u32,
    /// Load-test users (user1@load.test ... userN@load.test, password "password").
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(0..=5_000_000))]
    pub users: u32,
}

const SEED: &str = include_str!("../seed/events.json");

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeedFile {
    events: Vec<EventSeed>,
    demo_user: UserSeed,
    load_users: LoadUsers,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventSeed {
    id: i64,
    name: String,
    venue: String,
    starts_at: DateTime<Utc>,
    status: EventStatus,
    sections: Vec<String>,
    seats_per_row: i32,
    /// A number, or "demo" for the size given on the command line.
    seats: serde_json::Value,
    /// Buyers of this event queue first.
    #[serde(default)]
    waiting_room: Option<RoomSeed>,
}

/// A demo waiting room, its times counted from the seed run: it opens, and
/// its draw starts, that long after the seed runs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoomSeed {
    opens_after_seconds: f64,
    starts_after_seconds: f64,
    admit_per_sec: f64,
    max_active: i32,
    idle_seconds: i32,
    session_cap_seconds: i32,
    grace_seconds: i32,
    proof_bits: i16,
}

#[derive(Debug, Deserialize)]
struct UserSeed {
    email: String,
    name: String,
    password: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoadUsers {
    email_domain: String,
    password: String,
}

/// How much to seed.
#[derive(Debug, Clone, Copy)]
pub struct SeedOptions {
    /// Seats of the demo event (the one whose `seats` is "demo").
    pub demo_seats: u32,
    /// Load-test users `user1@load.test` ... `userN@load.test`.
    pub users: u32,
}

/// What a seed run did.
#[derive(Debug, Default)]
pub struct SeedReport {
    pub lines: Vec<String>,
}

/// Email of load-test user `n` (1-based); the load generator uses the same rule.
pub fn load_user_email(n: u32) -> String {
    format!("user{n}@load.test")
}

pub async fn run(
    client: &tokio_postgres::Client,
    options: SeedOptions,
) -> anyhow::Result<SeedReport> {
    let seed: SeedFile = serde_json::from_str(SEED).context("seed/events.json is malformed")?;
    let mut report = SeedReport::default();
    for event in &seed.events {
        let started = Instant::now();
        let seats = match &event.seats {
            serde_json::Value::String(s) if s == "demo" => options.demo_seats as i32,
            v => v.as_i64().context("seats must be a number or \"demo\"")? as i32,
        };
        let added = seed_event(client, event, seats).await?;
        report.lines.push(match added {
            Some(n) => format!(
                "event {} ({}): {n} seats in {:.2?}",
                event.id,
                event.name,
                started.elapsed()
            ),
            None => format!("event {} ({}): already seeded", event.id, event.name),
        });
        if let Some(room) = &event.waiting_room {
            report.lines.push(seed_room(client, event.id, room).await?);
        }
    }
    client
        .batch_execute(
            "SELECT setval(pg_get_serial_sequence('events', 'id'),
                           (SELECT coalesce(max(id), 1) FROM events))",
        )
        .await?;

    let demo = &seed.demo_user;
    let added = client
        .execute(
            "INSERT INTO users (email, name, password_hash) VALUES ($1, $2, $3)
             ON CONFLICT (email) DO NOTHING",
            &[&demo.email, &demo.name, &hash_password(&demo.password)?],
        )
        .await?;
    report.lines.push(format!(
        "user {}: {}",
        demo.email,
        if added == 1 { "added" } else { "already there" }
    ));

    let started = Instant::now();
    let added = add_load_users(client, &seed.load_users, options.users).await?;
    report.lines.push(format!(
        "load-test users: {added} added of {} in {:.2?}",
        options.users,
        started.elapsed()
    ));
    Ok(report)
}

/// Makes sure load-test users 1..=`count` exist; how many were added.
pub async fn ensure_load_users(client: &tokio_postgres::Client, count: u32) -> anyhow::Result<u64> {
    let seed: SeedFile = serde_json::from_str(SEED).context("seed/events.json is malformed")?;
    add_load_users(client, &seed.load_users, count).await
}

async fn add_load_users(
    client: &tokio_postgres::Client,
    load: &LoadUsers,
    count: u32,
) -> anyhow::Result<u64> {
    anyhow::ensure!(
        load_user_email(1).ends_with(&format!("@{}", load.email_domain)),
        "seed/events.json loadUsers.emailDomain must match load_user_email()"
    );
    let added = client
        .execute(
            "INSERT INTO users (email, name, password_hash)
             SELECT 'user' || n || '@' || $1, 'Load User ' || n, $2
               FROM generate_series(1, $3::int) AS n
             ON CONFLICT (email) DO NOTHING",
            &[
                &load.email_domain,
                &hash_password(&load.password)?,
                &(count as i32),
            ],
        )
        .await?;
    Ok(added)
}

/// Puts the event behind its demo waiting room, unless it has one; the
/// report's line. The draw's seed is 128 random bits, made here, so nobody
/// knows it before its commitment is published.
async fn seed_room(
    client: &tokio_postgres::Client,
    event_id: i64,
    room: &RoomSeed,
) -> anyhow::Result<String> {
    let seed = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let added = client
        .query_opt(
            "INSERT INTO waiting_rooms (event_id, opens_at, starts_at, admit_per_sec, max_active,
                                        idle_ms, session_cap_ms, grace_ms, seed, proof_bits)
             VALUES ($1, now() + make_interval(secs => $2), now() + make_interval(secs => $3),
                     $4, $5, $6 * 1000, $7 * 1000, $8 * 1000, $9, $10)
             ON CONFLICT (event_id) DO NOTHING
             RETURNING starts_at",
            &[
                &event_id,
                &room.opens_after_seconds,
                &room.starts_after_seconds,
                &room.admit_per_sec,
                &room.max_active,
                &room.idle_seconds,
                &room.session_cap_seconds,
                &room.grace_seconds,
                &seed,
                &room.proof_bits,
            ],
        )
        .await
        .with_context(|| format!("failed to seed the waiting room of event {event_id}"))?;
    Ok(match added {
        Some(row) => format!(
            "waiting room of event {event_id}: open, draws its order at {}, admits {} a second",
            row.get::<_, DateTime<Utc>>(0).format("%H:%M:%S UTC"),
            room.admit_per_sec
        ),
        None => format!("waiting room of event {event_id}: already there"),
    })
}

/// Inserts the event and its seats; `None` when the event already has seats.
async fn seed_event(
    client: &tokio_postgres::Client,
    event: &EventSeed,
    seats: i32,
) -> anyhow::Result<Option<i32>> {
    anyhow::ensure!(!event.sections.is_empty() && event.seats_per_row > 0 && seats > 0);
    client
        .execute(
            "INSERT INTO events (id, name, venue, starts_at, status) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO NOTHING",
            &[
                &event.id,
                &event.name,
                &event.venue,
                &event.starts_at,
                &event.status,
            ],
        )
        .await?;
    let existing: i64 = client
        .query_one(
            "SELECT count(*) FROM seats WHERE event_id = $1",
            &[&event.id],
        )
        .await?
        .get(0);
    if existing > 0 {
        return Ok(None);
    }
    // Seat n (0-based) fills sections in order, each section rows of seatsPerRow;
    // rows are lettered A..Z, AA..ZZ, then numbered.
    client
        .execute(
            "WITH layout AS (
                 SELECT $2::text[] AS sections, $3::int AS per_row,
                        ceil($4::int::numeric / (cardinality($2::text[]) * $3))::int AS rows
             ), numbered AS (
                 SELECT sections, per_row, n, (n % (rows * per_row)) / per_row AS r,
                        n / (rows * per_row) AS s
                   FROM layout, generate_series(0, $4::int - 1) AS n
             )
             INSERT INTO seats (event_id, section, row_label, number)
             SELECT $1, sections[1 + s],
                    CASE WHEN r < 26 THEN chr(65 + r)
                         WHEN r < 702 THEN chr(64 + r / 26) || chr(65 + r % 26)
                         ELSE (r + 1)::text END,
                    n % per_row + 1
               FROM numbered ORDER BY n",
            &[&event.id, &event.sections, &event.seats_per_row, &seats],
        )
        .await
        .with_context(|| format!("failed to seed the seats of event {}", event.id))?;
    Ok(Some(seats))
}

/// `herdgate seed`.
pub async fn run_cli(config: &Config, args: &SeedArgs) -> anyhow::Result<()> {
    let (client, connection) = config
        .pg
        .pg_config()
        .connect(tokio_postgres::NoTls)
        .await
        .context("failed to connect to PostgreSQL (DATABASE_URL); run `herdgate migrate` first")?;
    tokio::spawn(connection);
    let started = Instant::now();
    let options = SeedOptions {
        demo_seats: args.seats,
        users: args.users,
    };
    let report = run(&client, options)
        .await
        .context("seeding failed (is the schema migrated? run `herdgate migrate`)")?;
    for line in report.lines {
        println!("seed: {line}");
    }
    println!("seed: done in {:.2?}", started.elapsed());
    Ok(())
}
