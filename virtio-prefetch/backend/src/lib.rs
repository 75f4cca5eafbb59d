//! The vhost-user backend of the virtio-prefetch device (see `virtio-prefetch/SPEC.md`).
//!
//! [`Backend::spawn`] listens on a Unix socket for one VMM (the vhost-user frontend), maps only
//! the memory the VMM sends (the guest's shared window), and serves the three queues: it
//! dispatches requests on requestq, answers hello and demand fetches on ctrlq, and writes signed
//! bundles (ECDSA P-384 over the statement the wire crate defines) from a content-addressed
//! [`store`] into the guest's staging buffers. The [`BackendHandle`] orders prefetches and
//! dispatches requests, and receives what the guest reports.
//!
//! The device thread only moves bytes and answers messages: store fetches run in a bounded pool
//! of `fetch_workers` threads, and signing on a sealing thread behind the
//! [`signer::StatementSigner`] interface (the `device` module describes the threads, the
//! back-pressure and how sequence numbers stay in delivery order).
//!
//! # Features
//!
//! - `fault-injection` (off by default): the hooks the end-to-end tests use to play a hostile
//!   host: `Tamper`, `BackendHandle::set_tamper`, `Stats::rewrites` and
//!   `FAULT_INJECTION_MARKER`, which the device logs when it starts. A build without the
//!   feature contains none of them.
//! - `fuzzing` (off by default): `fuzzing::FuzzDevice`, the device without a socket, for
//!   the fuzz targets in `fuzz/`.

mod api;
mod device;
#[cfg(feature = "fault-injection")]
mod fault;
pub mod floors;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod limit;
pub mod manifest;
mod pool;
pub mod profile;
mod seal;
pub mod signer;
pub mod store;
pub mod tree;

use std::{
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::Duration,
};

use log::{info, warn};
use p384::ecdsa::SigningKey;
use thiserror::Error;
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use virtio_prefetch_wire::DeviceConfig;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::{
    epoll::EventSet,
    event::{new_event_consumer_and_notifier, EventFlag, EventNotifier},
};

pub use api::{
    BackendEvent, BackendThread, Eviction, PrefetchOrder, QueueName, Request, Stats, ThreadHook,
};
use device::{Command, Parts, PrefetchDevice, COMMAND_EVENT, WORK_EVENT};
pub use device::{EVENT_QUEUE, MAX_DEMANDS, MAX_QUEUED_PREFETCHES};
#[cfg(feature = "fault-injection")]
pub use fault::{Tamper, FAULT_INJECTION_MARKER};
pub use limit::{DEMAND_BURST, DEMAND_RATE_PER_SEC};
pub use pool::{DEFAULT_FETCH_WORKERS, MAX_FETCH_WORKERS};
use signer::{LocalSigner, StatementSigner};
use store::ResourceStore;

/// Why the backend could not start, take a command or keep serving. Each message carries its
/// cause's message (the causes are not chained as `source()`).
#[derive(Debug, Error)]
pub enum BackendError {
    /// The socket could not be created.
    #[error(
        "cannot listen on {path}: {error} (is another backend using it? remove the file if stale)"
    )]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// The error.
        error: vhost::vhost_user::Error,
    },
    /// An eventfd (the command wake-up or the device's exit event) could not be created or
    /// registered.
    #[error("cannot set up the backend's {what} eventfd: {error} (out of file descriptors?)")]
    Eventfd {
        /// Which eventfd.
        what: &'static str,
        /// The error.
        error: std::io::Error,
    },
    /// The vhost-user daemon could not be created, accept its frontend or run to the end.
    #[error("vhost-user daemon: {0}")]
    Daemon(vhost_user_backend::Error),
    /// The fetch workers, the sealing thread or their eventfds could not be started.
    #[error("cannot start the backend's fetch workers or sealing thread: {0} (out of threads or file descriptors?)")]
    Workers(std::io::Error),
    /// A fetch pool size out of range.
    #[error("fetch_workers must be 1 to {MAX_FETCH_WORKERS}, not {0}")]
    FetchWorkers(usize),
    /// The device thread could not be started.
    #[error("cannot start the backend thread: {0}")]
    Thread(std::io::Error),
    /// The device thread is gone (the frontend disconnected or the backend shut down).
    #[error("the backend has stopped")]
    Stopped,
}

/// How to run the backend.
pub struct BackendConfig {
    /// The Unix socket to listen on.
    pub socket: PathBuf,
    /// Where the resources come from.
    pub store: Arc<dyn ResourceStore>,
    /// Signs bundles and manifests with the PTO's key.
    pub signer: Arc<dyn StatementSigner>,
    /// Threads fetching from the store (1 to [`MAX_FETCH_WORKERS`]): with more than one,
    /// prefetches leave one of them to demands.
    pub fetch_workers: usize,
    /// Largest chunk payload per staging buffer.
    pub max_chunk_len: u32,
    /// Largest resource content.
    pub max_content_len: u32,
    /// Cover runs of queued prefetches with one signed manifest each when the driver acked
    /// `F_MANIFEST` (one P-384 signature per batch instead of one per bundle).
    pub batch_manifests: bool,
    /// Called by each backend thread as it starts (none: nothing is called).
    pub on_thread_start: Option<ThreadHook>,
    /// The version floors sent to every session (and raised by every bundle signed); open a
    /// file with [`floors::Floors::open`] so they survive a restart and a guest reboot.
    pub floors: Arc<floors::Floors>,
    /// How long a floors snapshot is valid after it is signed.
    pub floors_validity: Duration,
}

impl std::fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendConfig")
            .field("socket", &self.socket)
            .field("fetch_workers", &self.fetch_workers)
            .finish_non_exhaustive()
    }
}

impl BackendConfig {
    /// Defaults: 256 KiB chunks, 16 MiB resources, batch manifests when the driver takes them,
    /// [`DEFAULT_FETCH_WORKERS`] fetch workers, `key` held in this process, floors kept in
    /// memory only, snapshots valid for [`DEFAULT_FLOORS_VALIDITY`].
    pub fn new(socket: impl Into<PathBuf>, store: Arc<dyn ResourceStore>, key: SigningKey) -> Self {
        Self::with_signer(socket, store, Arc::new(LocalSigner::new(key)))
    }

    /// The defaults of [`BackendConfig::new`], signing through `signer` (another process).
    pub fn with_signer(
        socket: impl Into<PathBuf>,
        store: Arc<dyn ResourceStore>,
        signer: Arc<dyn StatementSigner>,
    ) -> Self {
        Self {
            socket: socket.into(),
            store,
            signer,
            fetch_workers: DEFAULT_FETCH_WORKERS,
            max_chunk_len: 256 * 1024,
            max_content_len: 16 << 20,
            batch_manifests: true,
            on_thread_start: None,
            floors: Arc::new(floors::Floors::in_memory()),
            floors_validity: DEFAULT_FLOORS_VALIDITY,
        }
    }
}

/// How long a floors snapshot is valid by default: one day.
pub const DEFAULT_FLOORS_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// The running backend.
#[derive(Debug)]
pub struct Backend;

/// Commands in, events out, and a way to stop.
pub struct BackendHandle {
    commands: mpsc::Sender<Command>,
    wake: EventNotifier,
    events: Mutex<mpsc::Receiver<BackendEvent>>,
    stats: Arc<Mutex<Stats>>,
    socket: PathBuf,
    shutdown: Arc<Mutex<Option<vhost_user_backend::ShutdownHandle>>>,
    thread: Option<thread::JoinHandle<Result<(), BackendError>>>,
}

impl std::fmt::Debug for BackendHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendHandle")
            .field("socket", &self.socket)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// Listens on `config.socket` and serves one frontend connection in background threads.
    pub fn spawn(config: BackendConfig) -> Result<BackendHandle, BackendError> {
        let _ = std::fs::remove_file(&config.socket);
        let mut listener =
            Listener::new(&config.socket, true).map_err(|error| BackendError::Listen {
                path: config.socket.clone(),
                error,
            })?;
        let (commands, receiver) = mpsc::channel();
        let (events_tx, events) = mpsc::sync_channel(EVENT_QUEUE);
        let (command_fd, wake) =
            new_event_consumer_and_notifier(EventFlag::NONBLOCK).map_err(|error| {
                BackendError::Eventfd {
                    what: "command",
                    error,
                }
            })?;
        let command_raw = std::os::fd::AsRawFd::as_raw_fd(&command_fd);
        let stats = Arc::new(Mutex::new(Stats::default()));
        let device_config = DeviceConfig {
            max_content_len: config.max_content_len,
            max_chunk_len: config.max_chunk_len,
            queue_sizes: [64, 256, 128],
        };
        if !(1..=MAX_FETCH_WORKERS).contains(&config.fetch_workers) {
            return Err(BackendError::FetchWorkers(config.fetch_workers));
        }
        let device = PrefetchDevice::new(Parts {
            store: config.store,
            floors: config.floors,
            floors_validity_s: config.floors_validity.as_secs(),
            signer: config.signer,
            config: device_config,
            fetch_workers: config.fetch_workers,
            commands: receiver,
            command_fd,
            events: events_tx,
            stats: stats.clone(),
            hook: config.on_thread_start.clone(),
        })
        .map_err(BackendError::Workers)?
        .with_batch_manifests(config.batch_manifests);
        let work_raw = device.work_fd();
        let device = Arc::new(Mutex::new(device));
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let mut daemon = VhostUserDaemon::new("virtio-prefetch".into(), device, mem)
            .map_err(BackendError::Daemon)?;
        for handler in daemon.get_epoll_handlers() {
            handler
                .register_listener(command_raw, EventSet::IN, u64::from(COMMAND_EVENT))
                .map_err(|error| BackendError::Eventfd {
                    what: "command",
                    error,
                })?;
            handler
                .register_listener(work_raw, EventSet::IN, u64::from(WORK_EVENT))
                .map_err(|error| BackendError::Eventfd {
                    what: "work",
                    error,
                })?;
        }
        let shutdown = Arc::new(Mutex::new(None));
        let shutdown_slot = shutdown.clone();
        let socket = config.socket.clone();
        let hook = config.on_thread_start;
        let thread = thread::Builder::new()
            .name("prefetch-backend".into())
            .spawn(move || {
                if let Some(hook) = hook {
                    hook(BackendThread::Vhost);
                }
                daemon.start(&mut listener).map_err(BackendError::Daemon)?;
                info!("frontend connected");
                if let Ok(mut slot) = shutdown_slot.lock() {
                    *slot = daemon.shutdown_handle();
                }
                let result = daemon.wait().map_err(BackendError::Daemon);
                info!("frontend gone: {result:?}");
                result
            })
            .map_err(BackendError::Thread)?;
        Ok(BackendHandle {
            commands,
            wake,
            events: Mutex::new(events),
            stats,
            socket,
            shutdown,
            thread: Some(thread),
        })
    }
}

impl BackendHandle {
    fn send(&self, command: Command) -> Result<(), BackendError> {
        self.commands
            .send(command)
            .map_err(|_| BackendError::Stopped)?;
        self.wake.notify().map_err(|_| BackendError::Stopped)
    }

    /// Orders a prefetch (held until the guest's Hello if none came yet).
    pub fn prefetch(&self, order: PrefetchOrder) -> Result<(), BackendError> {
        self.send(Command::Prefetch(order))
    }

    /// Dispatches a request into the guest.
    pub fn dispatch(&self, request: Request) -> Result<(), BackendError> {
        self.send(Command::Dispatch(request))
    }

    /// Asks the guest to drop `eviction.resource_id` from its verified cache: an Evict message
    /// on requestq, in order with the requests dispatched around it. The guest reports the
    /// eviction (Report kind Evict) when it held the resource for that app.
    pub fn evict(&self, eviction: Eviction) -> Result<(), BackendError> {
        self.send(Command::Evict(eviction))
    }

    /// Sets the fault injection for the bundles ordered or demanded from now on.
    #[cfg(feature = "fault-injection")]
    pub fn set_tamper(&self, tamper: Tamper) -> Result<(), BackendError> {
        self.send(Command::SetTamper(tamper))
    }

    /// The next event, waiting up to `timeout`.
    pub fn next_event(&self, timeout: Duration) -> Option<BackendEvent> {
        self.events.lock().ok()?.recv_timeout(timeout).ok()
    }

    /// Waits up to `timeout` for an event `pick` accepts, discarding the others.
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        mut pick: impl FnMut(&BackendEvent) -> Option<T>,
    ) -> Option<T> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            if let Some(found) = self.next_event(left).as_ref().and_then(&mut pick) {
                return Some(found);
            }
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while the device thread runs (the frontend has not gone away).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the backend: closes the connection (the VMM sees the device die) and joins.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.lock().ok().and_then(|mut s| s.take()) {
            shutdown.shutdown();
        }
        // A backend still waiting for its frontend is blocked in accept(): connect once.
        let _ = UnixStream::connect(&self.socket);
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Err(e)) => warn!("backend ended: {e}"),
                Err(_) => warn!("backend thread panicked"),
                Ok(Ok(())) => {}
            }
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for BackendHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
