//! `see-signer`: holds the PTO's signing key and signs, for the daemon, the statements its
//! policy allows.
//!
//! ```text
//! see-signer --socket run/signer.sock --key pto.key --store store/ --audit signer-audit.jsonl
//! ```
//!
//! Start-up, in order: the process becomes non-dumpable; the key is read (it must be a
//! regular file of mode 0600 owned by the user the signer runs as) into locked memory; the
//! store, the audit log and the socket are opened; no_new_privs and Landlock (read the key
//! and the store, write the audit log); the drop to `--user`; the workers start and each
//! installs its seccomp filter, then the main thread installs its own and accepts. SIGTERM or
//! SIGINT: the audit log is closed with a signed checkpoint and the signer exits 0. Exit 1:
//! it could not start (the message says why); 2: a usage error.

use std::{
    os::unix::{fs::PermissionsExt, net::UnixListener},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{atomic::AtomicBool, Arc},
};

use clap::Parser;
use see_audit::{AuditLog, FsyncPolicy, KeySigner};
use see_sandbox::{Credentials, Enforcement, UserSpec};
use see_signer::{
    confine,
    key::{self, LockedKey},
    policy::Policy,
    rate::Limit,
    server::{self, KeyCheckpoints, Pool, Service},
};

/// Sign bundle and manifest statements for the PTO daemon.
#[derive(Debug, Parser)]
#[command(name = "see-signer", version, about)]
struct Cli {
    /// The Unix socket to listen on (the daemon's `--signer`).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// The PTO's signing key (P-384, PKCS#8 PEM; mode 0600, owned by the signer's user).
    #[arg(long, env = "SEE_PTO_SIGNING_KEY", value_name = "FILE")]
    key: PathBuf,
    /// The store directory (read only): what the signer agrees to sign.
    #[arg(long, value_name = "DIR")]
    store: PathBuf,
    /// The signer's audit log: one record per signature.
    #[arg(long, value_name = "FILE")]
    audit: PathBuf,
    /// A separate key for the audit log's checkpoints [default: the signing key].
    #[arg(long, value_name = "FILE")]
    audit_key: Option<PathBuf>,
    /// A signed checkpoint every this many records.
    #[arg(long, default_value_t = 64)]
    checkpoint_every: u32,
    /// Signatures per second per connection.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Signatures one connection may take at once above its rate.
    #[arg(long, default_value_t = 500.0)]
    burst: f64,
    /// Signatures per second over all connections.
    #[arg(long, default_value_t = 4000.0)]
    global_rate: f64,
    /// Signatures at once above the global rate.
    #[arg(long, default_value_t = 1000.0)]
    global_burst: f64,
    /// Connections served at once (1 to 16).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=16))]
    workers: u8,
    /// When started as root, run as this user once the key, store, log and socket are open
    /// (NAME, NAME:GROUP or UID:GID). The key must be owned by this user.
    #[arg(long, value_name = "USER[:GROUP]")]
    user: Option<UserSpec>,
    /// Refuse to run when the kernel lacks Landlock (ABI 5) or seccomp.
    #[arg(long, conflicts_with = "no_sandbox")]
    require_sandbox: bool,
    /// FOR DEBUGGING ONLY: run without no_new_privs, Landlock or seccomp (the key's memory
    /// protections and --user still apply).
    #[arg(long)]
    no_sandbox: bool,
}

/// Why the signer could not start or stopped.
#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error(transparent)]
    Key(#[from] key::KeyError),
    #[error(transparent)]
    Sandbox(#[from] see_sandbox::SandboxError),
    #[error("store {0}")]
    Store(#[from] see_prefetch_backend::store::StoreError),
    #[error(transparent)]
    Audit(#[from] see_audit::AuditError),
    #[error(transparent)]
    AuditKey(#[from] see_audit::checkpoint::KeyError),
    #[error("socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the workers: {0}")]
    Workers(std::io::Error),
    #[error("cannot handle signal {signal}: {source}")]
    Signal { signal: i32, source: std::io::Error },
}

fn main() -> ExitCode {
    // First: nothing of this process may be dumped or read by another from here on.
    if let Err(e) = key::set_undumpable() {
        eprintln!("see-signer: error: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp_micros()
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("see-signer: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds `path` (replacing a stale socket). Only its owner and group may connect: owned by
/// `owner`'s user and group when the signer drops to it, so a daemon running as another user
/// in that group can connect and no one else can.
fn bind(path: &Path, owner: Option<Credentials>) -> Result<UnixListener, MainError> {
    let err = |source| MainError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if std::fs::symlink_metadata(path).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_socket()
    }) {
        std::fs::remove_file(path).map_err(err)?;
    }
    // The socket is created with mode 0660 at once (no window where others may connect).
    // SAFETY: umask takes and returns an integer.
    let umask = unsafe { libc::umask(0o117) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(umask) };
    let listener = bound.map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    if let Some(c) = owner {
        std::os::unix::fs::chown(path, Some(c.uid), Some(c.gid)).map_err(err)?;
    }
    Ok(listener)
}

fn run(cli: Cli) -> Result<(), MainError> {
    // Names are looked up before Landlock hides the user database.
    let credentials = cli.user.as_ref().map(UserSpec::resolve).transpose()?;
    if let Some(c) = credentials {
        see_sandbox::check_drop(c)?;
    }
    // SAFETY: geteuid has no arguments.
    let owner = credentials.map_or_else(|| unsafe { libc::geteuid() }, |c| c.uid);
    let key = Arc::new(LockedKey::load(&cli.key, owner)?);
    key::scrub_stack();
    let policy = Policy::open(&cli.store)?;
    let audit = AuditLog::open(&cli.audit, FsyncPolicy::default())?;
    let audit = match &cli.audit_key {
        Some(path) => {
            audit.with_checkpoints(Box::new(KeySigner::load(path)?), cli.checkpoint_every)
        }
        None => audit.with_checkpoints(Box::new(KeyCheckpoints(key.clone())), cli.checkpoint_every),
    };
    let listener = bind(&cli.socket, credentials)?;
    let filters = if cli.no_sandbox {
        log::warn!("--no-sandbox: running without no_new_privs, Landlock or seccomp");
        None
    } else {
        let rules = confine::file_rules(&cli.key, &cli.store, &cli.audit);
        confine::confine_process(&rules, Enforcement::from_require(cli.require_sandbox))?
    };
    if let Some(c) = credentials {
        see_sandbox::drop_privileges(c)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [libc::SIGTERM, libc::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|source| MainError::Signal { signal, source })?;
    }
    let service = Arc::new(Service::new(
        key,
        policy,
        audit,
        Limit {
            rate: cli.rate,
            burst: cli.burst,
        },
        Limit {
            rate: cli.global_rate,
            burst: cli.global_burst,
        },
    ));
    let worker_filter = filters.as_ref().map(|f| f.worker.clone());
    let pool = Pool::start(service.clone(), cli.workers.into(), move || {
        if let Some(filter) = &worker_filter {
            if let Err(e) = filter.install() {
                // A worker that cannot confine itself must not serve.
                eprintln!("see-signer: error: {e}");
                std::process::abort();
            }
            confine::test_hook("worker");
        }
    })
    .map_err(MainError::Workers)?;
    if let Some(filters) = &filters {
        filters.accept.install()?;
        confine::test_hook("accept");
    }
    log::info!("listening on {}", cli.socket.display());
    let served = server::accept_loop(&listener, &pool, &stop);
    service.close()?;
    served.map_err(|source| MainError::Socket {
        path: cli.socket.clone(),
        source,
    })
}
