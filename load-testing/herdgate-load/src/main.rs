//! `herdgate-load`: parse the command line, set up logs, read the
//! configuration from the environment, run the scenario.

use std::process::ExitCode;

use clap::Parser;
use herdgate::{
    config::{Config, Env},
    telemetry,
};
use herdgate_load::LoadArgs;

/// sysexits' EX_USAGE: the configuration is wrong, retrying will not help.
const EX_USAGE: u8 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    let args = LoadArgs::parse();
    telemetry::init();
    let config = match Config::from_env(&Env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("herdgate-load: bad configuration: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    match herdgate_load::run_cli(&config, &args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herdgate-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}
