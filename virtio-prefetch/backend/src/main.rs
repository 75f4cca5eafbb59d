//! `see-prefetch-backend`: the virtio-prefetch vhost-user daemon.
//!
//! ```text
//! see-prefetch-backend --socket /tmp/prefetch.sock --store ./store --key target/see-keys/pto.key [--floors FILE] [--prefetch FILE] [--no-manifests]
//! see-prefetch-backend store add --store ./store --id 3 --version 1 --kind data --app 1 --file blob.bin [--floors floors.json]
//! ```
//! Serving ends when the VMM disconnects (exit 0). `--prefetch FILE` lists `app task resource`
//! per line: prefetch orders sent as soon as the guest says hello. Exit codes: 0 success;
//! 2 usage (clap's message and usage on stderr): an unknown or missing argument (serving needs
//! `--socket`, `--store` and `--key`), a value that does not parse (`--kind` other than code or
//! data, a number that is not one); 1 any other error, with a message on stderr: a key, store,
//! prefetch list or file that cannot be read or used, a socket that cannot be listened on.

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::{Args, Parser, Subcommand};
use see_prefetch_backend::{
    floors::Floors,
    signer::load_key,
    store::{parse_kind, DiskStore},
    Backend, BackendConfig, BackendEvent, PrefetchOrder,
};
use virtio_prefetch_wire::ResourceKind;

#[derive(Parser)]
#[command(
    about = "virtio-prefetch vhost-user backend",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Args)]
struct ServeArgs {
    /// Unix socket to listen on for the VMM.
    #[arg(long, required = true)]
    socket: Option<PathBuf>,
    /// Store directory.
    #[arg(long, required = true)]
    store: Option<PathBuf>,
    /// PTO signing key (P-384, PKCS#8 PEM).
    #[arg(long, required = true)]
    key: Option<PathBuf>,
    /// Prefetch orders (`app task resource` per line) sent after the guest's hello.
    #[arg(long)]
    prefetch: Option<PathBuf>,
    /// The version floors file (JSON, only ever rises; created if missing): sent signed to
    /// every guest session. Without it the floors live in this process only.
    #[arg(long)]
    floors: Option<PathBuf>,
    /// Sign every bundle on its own even when the driver takes batch manifests (F_MANIFEST).
    #[arg(long)]
    no_manifests: bool,
    /// Threads fetching from the store (1 to 64); with more than one, prefetches leave one to
    /// demands.
    #[arg(long, default_value_t = see_prefetch_backend::DEFAULT_FETCH_WORKERS as u64,
          value_parser = clap::value_parser!(u64).range(1..=see_prefetch_backend::MAX_FETCH_WORKERS as u64))]
    fetch_workers: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the store.
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Add a version of a resource.
    Add {
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        id: u64,
        #[arg(long)]
        version: u64,
        /// code or data
        #[arg(long, value_parser = kind_arg)]
        kind: ResourceKind,
        #[arg(long)]
        app: u32,
        #[arg(long)]
        file: PathBuf,
        /// The version floors file to raise to the published version (the serving backend's
        /// `--floors`): guests refuse older versions from now on, across reboots too.
        #[arg(long)]
        floors: Option<PathBuf>,
    },
}

/// `--kind`: a bad value is a usage error (exit 2).
fn kind_arg(name: &str) -> Result<ResourceKind, String> {
    parse_kind(name).ok_or_else(|| format!("must be code or data, not {name:?}"))
}

fn parse_orders(path: &PathBuf) -> Result<Vec<PrefetchOrder>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(n, line)| {
            let fields: Vec<_> = line.split_whitespace().collect();
            match fields.as_slice() {
                [app, task, res] => match (app.parse(), task.parse(), res.parse()) {
                    (Ok(app_id), Ok(task_id), Ok(resource_id)) => Ok(PrefetchOrder {
                        app_id,
                        task_id,
                        resource_id,
                    }),
                    _ => Err(format!(
                        "{}:{}: numbers expected: {line:?}",
                        path.display(),
                        n + 1
                    )),
                },
                _ => Err(format!(
                    "{}:{}: expected `app task resource`: {line:?}",
                    path.display(),
                    n + 1
                )),
            }
        })
        .collect()
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let (Some(socket), Some(store), Some(key)) = (args.socket, args.store, args.key) else {
        return Err("--socket, --store and --key are required (see --help)".into());
    };
    let store = DiskStore::open(&store).map_err(|e| e.to_string())?;
    let key = load_key(&key).map_err(|e| e.to_string())?;
    let orders = match &args.prefetch {
        Some(path) => parse_orders(path)?,
        None => Vec::new(),
    };
    let mut config = BackendConfig::new(&socket, Arc::new(store), key);
    config.batch_manifests = !args.no_manifests;
    if let Some(path) = &args.floors {
        config.floors = Arc::new(Floors::open(path).map_err(|e| e.to_string())?);
    }
    config.fetch_workers = args.fetch_workers as usize;
    let backend = Backend::spawn(config).map_err(|e| e.to_string())?;
    log::info!("listening on {}", socket.display());
    for order in orders {
        backend.prefetch(order).map_err(|e| e.to_string())?;
    }
    while backend.is_running() {
        if let Some(event) = backend.next_event(Duration::from_millis(200)) {
            match event {
                BackendEvent::Refused { .. } | BackendEvent::Malformed { .. } => {
                    log::warn!("{event:?}")
                }
                _ => log::info!("{event:?}"),
            }
        }
    }
    log::info!("frontend disconnected; stats: {:?}", backend.stats());
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Store(StoreCommand::Add {
            store,
            id,
            version,
            kind,
            app,
            file,
            floors,
        })) => (|| {
            let content = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            // A corrupt floors file stops the publication before the store changes.
            let floors = floors
                .map(|path| Floors::open(&path))
                .transpose()
                .map_err(|e| e.to_string())?;
            let store = DiskStore::open(&store).map_err(|e| e.to_string())?;
            store
                .add(id, version, kind, app, &content)
                .map_err(|e| e.to_string())?;
            if let Some(floors) = floors {
                floors.raise(id, version).map_err(|e| e.to_string())?;
            }
            Ok(())
        })(),
        None => serve(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("see-prefetch-backend: {message}");
            ExitCode::FAILURE
        }
    }
}
