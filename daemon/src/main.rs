//! `see-daemon`: the PTO service for one SEE.
//!
//! ```text
//! see-daemon [--config see.toml] [--socket PATH] [--store DIR] [--key FILE] [--predictor KIND] ...
//! see-daemon store add --store DIR --id 3 --version 1 --kind data --app 1 --file blob.bin
//! see-daemon store publish --store DIR --id 40 --version 1 --app 1 [--fuel F] [--memory-mib M] task.wasm
//! see-daemon guest-cmdline [--config see.toml] ...
//! ```
//! Flags override the TOML file, which overrides the defaults (`Config`). Once the front door
//! listens, the daemon prints `see-daemon: listening on ADDRESS` on stdout; logs go to stderr
//! (`RUST_LOG`). SIGINT or SIGTERM: it stops taking requests, finishes or fails each one in
//! flight, flushes the history and the audit log and tells the guest to stop. Exit codes: 0
//! after a clean stop; 1 when it cannot start (the message says why); 2 for a usage error.
//!
//! Confinement (see `see_daemon::confine`): the store is filled first, then no_new_privs and
//! the Landlock file rules, then the drop to `--user` when root; each thread installs its
//! seccomp filter as it starts, and this thread once the daemon runs. `--no-sandbox` turns
//! all but `--user` off, for debugging.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

mod args;

use args::ServeArgs;
use clap::{Parser, Subcommand};
use see_daemon::{confine, wasm_task, Config, ConfigError};
use see_prefetch_backend::store::{parse_kind, DiskStore};
use see_sandbox::{Enforcement, SandboxError, UserSpec};
use virtio_prefetch_wire::ResourceKind;

#[derive(Parser, Debug)]
#[command(
    name = "see-daemon",
    version,
    about = "The PTO service: virtio-prefetch backend + predictive task orchestrator + HTTP API",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

/// How the daemon confines itself.
#[derive(clap::Args, Debug, Default)]
struct SandboxArgs {
    /// When started as root, run as this user once the store is filled (NAME, NAME:GROUP or
    /// UID:GID). Without root it is refused, unless the daemon already runs as exactly that
    /// user and group.
    #[arg(long)]
    user: Option<UserSpec>,
    /// Refuse to start when the kernel lacks Landlock or seccomp, instead of warning and
    /// running less confined.
    #[arg(long, conflicts_with = "no_sandbox")]
    require_sandbox: bool,
    /// FOR DEBUGGING ONLY: run unconfined (no no_new_privs, Landlock or seccomp), e.g. to
    /// attach a debugger or find a syscall missing from a thread's list. --user still applies.
    #[arg(long)]
    no_sandbox: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage the resource store.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Print the guest's kernel command line for this configuration.
    GuestCmdline(Box<ServeArgs>),
}

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// Add a version of a resource.
    Add {
        /// Store directory.
        #[arg(long)]
        store: PathBuf,
        /// Resource wire id.
        #[arg(long)]
        id: u64,
        /// Version (newer versions supersede older ones).
        #[arg(long)]
        version: u64,
        /// code or data.
        #[arg(long, value_parser = kind_arg)]
        kind: ResourceKind,
        /// The app allowed to claim it.
        #[arg(long)]
        app: u32,
        /// Its content.
        #[arg(long)]
        file: PathBuf,
    },
    /// Check a Wasm task module against the task interface and add it as a code resource;
    /// a module that fails the check is refused with the reason.
    Publish {
        /// Store directory.
        #[arg(long)]
        store: PathBuf,
        /// Resource wire id of the module.
        #[arg(long)]
        id: u64,
        /// Version (newer versions supersede older ones).
        #[arg(long)]
        version: u64,
        /// The app whose tasks run it.
        #[arg(long)]
        app: u32,
        /// The task's fuel (instruction budget), for its catalogue entry.
        #[arg(long, default_value_t = wasm_task::DEFAULT_FUEL)]
        fuel: u64,
        /// The task's memory limit in MiB, for its catalogue entry: the module's initial
        /// memory must fit.
        #[arg(long, default_value_t = wasm_task::DEFAULT_MEMORY_MIB)]
        memory_mib: u32,
        /// The module (`cargo xtask tasks` builds tasks/NAME.c into target/tasks/NAME.wasm).
        module: PathBuf,
    },
}

fn kind_arg(name: &str) -> Result<ResourceKind, String> {
    parse_kind(name).ok_or_else(|| format!("must be code or data, not {name:?}"))
}

/// Why a command failed (exit 1).
#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Daemon(Box<see_daemon::DaemonError>),
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] see_prefetch_backend::store::StoreError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("{path} refused: {source}")]
    Module {
        path: PathBuf,
        source: wasm_task::ModuleError,
    },
}

impl From<see_daemon::DaemonError> for MainError {
    fn from(e: see_daemon::DaemonError) -> Self {
        MainError::Daemon(Box::new(e))
    }
}

fn serve(args: ServeArgs, sandbox: SandboxArgs) -> Result<(), MainError> {
    let config = Config::try_from(args)?;
    // Names are looked up before Landlock hides the user database.
    let credentials = sandbox.user.as_ref().map(UserSpec::resolve).transpose()?;
    if let Some(c) = credentials {
        see_sandbox::check_drop(c)?;
    }
    // Still one thread and unconfined: fill the store, make the directories.
    confine::prepare(&config)?;
    let filters = if sandbox.no_sandbox {
        log::warn!("--no-sandbox: running without no_new_privs, Landlock or seccomp");
        None
    } else {
        let mode = Enforcement::from_require(sandbox.require_sandbox);
        confine::confine_process(&config, mode)?
    };
    // Before any thread starts: setuid must not reach a thread whose filter forbids it.
    if let Some(c) = credentials {
        see_sandbox::drop_privileges(c)?;
    }
    let mut daemon = see_daemon::start_confined(config, filters.map(Arc::new))?;
    // Landlock already holds for this thread; its seccomp list (next) allows no open.
    confine::read_hook();
    daemon.confine_main();
    println!("see-daemon: listening on {}", daemon.address());
    daemon.wait_for_signal()?;
    daemon.shutdown();
    Ok(())
}

fn run(cli: Cli) -> Result<(), MainError> {
    match cli.command {
        None => serve(cli.serve, cli.sandbox),
        Some(Command::GuestCmdline(args)) => {
            let config = Config::try_from(*args)?;
            let cat = config.load_catalogue()?;
            println!("{}", see_daemon::guest::cmdline_for(&cat, &config));
            Ok(())
        }
        Some(Command::Store(StoreCommand::Add {
            store,
            id,
            version,
            kind,
            app,
            file,
        })) => {
            let content = std::fs::read(&file).map_err(|source| MainError::Read {
                path: file.clone(),
                source,
            })?;
            DiskStore::open(&store)?.add(id, version, kind, app, &content)?;
            Ok(())
        }
        Some(Command::Store(StoreCommand::Publish {
            store,
            id,
            version,
            app,
            fuel,
            memory_mib,
            module,
        })) => {
            let wasm = std::fs::read(&module).map_err(|source| MainError::Read {
                path: module.clone(),
                source,
            })?;
            let runtime = see_task::Runtime::new();
            wasm_task::check_module(&runtime, &wasm, u64::from(memory_mib) << 20).map_err(
                |source| MainError::Module {
                    path: module.clone(),
                    source,
                },
            )?;
            DiskStore::open(&store)?.add(id, version, ResourceKind::Code, app, &wasm)?;
            println!(
                "published {}: resource {id} version {version} (code, app {app}, {} bytes); \
                 its task's catalogue entry: fuel = {fuel}, memory_mib = {memory_mib}",
                module.display(),
                wasm.len()
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("see-daemon: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use see_daemon::PredictorKind;

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("see.toml");
        std::fs::write(&path, "predictor = \"ppm\"\ntop_k = 5\n").unwrap();
        let cli = Cli::parse_from([
            "see-daemon",
            "--config",
            path.to_str().unwrap(),
            "--top-k",
            "2",
            "--budget",
            "2MiB",
        ]);
        let c = Config::try_from(cli.serve).unwrap();
        assert_eq!(c.predictor, PredictorKind::Ppm);
        assert_eq!(c.top_k, 2);
        assert_eq!(c.budget, 2 << 20);
        assert!(Cli::try_parse_from(["see-daemon", "--predictor", "lstm"]).is_err());
    }
}
