//! Command line: one binary, a subcommand per job. Configuration itself comes from
//! the environment (see `config`); flags only say what to do.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "herdgate", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything in one process: gateway and writer (the default).
    Serve,
    /// Run the gateway half: HTTP API, inventory loader and outbox relay.
    Gateway,
    /// Run the writer half: hold events from RabbitMQ into PostgreSQL.
    Writer,
    /// Apply the SQL migrations in migrations/ (creates the database if it is missing).
    Migrate,
    /// Load the demo events, venue seats and users from seed/ (safe to run again).
    Seed(SeedArgs),
    /// Print a signed bearer token for an existing user, alone on standard output.
    Token(TokenArgs),
    /// Compare every seat and live hold in Redis with PostgreSQL; exit 1 on any difference.
    Check(CheckArgs),
    /// Drive a running herdgate with a load scenario, then check the invariants.
    Load(LoadArgs),
}

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// What the virtual users do.
    #[arg(value_enum)]
    pub scenario: crate::load::Scenario,
    /// The herdgate to drive; the only address the generator talks to.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub base: String,
    /// Distinct users (load-test users from `herdgate seed --users`; missing ones are added).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=5_000_000))]
    pub users: u32,
    /// Seats of the event to use (its first K available ones); default per scenario.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=5_000_000))]
    pub seats: Option<u32>,
    /// The event whose seats are booked.
    #[arg(long, default_value_t = 1)]
    pub event: i64,
    /// Open connections, one virtual user at a time on each; default per scenario.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: Option<u32>,
    /// Stop after this long (e.g. 30s).
    #[arg(long, value_parser = crate::config::parse_duration, conflicts_with = "requests")]
    pub duration: Option<std::time::Duration>,
    /// Stop after this many requests.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Requests per second across all connections, on a fixed schedule (open loop):
    /// latency counts from when a request was due, so a stalled server cannot hide it.
    #[arg(long)]
    pub rate: Option<f64>,
    /// A request not answered by then counts as an error and its connection is replaced.
    #[arg(long, default_value = "10s", value_parser = crate::config::parse_duration)]
    pub timeout: std::time::Duration,
    /// How long to wait for PostgreSQL to hold every acknowledged booking after the run.
    #[arg(long, default_value = "120s", value_parser = crate::config::parse_duration)]
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
}

impl Command {
    /// The `service.name` of the processes that export traces: the long-running
    /// ones. One-shot commands export nothing.
    pub fn service_name(&self) -> Option<&'static str> {
        match self {
            Command::Serve => Some("herdgate"),
            Command::Gateway => Some("herdgate-gateway"),
            Command::Writer => Some("herdgate-writer"),
            Command::Migrate
            | Command::Seed(_)
            | Command::Token(_)
            | Command::Check(_)
            | Command::Load(_) => None,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// How long to wait for the writer to drain and the stores to agree (e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = crate::config::parse_duration)]
    pub wait: std::time::Duration,
}

#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// Seats of the demo event 1.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub seats: u32,
    /// Load-test users (user1@load.test ... userN@load.test, password "password").
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(0..=5_000_000))]
    pub users: u32,
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The user's id in PostgreSQL.
    #[arg(long)]
    pub user: i64,
    /// Print tokens for this many users, ids `user`, `user + 1`, ..., one per line.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,
}
