//! The PTO service: the virtio-prefetch vhost-user backend with the predictive task
//! orchestrator online, behind an HTTP/JSON request API.
//!
//! [`start`] turns a [`Config`] into a running [`Daemon`]: it fills the store with the service
//! metadata's resources where they are missing, learns the predictor from the history, listens
//! on the vhost-user socket for the VMM and on the front door for clients. Each request a
//! client sends goes to the PTO engine the moment it arrives, is dispatched into the SEE
//! when the guest is free, and is answered with each task's result and where its time went
//! ([`api`]). Every signature, prefetch, demand, dispatch and completion goes to the audit log
//! and the history. [`launch`] starts an SEE (the VMM) with its daemon and supervises both:
//! `see up`.

#![warn(missing_docs)]

pub mod api;
pub mod config;
pub mod confine;
mod engine;
pub mod error;
pub mod guest;
mod http;
pub mod launch;
mod metrics;
pub mod origin;
mod service;
pub mod tasks;
pub mod wasm_task;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    thread,
    time::Duration,
};

use log::{info, warn};
use see_prefetch_backend::{
    signer::{load_key, LocalSigner, StatementSigner},
    Backend, BackendConfig, BackendHandle, BackendThread,
};
use see_pto::{
    audit::{AuditLog, FsyncPolicy, KeySigner},
    history::History,
    online::{origin::OriginModel, predictor_for, Mode, Orchestrator},
};

pub use config::{Config, Listen, PredictorKind};
pub use error::{ConfigError, DaemonError};

use crate::{
    confine::{ThreadFilters, ThreadKind},
    engine::{Engine, EngineSettings, Input},
    origin::OriginStore,
    service::{Shared, State},
};

/// The orchestrator mode of a predictor.
fn mode_of(kind: PredictorKind) -> Mode {
    match kind {
        PredictorKind::ReactiveNocache => Mode::ReactiveNocache,
        PredictorKind::None => Mode::Reactive,
        PredictorKind::Push => Mode::Push,
        PredictorKind::Static => Mode::Static,
        PredictorKind::Markov => Mode::Markov,
        PredictorKind::Ppm => Mode::Ppm,
        PredictorKind::Learned => Mode::Learned,
        PredictorKind::Oracle => Mode::Oracle,
    }
}

/// The oracle's future: `session,type` per line; sessions numbered by first appearance, as
/// the engine numbers the live ones.
fn read_oracle(path: &std::path::Path) -> Result<Vec<(u64, String)>, DaemonError> {
    let err = |line, why: String| DaemonError::Oracle {
        path: path.to_owned(),
        line,
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(0, e.to_string()))?;
    let mut ids = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (session, kind) = line
            .split_once(',')
            .ok_or_else(|| err(n + 1, format!("expected `session,type`, got {line:?}")))?;
        let next = ids.len() as u64 + 1;
        let id = *ids.entry(session.to_owned()).or_insert(next);
        out.push((id, kind.trim().to_owned()));
    }
    Ok(out)
}

fn orchestrator(
    config: &Config,
    cat: &Arc<see_pto::metadata::ServiceCatalogue>,
) -> Result<Orchestrator, DaemonError> {
    if let Some(dir) = config
        .history
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|e| DaemonError::Start {
            what: "history directory",
            source: e,
        })?;
    }
    let history = History::open(&config.history).map_err(|source| DaemonError::History {
        path: config.history.clone(),
        source,
    })?;
    let past = history
        .load_trace(None, cat.vocabulary())
        .map_err(|source| DaemonError::History {
            path: config.history.clone(),
            source,
        })?;
    let mode = mode_of(config.predictor);
    let orch = match config.predictor {
        PredictorKind::Oracle => {
            let path = config
                .oracle_trace
                .as_deref()
                .unwrap_or(std::path::Path::new(""));
            Orchestrator::oracle(cat.clone(), config.policy(), read_oracle(path)?)?
        }
        _ => {
            let predictor = predictor_for(mode, cat, &past, config.model.as_deref())?;
            Orchestrator::new(cat.clone(), mode, predictor, config.policy())?.with_starts(&past)
        }
    };
    info!(
        "predictor {} learned from {} past sessions in {}",
        config.predictor,
        past.sessions.len(),
        config.history.display()
    );
    if let Some(dir) = config.audit.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| DaemonError::Start {
            what: "audit directory",
            source: e,
        })?;
    }
    let mut audit = AuditLog::open(&config.audit, FsyncPolicy::default()).map_err(|source| {
        DaemonError::Audit {
            path: config.audit.clone(),
            source,
        }
    })?;
    match &config.audit_key {
        Some(path) => {
            let signer = KeySigner::load(path).map_err(DaemonError::AuditKey)?;
            audit = audit.with_checkpoints(Box::new(signer), config.audit_checkpoint_every);
        }
        None => warn!(
            "no audit_key: the audit log {} is not anchored (a truncation or a rewrite goes \
             unseen); give one with --audit-key",
            config.audit.display()
        ),
    }
    Ok(orch
        .with_audit(audit)
        .with_history(history, &config.history_source))
}

/// A running daemon: the device, the engine and the front door.
#[derive(Debug)]
pub struct Daemon {
    runtime: tokio::runtime::Runtime,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    stop_server: Option<tokio::sync::oneshot::Sender<()>>,
    engine: Option<thread::JoinHandle<()>>,
    engine_tx: mpsc::Sender<Input>,
    stop_forwarder: Arc<AtomicBool>,
    forwarder: Option<thread::JoinHandle<()>>,
    backend: Arc<BackendHandle>,
    shared: Arc<Shared>,
    address: String,
    signals: Signals,
    filters: Option<Arc<ThreadFilters>>,
}

/// SIGINT and SIGTERM, registered when the daemon starts (before any thread is confined).
#[derive(Debug)]
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

/// Starts the daemon described by `config`, unconfined.
pub fn start(config: Config) -> Result<Daemon, DaemonError> {
    start_confined(config, None)
}

/// Starts the daemon; with `filters`, each thread it starts installs the seccomp filter of its
/// kind first ([`confine`]), and [`Daemon::confine_main`] confines the calling thread.
pub fn start_confined(
    config: Config,
    filters: Option<Arc<ThreadFilters>>,
) -> Result<Daemon, DaemonError> {
    config.validate()?;
    let cat = Arc::new(config.load_catalogue()?);
    // With a signer, the key file is never opened here.
    let signer: Arc<dyn StatementSigner> = match &config.signer {
        Some(socket) => {
            info!("signing through see-signer at {}", socket.display());
            Arc::new(see_signer::RemoteSigner::new(socket))
        }
        None => Arc::new(LocalSigner::new(load_key(&config.key)?)),
    };
    let module = config.load_task_module(&cat)?;
    if let Some(m) = &module {
        info!(
            "tasks run as Wasm: {} ({} bytes) in every task's code resource",
            config
                .task_module
                .as_deref()
                .unwrap_or(std::path::Path::new("?"))
                .display(),
            m.bytes().len()
        );
    }
    let disk = guest::open_filled(&cat, &config.store, module.as_ref())?;
    let model = if config.origin_latency_ms > 0.0 || config.origin_bandwidth_mib > 0.0 {
        let bandwidth = if config.origin_bandwidth_mib > 0.0 {
            config.origin_bandwidth_mib * 1048576.0
        } else {
            1e15
        };
        Some(OriginModel::new(
            Duration::from_secs_f64(config.origin_latency_ms / 1e3),
            bandwidth,
        )?)
    } else {
        None
    };
    let origin = Arc::new(OriginStore::new(disk, model));
    let orch = orchestrator(&config, &cat)?;
    if let Some(dir) = config.socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| DaemonError::Start {
            what: "socket directory",
            source: e,
        })?;
    }
    let mut backend_config = BackendConfig::with_signer(&config.socket, origin.clone(), signer);
    backend_config.fetch_workers = config.fetch_workers;
    let hook_filters = filters.clone();
    backend_config.on_thread_start = Some(Arc::new(move |t: BackendThread| {
        confine::enter(hook_filters.as_deref(), t.into())
    }));
    backend_config.floors = Arc::new(see_prefetch_backend::floors::Floors::open(
        &config.floors_file(),
    )?);
    let backend = Arc::new(Backend::spawn(backend_config)?);
    info!(
        "vhost-user socket {}: waiting for the VMM",
        config.socket.display()
    );
    let shared = Arc::new(Shared::new(config.queue_depth, config.predictor.name()));
    let (engine_tx, engine_rx) = mpsc::channel();
    let settings = EngineSettings {
        request_timeout: config.request_timeout(),
        session_idle: Duration::from_millis(config.session_idle_ms),
        max_sessions: config.max_sessions,
        settle: config.settle,
        eager_prefetch: config.eager_prefetch,
        wasm_tasks: module.is_some(),
    };
    let engine = Engine::new(
        orch,
        backend.clone(),
        origin,
        cat.clone(),
        shared.clone(),
        settings,
    );
    let engine_filters = filters.clone();
    let engine = thread::Builder::new()
        .name("pto-engine".into())
        .spawn(move || {
            confine::enter(engine_filters.as_deref(), ThreadKind::Engine);
            engine.run(engine_rx)
        })
        .map_err(|source| DaemonError::Start {
            what: "engine thread",
            source,
        })?;
    let stop_forwarder = Arc::new(AtomicBool::new(false));
    let forwarder = {
        let (backend, tx, stop) = (backend.clone(), engine_tx.clone(), stop_forwarder.clone());
        let filters = filters.clone();
        thread::Builder::new()
            .name("device-events".into())
            .spawn(move || {
                confine::enter(filters.as_deref(), ThreadKind::Events);
                engine::forward_events(backend, tx, stop)
            })
            .map_err(|source| DaemonError::Start {
                what: "event thread",
                source,
            })?
    };
    let http_filters = filters.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("front-door")
        .on_thread_start(move || confine::enter(http_filters.as_deref(), ThreadKind::Http))
        .enable_all()
        .build()
        .map_err(|source| DaemonError::Start {
            what: "async runtime",
            source,
        })?;
    let door = http::Door {
        shared: shared.clone(),
        engine: Arc::new(Mutex::new(engine_tx.clone())),
        types: Arc::new(guest::request_apps(&cat)),
        predictor: config.predictor.name().into(),
        body_limit: config.body_limit,
        answer_timeout: config.request_timeout() * 2 + Duration::from_secs(5),
    };
    let app = http::router(door);
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let graceful = async move {
        let _ = stopped.await;
    };
    let (server, address) = match &config.listen {
        Listen::Tcp(addr) => {
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind(addr))
                .map_err(|source| DaemonError::Listen {
                    address: addr.to_string(),
                    source,
                })?;
            let local = listener
                .local_addr()
                .map_err(|source| DaemonError::Listen {
                    address: addr.to_string(),
                    source,
                })?;
            // Answers are small and latency is the point: no Nagle delay on them.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    log::debug!("TCP_NODELAY: {e}");
                }
            });
            let serve = axum::serve(listener, app).with_graceful_shutdown(graceful);
            (
                runtime.spawn(async move { serve.await }),
                format!("http://{local}"),
            )
        }
        Listen::Unix(path) => {
            let _ = std::fs::remove_file(path);
            let listener = {
                let _guard = runtime.enter();
                tokio::net::UnixListener::bind(path)
            }
            .map_err(|source| DaemonError::Listen {
                address: path.display().to_string(),
                source,
            })?;
            let serve = axum::serve(listener, app).with_graceful_shutdown(graceful);
            (
                runtime.spawn(async move { serve.await }),
                format!("unix:{}", path.display()),
            )
        }
    };
    info!("front door: {address}");
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        let _guard = runtime.enter();
        let handler = |what| move |source| DaemonError::Start { what, source };
        Signals {
            interrupt: signal(SignalKind::interrupt()).map_err(handler("SIGINT handler"))?,
            terminate: signal(SignalKind::terminate()).map_err(handler("SIGTERM handler"))?,
        }
    };
    Ok(Daemon {
        runtime,
        server: Some(server),
        stop_server: Some(stop_server),
        engine: Some(engine),
        engine_tx,
        stop_forwarder,
        forwarder: Some(forwarder),
        backend,
        shared,
        address,
        signals,
        filters,
    })
}

impl Daemon {
    /// Where the front door listens: `http://HOST:PORT` or `unix:PATH`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether the SEE behind it is gone (the VMM hung up or the guest wedged).
    pub fn is_down(&self) -> bool {
        matches!(self.shared.state(), State::Down(_))
    }

    /// Installs the main thread's seccomp filter on the calling thread, when the daemon was
    /// started with filters: call it from the thread that started the daemon, which then only
    /// waits for a signal and stops the daemon.
    pub fn confine_main(&self) {
        confine::enter(self.filters.as_deref(), ThreadKind::Main);
    }

    /// Blocks until SIGINT or SIGTERM.
    pub fn wait_for_signal(&mut self) -> Result<(), DaemonError> {
        let Signals {
            interrupt,
            terminate,
        } = &mut self.signals;
        self.runtime.block_on(async {
            tokio::select! {
                _ = interrupt.recv() => info!("SIGINT: shutting down"),
                _ = terminate.recv() => info!("SIGTERM: shutting down"),
            }
        });
        Ok(())
    }

    /// Stops taking requests, answers or fails each one in flight, flushes the history and
    /// the audit log, tells the guest to stop, then closes the front door.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.set_state(State::Stopping);
        let _ = self.engine_tx.send(Input::Shutdown);
        if let Some(engine) = self.engine.take() {
            if engine.join().is_err() {
                log::error!("the engine thread panicked");
            }
        }
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let joined = self
                .runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), server).await });
            if let Ok(Ok(Err(e))) = joined {
                log::warn!("front door: {e}");
            }
        }
        self.stop_forwarder.store(true, Ordering::Release);
        if let Some(f) = self.forwarder.take() {
            let _ = f.join();
        }
        info!(
            "stopped; the device delivered {} bundles",
            self.backend.stats().bundles
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.engine.is_some() {
            self.stop();
        }
    }
}
