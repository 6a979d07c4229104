//! Parse the command line, set up telemetry, read the configuration, run the
//! chosen subcommand. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;
use herdgate::{
    cli::{Cli, Command},
    config::{Config, Env},
    migrate, seed,
    serve::{self, Role},
    telemetry::{self, TraceConfig},
};

/// sysexits' EX_USAGE: the configuration is wrong, retrying will not help.
const EX_USAGE: u8 = 64;

/// jemalloc rather than glibc's malloc: a durable hold makes many small, short-lived
/// allocations across threads (requests, Redis replies, relay batches), and glibc's
/// malloc and free were a fifth of the gateway's CPU (perf). With jemalloc the gateway
/// spent about a tenth less CPU per durable hold (docs/performance.md); mimalloc did not
/// beat glibc beyond the noise.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Load { args } = &command {
        // It reads the configuration itself, and owns its own --help.
        let e = herdgate::load::exec(args);
        eprintln!("herdgate: {e:#}");
        return ExitCode::FAILURE;
    }
    let traces = command
        .service_name()
        .map(|service| TraceConfig::from_env(&Env, service))
        .transpose();
    let (traces, config) = match (traces, Config::from_env(&Env)) {
        (Ok(traces), Ok(config)) => (traces.flatten(), config),
        (Err(e), _) | (_, Err(e)) => {
            telemetry::init();
            eprintln!("herdgate: bad configuration: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let telemetry = telemetry::init_with(traces.as_ref());
    let result = match command {
        Command::Serve => serve::run_until_signal(config, Role::All).await,
        Command::Gateway => serve::run_until_signal(config, Role::Gateway).await,
        Command::Writer => serve::run_until_signal(config, Role::Writer).await,
        Command::Migrate => migrate::run_cli(&config).await,
        Command::Seed(args) => seed::run_cli(&config, &args).await,
        Command::Check(args) => herdgate::check::run_cli(&config, args.wait).await,
        Command::Token(args) => herdgate::auth::print_tokens(&config, args.user, args.count).await,
        Command::Load { .. } => unreachable!("handled before the configuration is read"),
    };
    if let Err(e) = &result {
        tracing::error!(error = format!("{e:#}"), "herdgate failed");
    }
    // After the drain: the spans of the last requests are exported too.
    telemetry.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herdgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
