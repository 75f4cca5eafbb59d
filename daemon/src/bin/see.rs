//! `see up`: starts an SEE (the VMM) with its PTO daemon, prints the URL, and stops both
//! cleanly on Ctrl-C or SIGTERM, or when either dies (exiting non-zero with a message saying
//! which and why).
//!
//! ```text
//! see up [--listen 127.0.0.1:8080] [--predictor markov] [--config see.toml] [daemon flags...]
//!        [--vmm PATH] [--kernel PATH] [--daemon PATH] [--memory MiB] [--run-dir DIR]
//! ```

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use see_daemon::{
    launch::{LaunchSpec, Launched},
    Config,
};

#[path = "../args.rs"]
mod args;

#[derive(Parser, Debug)]
#[command(name = "see", version, about = "Start an SEE with its PTO")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start the daemon and the VMM, wait for the guest, serve until Ctrl-C.
    Up(UpArgs),
}

#[derive(Args, Debug)]
struct UpArgs {
    #[command(flatten)]
    daemon: args::ServeArgs,
    /// see-vmm [default: beside this binary].
    #[arg(long, env = "SEE_VMM_BIN")]
    vmm: Option<PathBuf>,
    /// see-daemon [default: beside this binary].
    #[arg(long, env = "SEE_DAEMON_BIN")]
    daemon_bin: Option<PathBuf>,
    /// see-signer, which holds the key [default: beside this binary].
    #[arg(long, env = "SEE_SIGNER_BIN")]
    signer_bin: Option<PathBuf>,
    /// FOR DEVELOPMENT: no signer process; the daemon reads the key and signs itself.
    #[arg(long, conflicts_with = "signer_bin")]
    in_process_key: bool,
    /// The guest image.
    #[arg(
        long,
        env = "SEE_KERNEL_IMAGE",
        default_value = "images/see-kernel/target/x86_64-unknown-none/release/see-kernel"
    )]
    kernel: PathBuf,
    /// Guest RAM, MiB.
    #[arg(long, default_value_t = 256)]
    memory: u32,
    /// Socket, configuration and logs (console.log, daemon.log) go here.
    #[arg(long, default_value = "target/see/run")]
    run_dir: PathBuf,
    /// Longest wait for the guest to come up, seconds.
    #[arg(long, default_value_t = 60)]
    ready_timeout_s: u64,
}

fn beside_me(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn up(a: UpArgs) -> Result<(), String> {
    let config = Config::try_from(a.daemon).map_err(|e| e.to_string())?;
    let spec = LaunchSpec {
        daemon_bin: a.daemon_bin.unwrap_or_else(|| beside_me("see-daemon")),
        vmm_bin: a.vmm.unwrap_or_else(|| beside_me("see-vmm")),
        signer_bin: (!a.in_process_key)
            .then(|| a.signer_bin.unwrap_or_else(|| beside_me("see-signer"))),
        kernel: a.kernel,
        config: config.clone(),
        memory_mib: a.memory,
        run_dir: a.run_dir,
        ready_timeout: Duration::from_secs(a.ready_timeout_s),
        daemon_log_to_file: false,
        daemon_log_level: None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| format!("cannot handle signal {signal}: {e}"))?;
    }
    let mut see = Launched::start(&spec).map_err(|e| e.to_string())?;
    let url = see.address().to_owned();
    println!(
        "SEE ready: {url} (predictor {}, vmm pid {}, daemon pid {}, run directory {})",
        config.predictor,
        see.vmm_pid(),
        see.daemon_pid(),
        see.run_dir().display()
    );
    if let Some(base) = url.strip_prefix("http://") {
        println!(
            "try: curl -s -X POST http://{base}/v1/requests -d '{{\"session\":\"s1\",\"app\":\"shop\",\"type\":\"home\"}}'"
        );
    }
    println!("Ctrl-C stops the SEE and its daemon.");
    while !stop.load(Ordering::Acquire) {
        if let Some(died) = see.check() {
            see.kill();
            return Err(died.to_string());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("see: stopping");
    let (daemon, vmm) = see
        .stop(Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    if daemon.success() && vmm.success() {
        eprintln!("see: stopped");
        Ok(())
    } else {
        Err(format!(
            "stopped, but see-daemon ended with {daemon} and see-vmm with {vmm}"
        ))
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let Cmd::Up(args) = Cli::parse().command;
    match up(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("see: {e}");
            ExitCode::FAILURE
        }
    }
}
