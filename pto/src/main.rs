//! `pto`: import traces, generate workloads, train, evaluate and query the predictors.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match cli::Cli::parse().run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pto: error: {e}");
            ExitCode::FAILURE
        }
    }
}
