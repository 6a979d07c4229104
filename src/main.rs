//! Parse the command line, set up telemetry, read the configuration, run the
//! chosen subcommand. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;
use herdgate::{
    cli::{Cli, Command},
    config::{Config, Env},
    migrate, seed,
    serve::{self, Role},
    telemetry,
};

/// sysexits' EX_USAGE: the configuration is wrong, retrying will not help.
const EX_USAGE: u8 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    let config = match Config::from_env(&Env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("herdgate: bad configuration: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve::run_until_signal(config, Role::All).await,
        Command::Gateway => serve::run_until_signal(config, Role::Gateway).await,
        Command::Writer => serve::run_until_signal(config, Role::Writer).await,
        Command::Migrate => migrate::run_cli(&config).await,
        Command::Seed(args) => seed::run_cli(&config, &args).await,
        Command::Check(args) => herdgate::check::run_cli(&config, args.wait).await,
        Command::Token(args) => herdgate::auth::print_tokens(&config, args.user, args.count).await,
        Command::Load(args) => herdgate::load::run_cli(&config, &args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "herdgate failed");
            eprintln!("herdgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
