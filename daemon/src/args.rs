//! The daemon's flags, shared by `see-daemon` and `see up`: each overrides the configuration
//! file, which overrides the defaults.

use std::path::PathBuf;

use clap::Args;
use see_daemon::{Config, ConfigError, Listen, PredictorKind};

/// The daemon's flags; each overrides the configuration file.
#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// TOML configuration file (every key is a flag's name with `_` for `-`).
    #[arg(long, env = "SEE_DAEMON_CONFIG")]
    pub config: Option<PathBuf>,
    /// vhost-user socket the VMM connects to.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Resource store directory (filled with the catalogue's resources where missing).
    #[arg(long)]
    store: Option<PathBuf>,
    /// The PTO's signing key (P-384, PKCS#8 PEM): read by the signer `see up` starts, or by
    /// the daemon itself when it has no `--signer` (tests, development).
    #[arg(long, env = "SEE_PTO_SIGNING_KEY", conflicts_with = "signer")]
    key: Option<PathBuf>,
    /// Sign through the `see-signer` listening on this socket; the key never enters this
    /// process.
    #[arg(long, value_name = "SOCKET")]
    signer: Option<PathBuf>,
    /// Service metadata (TOML) [default: the embedded shop catalogue].
    #[arg(long)]
    catalogue: Option<PathBuf>,
    /// Multiply every resource size of the catalogue by this.
    #[arg(long)]
    size_scale: Option<f64>,
    /// reactive-nocache (the naive baseline), none (or reactive), push, static, markov, ppm,
    /// learned or oracle.
    #[arg(long, value_parser = predictor_arg)]
    predictor: Option<PredictorKind>,
    /// Checkpoint of the learned predictor (`pto train --out DIR/lstm`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The oracle's future: `session,type` per line.
    #[arg(long)]
    oracle_trace: Option<PathBuf>,
    /// SQLite history.
    #[arg(long)]
    history: Option<PathBuf>,
    /// Audit log (JSON lines, hash-chained).
    #[arg(long)]
    audit: Option<PathBuf>,
    /// The version floors file (created if missing; refused if corrupt); by default
    /// `<store>.floors/floors.json`, beside the store.
    #[arg(long)]
    floors: Option<PathBuf>,
    /// The audit key (P-384, PKCS#8 PEM) that signs the audit log's checkpoints.
    #[arg(long)]
    audit_key: Option<PathBuf>,
    /// Staging budget, e.g. 16MiB or a number of bytes.
    #[arg(long, value_parser = size_arg)]
    budget: Option<u64>,
    /// Smallest probability worth staging.
    #[arg(long)]
    threshold: Option<f32>,
    /// Predictions considered per request.
    #[arg(long)]
    top_k: Option<usize>,
    /// The front door: HOST:PORT or unix:PATH.
    #[arg(long, value_parser = listen_arg)]
    listen: Option<Listen>,
    /// Requests accepted and unanswered at most (429 past it).
    #[arg(long)]
    queue_depth: Option<usize>,
    /// Longest wait for the guest to complete a request, ms.
    #[arg(long)]
    request_timeout_ms: Option<u64>,
    /// Modelled origin: latency per fetch, ms.
    #[arg(long)]
    origin_latency_ms: Option<f64>,
    /// Modelled origin: bandwidth, MiB/s (0: unlimited).
    #[arg(long)]
    origin_bandwidth_mib: Option<f64>,
    /// Threads fetching from the origin at once (1 to 64) [default: 4].
    #[arg(long)]
    fetch_workers: Option<usize>,
    /// Wait for outstanding prefetches before each dispatch (experiments only).
    #[arg(long)]
    settle: bool,
    /// Send prefetch orders at dispatch instead of at completion.
    #[arg(long)]
    eager_prefetch: bool,
    /// The guest ends after this long without a request, ms.
    #[arg(long)]
    guest_idle_ms: Option<u64>,
    /// The Wasm module every task runs (`cargo xtask tasks` builds target/tasks/shop.wasm).
    #[arg(long, conflicts_with = "native_tasks")]
    task_module: Option<PathBuf>,
    /// Run the native tasks compiled into the guest image, not a Wasm module (the
    /// comparison point), whatever the configuration file says.
    #[arg(long)]
    native_tasks: bool,
}

fn predictor_arg(s: &str) -> Result<PredictorKind, ConfigError> {
    s.parse()
}

fn listen_arg(s: &str) -> Result<Listen, ConfigError> {
    s.parse()
}

fn size_arg(s: &str) -> Result<u64, String> {
    see_pto::metadata::parse_size(s)
        .ok_or_else(|| format!("{s:?} is not a size (e.g. 16MiB, 512KiB or bytes)"))
}

impl TryFrom<ServeArgs> for Config {
    type Error = ConfigError;

    fn try_from(a: ServeArgs) -> Result<Self, Self::Error> {
        let mut c = match &a.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = a.$field { c.$field = v; } )* };
        }
        set!(
            socket,
            store,
            key,
            size_scale,
            predictor,
            history,
            audit,
            floors,
            budget,
            threshold,
            top_k,
            listen,
            queue_depth,
            request_timeout_ms,
            origin_latency_ms,
            origin_bandwidth_mib,
            fetch_workers,
            guest_idle_ms
        );
        if a.catalogue.is_some() {
            c.catalogue = a.catalogue;
        }
        if a.model.is_some() {
            c.model = a.model;
        }
        if a.oracle_trace.is_some() {
            c.oracle_trace = a.oracle_trace;
        }
        if a.audit_key.is_some() {
            c.audit_key = a.audit_key;
        }
        if a.signer.is_some() {
            c.signer = a.signer;
        }
        if a.task_module.is_some() {
            c.task_module = a.task_module;
        }
        if a.native_tasks {
            c.task_module = None;
        }
        c.settle |= a.settle;
        c.eager_prefetch |= a.eager_prefetch;
        c.validate()?;
        Ok(c)
    }
}
