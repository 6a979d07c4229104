//! Command line: one binary, a subcommand per job. Configuration itself comes from
//! the environment (see `config`); flags only say what to do.

use clap::{Parser, Subcommand};

pub use crate::seed::SeedArgs;

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
    /// Drive a running herdgate with a load scenario, then check the invariants
    /// (runs `herdgate-load`; `herdgate load --help` lists its arguments).
    #[command(disable_help_flag = true)]
    Load {
        /// Passed to `herdgate-load` as they are.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
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
            | Command::Load { .. } => None,
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
pub struct TokenArgs {
    /// The user's id in PostgreSQL.
    #[arg(long)]
    pub user: i64,
    /// Print tokens for this many users, ids `user`, `user + 1`, ..., one per line.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,
}
