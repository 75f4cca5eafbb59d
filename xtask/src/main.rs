//! Project automation, run as `cargo xtask <command>`.
//!
//! Every multi-step job of the project (building the guest image, running the demo, running the
//! whole test suite as CI does) lives here, so that a fresh machine needs nothing but cargo.

mod bench;
mod deps;
mod fuzz;
mod image;
mod keys;
mod run;
mod tasks;
mod test;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "SEE-PTO project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the SEE guest kernel image (images/see-kernel).
    Image,
    /// Create the development signing key pair in target/see-keys/ if it is missing.
    Keys,
    /// Build the image and the VMM, boot the image and show the console and the exit code.
    Run(run::RunArgs),
    /// Start an SEE with its PTO daemon (`see up`; arguments after `--` go to it).
    Serve {
        /// Arguments for `see up` (default `--listen 127.0.0.1:8080`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run a benchmark and print its figures (e.g. `bench boot`).
    Bench(bench::BenchArgs),
    /// Run every fuzz target in fuzz/ for a bounded time (installs nightly and cargo-fuzz).
    Fuzz(fuzz::FuzzArgs),
    /// Run the whole test suite: format, lints, docs, unit and end-to-end tests (what CI runs).
    Test(test::TestArgs),
    /// Install the system packages the tests and benches need (QEMU, clang-19, lld-19) when
    /// they are missing.
    Deps,
    /// Build the C task modules tasks/*.c into target/tasks/*.wasm and check each.
    Tasks,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Image => image::run(),
        Command::Keys => keys::run(),
        Command::Run(args) => run::run(&args),
        Command::Serve { args } => run::serve(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Deps => deps::run(),
        Command::Tasks => tasks::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root (the parent of this crate's manifest directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_path_buf()
}

/// Runs a command to completion, failing with a message naming it when it does not succeed.
pub fn run_step(name: &str, command: &mut std::process::Command) -> Result<(), String> {
    eprintln!("xtask: == {name}");
    let status = command
        .status()
        .map_err(|e| format!("{name}: could not start {:?}: {e}", command.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} failed ({status})"))
    }
}
