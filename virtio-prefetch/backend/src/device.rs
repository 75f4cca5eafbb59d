//! The device logic behind the vhost-user socket: the three queues, the session, demand
//! fetches, chunking of signed bundles into staging buffers, and the API commands.
//!
//! # Threads
//!
//! The device thread (the one worker thread vhost-user-backend gives the device: all three
//! queues, the command eventfd and the work eventfd are in one epoll set) owns this state, so it
//! needs no finer locking. It never waits on the store or the signer: it answers ctrlq, writes
//! requestq, moves bundle bytes into stagingq, and hands the slow work to two helpers, each of
//! which wakes it through the work eventfd when something is done:
//!
//! - the fetch pool ([`crate::pool`], `fetch_workers` threads) takes resources from the store
//!   (which may sleep through a modelled origin's latency, and hashes what it hands out).
//!   Demands go first, and prefetches never occupy the last worker. Back-pressure: the device
//!   keeps at most two prefetches per worker submitted and not yet sequenced (or up to a
//!   manifest's worth of small ones within `MAX_BATCH_BYTES`), so fetched content held in
//!   memory is bounded; further orders wait here, in order, as ids only (at most
//!   [`MAX_QUEUED_PREFETCHES`]; beyond that new orders are dropped, logged and counted in
//!   `Stats::prefetches_dropped`). At most [`MAX_DEMANDS`] demands are outstanding; beyond
//!   that a Demand gets `Busy`. The pool's own waiting lists are bounded too and refuse a job
//!   when full (the device then retries the prefetch later, or answers the demand `Busy`).
//! - the sealing thread ([`crate::seal`]) signs and encodes bundles and manifests.
//!
//! # Order and sequence numbers
//!
//! The guest accepts a bundle only with a sequence number above the last it accepted, and
//! reassembles one object at a time, so sequence numbers must rise in delivery order. The device
//! fixes the delivery order when it sequences a fetched resource: it gives it the next sequence
//! number(s) and appends a slot to the delivery queue, and the sealing thread seals jobs in the
//! order they come, so slots fill in order. At most [`SEAL_AHEAD`] slots wait to be delivered
//! (one being written, the next being signed), so a demand, sequenced before any prefetch as
//! soon as its fetch is done, waits behind at most that much. Prefetches are sequenced in the
//! order they were ordered; with `F_MANIFEST`, a run of small fetched prefetches at the front
//! goes out under one manifest (the run waits for members still being fetched, so the batch is
//! the run that was ordered, whatever the fetch timing).
//!
//! Every descriptor is checked against the memory the frontend gave (the shared window only)
//! before it is read or written; a bad one is returned with used length 0, counted and
//! reported, and the device goes on. Its log line is rate-limited (one a second, with the
//! number suppressed since the last).
//!
//! # Events
//!
//! Events go to the [`crate::BackendHandle`] through a channel of at most [`EVENT_QUEUE`]
//! events; the device never waits on it. When the reader falls that far behind, further
//! events are dropped and counted in `Stats::events_dropped` (with a rate-limited log line),
//! so a guest that floods ctrlq cannot grow the backend's memory through its events.

use std::{
    collections::{BTreeMap, VecDeque},
    os::fd::{AsRawFd, RawFd},
    sync::{
        mpsc::{self, TrySendError},
        Arc, Mutex,
    },
    time::Instant,
};

use log::{debug, info, warn};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackendMut, VringRwLock, VringT};
use virtio_prefetch_wire::{
    parse_message, Ack, BundleHeader, Chunk, DeviceConfig, FloorsHeader, Message, MessageHeader,
    MessageKind, Status, WireError, CONTROL_QUEUE, DEVICE_FEATURES, F_MANIFEST, F_VERSION_1,
    NUM_QUEUES, REQUEST_QUEUE, STAGING_QUEUE,
};
use virtio_queue::QueueT;
use vm_memory::{
    Address, Bytes, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap,
    GuestMemoryRegion,
};
use vmm_sys_util::{
    epoll::EventSet,
    event::{new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier},
};

#[cfg(feature = "fault-injection")]
use crate::fault::{Faults, Tamper};
use crate::{
    api::{
        BackendEvent, BackendThread, Eviction, PrefetchOrder, QueueName, Request, Stats, ThreadHook,
    },
    floors::{now_s, Floors},
    limit::{LogLimiter, TokenBucket},
    pool::{FetchJob, FetchPool, Fetched},
    profile::{elapsed_ns, HostProfile},
    seal::{self, SealJob, Sealed, SealedObject},
    signer::{bundle_header, BundleSpec, Session, StatementSigner},
    store::{ResourceStore, StoredResource},
};

/// The epoll id of the command eventfd (ids up to the queue count are the library's).
pub(crate) const COMMAND_EVENT: u16 = NUM_QUEUES as u16 + 1;
/// The epoll id of the work eventfd (a fetch or a seal is done).
pub(crate) const WORK_EVENT: u16 = NUM_QUEUES as u16 + 2;
/// Largest ctrlq message the device reads.
const MAX_CTRL_MESSAGE: u32 = 4096;
/// Most prefetches one manifest covers (the wire allows 1024).
const MAX_BATCH: usize = 64;
/// Largest resource put under a manifest (larger ones are signed on their own).
const MAX_BATCHED_RESOURCE: u64 = 256 * 1024;
/// Most content one manifest covers.
const MAX_BATCH_BYTES: u64 = 2 << 20;
/// Largest queue the device accepts.
pub(crate) const MAX_QUEUE_SIZE: usize = 1024;
/// Most delivery slots (a bundle, or a manifest and its bundles) sequenced and not yet fully
/// delivered: one being written to stagingq while the next is signed.
pub(crate) const SEAL_AHEAD: usize = 2;
/// Most prefetch orders the device holds (ordered, not yet delivered).
pub const MAX_QUEUED_PREFETCHES: usize = 4096;
/// Most demands outstanding (fetching, or fetched and not yet sequenced); the guest driver
/// keeps at most 8.
pub const MAX_DEMANDS: usize = 64;
/// Most events waiting for the [`crate::BackendHandle`]'s reader; more are dropped and counted.
pub const EVENT_QUEUE: usize = 4096;

/// A command from the API.
#[derive(Debug)]
pub(crate) enum Command {
    Prefetch(PrefetchOrder),
    Dispatch(Request),
    Evict(Eviction),
    #[cfg(feature = "fault-injection")]
    SetTamper(Tamper),
}

/// A prefetch order or a demand, before its bundle is built.
#[derive(Debug, Clone, Copy)]
struct Order {
    task_id: u64,
    resource_id: u64,
    min_version: u64,
    /// 0 for a prefetch.
    demand_cookie: u32,
    /// The fault injection in force when it was ordered.
    #[cfg(feature = "fault-injection")]
    tamper: Tamper,
}

impl Order {
    /// An honest prefetch, which may go under a batch manifest.
    fn batchable(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        if self.tamper != Tamper::None {
            return false;
        }
        self.demand_cookie == 0
    }
}

/// Where a prefetch's resource is.
#[derive(Debug)]
enum Fetch {
    /// Not handed to the pool yet (the pool or the prefetch window is full).
    Waiting,
    /// In the pool, under this ticket.
    Running(u64),
    /// Fetched, waiting to be sequenced.
    Done(StoredResource),
}

#[derive(Debug)]
struct Prefetch {
    order: Order,
    fetch: Fetch,
    /// Ordered before any session: survives a device reset (as the driver resets the device
    /// while it boots).
    held: bool,
}

#[derive(Debug)]
struct Outgoing {
    stream_id: u64,
    bytes: Vec<u8>,
    offset: usize,
    /// None for a manifest.
    header: Option<BundleHeader>,
    /// Rewrite the last staging buffer after delivery (Tamper::RewriteAfterDelivery).
    #[cfg(feature = "fault-injection")]
    rewrite: bool,
}

/// What a replay (fault injection) did.
#[cfg(feature = "fault-injection")]
enum Replay {
    /// Not a replay, or nothing to replay: build the bundle.
    No,
    /// Wait for the sealing in progress.
    Wait,
    /// The last bundle was queued again.
    Sent,
}

/// A place in the delivery order.
#[derive(Debug)]
enum Slot {
    /// Sequenced, with the sealing thread.
    Sealing,
    /// Sealed: objects to write to stagingq, in order.
    Ready(VecDeque<Outgoing>),
}

/// The device state.
pub(crate) struct PrefetchDevice {
    store: Arc<dyn ResourceStore>,
    floors: Arc<Floors>,
    floors_validity_s: u64,
    config: DeviceConfig,
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    session: Option<Session>,
    /// Changes with every session and reset; sealed work of another generation is dropped.
    generation: u64,
    next_seq: u64,
    next_ticket: u64,
    /// Prefetch orders in the order given.
    prefetches: VecDeque<Prefetch>,
    /// Most prefetches submitted to the pool and not yet sequenced.
    prefetch_window: usize,
    /// Demands in the pool, by ticket.
    demands: BTreeMap<u64, Order>,
    /// Demands fetched, in the order they finished.
    fetched_demands: VecDeque<(Order, StoredResource)>,
    /// The delivery order.
    slots: VecDeque<Slot>,
    pool: FetchPool,
    fetched: Mutex<mpsc::Receiver<Fetched>>,
    seal_jobs: mpsc::Sender<SealJob>,
    sealed: Mutex<mpsc::Receiver<Sealed>>,
    work_fd: EventConsumer,
    requests: VecDeque<Vec<u8>>,
    commands: Mutex<mpsc::Receiver<Command>>,
    command_fd: EventConsumer,
    exit: Option<(EventConsumer, EventNotifier)>,
    events: mpsc::SyncSender<BackendEvent>,
    stats: Arc<Mutex<Stats>>,
    /// Called once, on the device thread's first event (then taken).
    device_hook: Option<ThreadHook>,
    /// The guest's demand budget.
    demand_bucket: TokenBucket,
    /// Log lines about refused descriptors.
    refused_log: Mutex<LogLimiter>,
    /// Log lines about dropped events.
    dropped_log: Mutex<LogLimiter>,
    #[cfg(feature = "fault-injection")]
    faults: Faults,
    next_stream: u64,
    batch_manifests: bool,
    acked_features: u64,
}

impl std::fmt::Debug for PrefetchDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefetchDevice")
            .field("session", &self.session)
            .field("prefetches", &self.prefetches.len())
            .field("slots", &self.slots.len())
            .finish()
    }
}

type Memory = vm_memory::GuestMemoryLoadGuard<GuestMemoryMmap>;

/// What the device is built from.
pub(crate) struct Parts {
    pub(crate) store: Arc<dyn ResourceStore>,
    pub(crate) floors: Arc<Floors>,
    pub(crate) floors_validity_s: u64,
    pub(crate) signer: Arc<dyn StatementSigner>,
    pub(crate) config: DeviceConfig,
    pub(crate) fetch_workers: usize,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) command_fd: EventConsumer,
    pub(crate) events: mpsc::SyncSender<BackendEvent>,
    pub(crate) stats: Arc<Mutex<Stats>>,
    pub(crate) hook: Option<ThreadHook>,
}

impl PrefetchDevice {
    /// The device, with its fetch pool and sealing thread started.
    pub(crate) fn new(parts: Parts) -> std::io::Result<Self> {
        let exit = new_event_consumer_and_notifier(EventFlag::NONBLOCK)?;
        let (work_fd, wake) = new_event_consumer_and_notifier(EventFlag::NONBLOCK)?;
        let (fetched_tx, fetched) = mpsc::channel();
        let pool = FetchPool::new(
            parts.fetch_workers,
            MAX_DEMANDS,
            parts.store.clone(),
            fetched_tx,
            &wake,
            parts.hook.clone(),
        )?;
        let (seal_jobs, seal_rx) = mpsc::channel();
        let (sealed_tx, sealed) = mpsc::channel();
        seal::spawn(parts.signer, seal_rx, sealed_tx, wake, parts.hook.clone())?;
        Ok(Self {
            store: parts.store,
            floors: parts.floors,
            floors_validity_s: parts.floors_validity_s,
            config: parts.config,
            mem: None,
            session: None,
            generation: 0,
            next_seq: 1,
            next_ticket: 1,
            prefetches: VecDeque::new(),
            prefetch_window: 2 * pool.workers(),
            demands: BTreeMap::new(),
            fetched_demands: VecDeque::new(),
            slots: VecDeque::new(),
            pool,
            fetched: Mutex::new(fetched),
            seal_jobs,
            sealed: Mutex::new(sealed),
            work_fd,
            requests: VecDeque::new(),
            commands: Mutex::new(parts.commands),
            command_fd: parts.command_fd,
            exit: Some(exit),
            events: parts.events,
            stats: parts.stats,
            device_hook: parts.hook,
            demand_bucket: TokenBucket::for_demands(),
            refused_log: Mutex::new(LogLimiter::per_second()),
            dropped_log: Mutex::new(LogLimiter::per_second()),
            #[cfg(feature = "fault-injection")]
            faults: Faults::new()?,
            next_stream: 1,
            batch_manifests: true,
            acked_features: 0,
        })
    }

    /// Whether runs of prefetches go out under one manifest (when the driver acked F_MANIFEST).
    pub(crate) fn with_batch_manifests(mut self, on: bool) -> Self {
        self.batch_manifests = on;
        self
    }

    /// The work eventfd, for the epoll set (id [`WORK_EVENT`]).
    pub(crate) fn work_fd(&self) -> RawFd {
        self.work_fd.as_raw_fd()
    }

    /// An order for `resource_id` (a prefetch when `demand_cookie` is 0).
    fn order(&self, task_id: u64, resource_id: u64, min_version: u64, demand_cookie: u32) -> Order {
        Order {
            task_id,
            resource_id,
            min_version,
            demand_cookie,
            #[cfg(feature = "fault-injection")]
            tamper: self.faults.tamper,
        }
    }

    fn emit(&self, event: BackendEvent) {
        match self.events.try_send(event) {
            Ok(()) => {}
            // A dropped receiver only means nobody listens.
            Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(event)) => {
                self.stat(|s| s.events_dropped += 1);
                if let Some(suppressed) = limited(&self.dropped_log) {
                    warn!(
                        "event dropped: {EVENT_QUEUE} events wait for the reader ({event:?}; \
                         {suppressed} more dropped since the last line)"
                    );
                }
            }
        }
    }

    fn stat(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn memory(&self) -> Option<Memory> {
        self.mem.as_ref().map(|m| m.memory())
    }

    fn refuse(&self, queue: QueueName, addr: u64, len: u32) {
        if let Some(suppressed) = limited(&self.refused_log) {
            warn!(
                "refused a {queue:?} descriptor at {addr:#x} (+{len}): outside the shared memory \
                 or unusable ({suppressed} more refused since the last line)"
            );
        }
        self.stat(|s| s.refused_descriptors += 1);
        self.emit(BackendEvent::Refused { queue, addr, len });
    }

    fn fetch_job(&mut self, order: &Order) -> FetchJob {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        FetchJob {
            ticket,
            resource_id: order.resource_id,
            min_version: order.min_version,
            demand: order.demand_cookie != 0,
            #[cfg(feature = "fault-injection")]
            tamper: order.tamper,
        }
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Drains the command channel.
    fn take_commands(&mut self) {
        let _ = self.command_fd.consume();
        loop {
            let next = self.commands.lock().map(|r| r.try_recv());
            let Ok(Ok(command)) = next else { break };
            match command {
                Command::Prefetch(order) => {
                    if self.prefetches.len() >= MAX_QUEUED_PREFETCHES {
                        warn!(
                            "prefetch of resource {} dropped: {MAX_QUEUED_PREFETCHES} orders queued",
                            order.resource_id
                        );
                        self.stat(|s| s.prefetches_dropped += 1);
                        continue;
                    }
                    let order = self.order(order.task_id, order.resource_id, 0, 0);
                    self.prefetches.push_back(Prefetch {
                        order,
                        fetch: Fetch::Waiting,
                        held: self.session.is_none(),
                    });
                }
                Command::Dispatch(request) => {
                    let message = Message::Request(virtio_prefetch_wire::Request {
                        request_id: request.request_id,
                        session_id: request.session_id,
                        app_id: request.app_id,
                        request_type: request.request_type,
                        args: &request.args,
                    });
                    let mut buf = vec![0u8; message.encoded_len()];
                    match message.encode(0, &mut buf) {
                        Ok(_) => self.requests.push_back(buf),
                        Err(e) => warn!("request {} not dispatched: {e}", request.request_id),
                    }
                }
                Command::Evict(e) => {
                    // Behind the requests dispatched before it, in the order the host chose.
                    let message = Message::Evict(virtio_prefetch_wire::Evict {
                        app_id: e.app_id,
                        resource_id: e.resource_id,
                    });
                    let mut buf = vec![0u8; message.encoded_len()];
                    match message.encode(0, &mut buf) {
                        Ok(_) => self.requests.push_back(buf),
                        Err(err) => warn!("evict of resource {} not sent: {err}", e.resource_id),
                    }
                }
                #[cfg(feature = "fault-injection")]
                Command::SetTamper(tamper) => self.faults.tamper = tamper,
            }
        }
    }

    /// Takes finished fetches and sealed jobs; false when there were none (a wake-up for work
    /// an earlier run already took).
    fn take_work(&mut self) -> bool {
        let _ = self.work_fd.consume();
        let mut took = false;
        loop {
            let next = self
                .fetched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .try_recv();
            let Ok(done) = next else { break };
            took = true;
            self.fetch_done(done);
        }
        loop {
            let next = self
                .sealed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .try_recv();
            let Ok(done) = next else { break };
            took = true;
            self.seal_done(done);
        }
        took
    }

    fn fetch_done(&mut self, done: Fetched) {
        self.stat(|s| s.profile.add(&done.cost));
        if let Some(order) = self.demands.remove(&done.ticket) {
            match done.result {
                Ok(resource) => self.fetched_demands.push_back((order, resource)),
                Err(e) => warn!("demand for resource {} dropped: {e}", order.resource_id),
            }
            return;
        }
        let at = self
            .prefetches
            .iter()
            .position(|p| matches!(p.fetch, Fetch::Running(t) if t == done.ticket));
        // Otherwise the order is gone (a reset): nothing waits for it.
        let Some(at) = at else { return };
        match done.result {
            Ok(resource) => self.prefetches[at].fetch = Fetch::Done(resource),
            Err(e) => {
                warn!(
                    "prefetch of resource {} dropped: {e}",
                    self.prefetches[at].order.resource_id
                );
                self.prefetches.remove(at);
            }
        }
    }

    fn seal_done(&mut self, done: Sealed) {
        self.stat(|s| s.profile.add(&done.cost));
        if done.generation != self.generation {
            return;
        }
        // The sealing thread answers in the order it was asked: the first slot still sealing.
        let Some(at) = self.slots.iter().position(|s| matches!(s, Slot::Sealing)) else {
            return;
        };
        if done.objects.is_empty() {
            self.slots.remove(at);
            return;
        }
        self.stat(|s| s.signatures += 1);
        let mut ready = VecDeque::with_capacity(done.objects.len());
        for object in done.objects {
            ready.push_back(self.ready(object));
        }
        self.slots[at] = Slot::Ready(ready);
    }

    /// A sealed object, announced and ready to write.
    fn ready(&mut self, object: SealedObject) -> Outgoing {
        if let Some((h, statement)) = object.signed {
            // A version the PTO signed is a floor from now on, for every later boot too.
            match self.floors.raise(h.resource_id, h.resource_version) {
                Ok(true) => debug!(
                    "floor of resource {} raised to {}",
                    h.resource_id, h.resource_version
                ),
                Ok(false) => {}
                Err(e) => warn!("{e}"),
            }
            self.emit(BackendEvent::Signed {
                resource_id: h.resource_id,
                version: h.resource_version,
                seq: h.seq,
                epoch: h.epoch,
                statement_sha384: statement,
            });
            #[cfg(feature = "fault-injection")]
            self.faults.remember(&object.bytes);
        }
        let out = self.outgoing(object.bytes, object.header);
        #[cfg(feature = "fault-injection")]
        let out = Outgoing {
            rewrite: object.rewrite,
            ..out
        };
        out
    }

    /// Hands waiting prefetches to the pool, in order, while the window and the pool have room.
    /// The window is `prefetch_window` prefetches submitted and not yet sequenced, or more
    /// (up to a manifest's worth) while their content stays within [`MAX_BATCH_BYTES`]: small
    /// resources flow a batch at a time, large ones a few per worker.
    fn submit(&mut self) {
        let size = |device: &Self, p: &Prefetch| match &p.fetch {
            Fetch::Done(r) => r.content.len() as u64,
            _ => device.store.size_of(p.order.resource_id).unwrap_or(0),
        };
        let (mut count, mut bytes) = (0usize, 0u64);
        for p in self
            .prefetches
            .iter()
            .filter(|p| !matches!(p.fetch, Fetch::Waiting))
        {
            count += 1;
            bytes += size(self, p);
        }
        for i in 0..self.prefetches.len() {
            if !matches!(self.prefetches[i].fetch, Fetch::Waiting) {
                continue;
            }
            let next = size(self, &self.prefetches[i]);
            let room = count < self.prefetch_window
                || (count < MAX_BATCH && bytes + next <= MAX_BATCH_BYTES);
            if !room {
                return;
            }
            let order = self.prefetches[i].order;
            let job = self.fetch_job(&order);
            if self.pool.try_submit(job).is_err() {
                return;
            }
            self.prefetches[i].fetch = Fetch::Running(job.ticket);
            count += 1;
            bytes += next;
        }
    }

    /// How many prefetches at the front go out together: 0 to wait for a member still being
    /// fetched, 1 for a bundle on its own, 2 or more for a manifest and its bundles.
    fn batch_len(&self) -> usize {
        if !self.batch_manifests || self.acked_features & F_MANIFEST == 0 {
            return 1;
        }
        // Only small bundles gain: a signature check (about 0.5 ms in the guest) weighs against
        // hashing the content (about 1.2 ms per MiB there), while a batch delays its first
        // bundle until the whole batch is fetched and hashed. So batch bundles up to
        // MAX_BATCHED_RESOURCE, and at most MAX_BATCH_BYTES of content per manifest.
        let mut bytes = 0u64;
        let mut n = 0;
        for p in self.prefetches.iter().take(MAX_BATCH) {
            if !p.order.batchable() {
                break;
            }
            let size = match &p.fetch {
                Fetch::Done(r) => r.content.len() as u64,
                Fetch::Running(_) => match self.store.size_of(p.order.resource_id) {
                    Ok(size) => size,
                    Err(_) => break,
                },
                Fetch::Waiting => break,
            };
            if size > MAX_BATCHED_RESOURCE || bytes + size > MAX_BATCH_BYTES {
                break;
            }
            if matches!(p.fetch, Fetch::Running(_)) {
                // The front is fetched (the caller checked): wait for the rest of the run.
                return 0;
            }
            bytes += size;
            n += 1;
        }
        n.max(1)
    }

    /// Gives fetched resources their place in the delivery order (and their sequence numbers),
    /// demands first, while fewer than [`SEAL_AHEAD`] slots wait.
    fn sequence(&mut self) {
        let Some(session) = self.session else { return };
        while self.slots.len() < SEAL_AHEAD {
            if !self.fetched_demands.is_empty() {
                #[cfg(feature = "fault-injection")]
                match self.replay(self.fetched_demands[0].0.tamper) {
                    Replay::Wait => return,
                    Replay::Sent => {
                        self.fetched_demands.pop_front();
                        continue;
                    }
                    Replay::No => {}
                }
                if let Some((order, resource)) = self.fetched_demands.pop_front() {
                    self.seal_one(order, resource, session);
                }
                continue;
            }
            let Some(front) = self.prefetches.front() else {
                return;
            };
            if !matches!(front.fetch, Fetch::Done(_)) {
                return;
            }
            #[cfg(feature = "fault-injection")]
            match self.replay(front.order.tamper) {
                Replay::Wait => return,
                Replay::Sent => {
                    self.prefetches.pop_front();
                    continue;
                }
                Replay::No => {}
            }
            match self.batch_len() {
                0 => return,
                1 => {
                    if let Some(Prefetch {
                        order,
                        fetch: Fetch::Done(resource),
                        ..
                    }) = self.prefetches.pop_front()
                    {
                        self.seal_one(order, resource, session);
                    }
                }
                n => self.seal_batch(n, session),
            }
        }
    }

    /// Sends the last sealed bundle again instead of a new one, for `Tamper::ReplayLast`: the
    /// last sealed before this place in the order, so it waits for the sealing in progress.
    #[cfg(feature = "fault-injection")]
    fn replay(&mut self, tamper: Tamper) -> Replay {
        if tamper != Tamper::ReplayLast {
            return Replay::No;
        }
        if self.slots.iter().any(|s| matches!(s, Slot::Sealing)) {
            return Replay::Wait;
        }
        let Some(bytes) = self.faults.replay(tamper) else {
            return Replay::No;
        };
        let header = BundleHeader::parse(&bytes).ok();
        let out = self.outgoing(bytes, header);
        self.slots.push_back(Slot::Ready(VecDeque::from([out])));
        Replay::Sent
    }

    /// Queues the session's floors snapshot as the first object of the session (SPEC.md
    /// section 8): the guest accepts no bundle before it.
    fn send_floors(&mut self) {
        let Some(session) = self.session else { return };
        let view = self.floors.view();
        let issued_at = now_s();
        let header = FloorsHeader {
            count: view.floors.len() as u32,
            session_nonce: session.nonce,
            epoch: session.epoch,
            serial: view.serial,
            issued_at,
            expires_at: issued_at.saturating_add(self.floors_validity_s),
            signature: [0; 96],
        };
        self.stat(|s| s.floors_snapshots += 1);
        self.send_seal(SealJob::Floors {
            generation: self.generation,
            header,
            floors: view.floors,
        });
    }

    fn send_seal(&mut self, job: SealJob) {
        self.slots.push_back(Slot::Sealing);
        if self.seal_jobs.send(job).is_err() {
            warn!("the sealing thread is gone: nothing more can be signed");
            self.slots.pop_back();
        }
    }

    fn seal_one(&mut self, order: Order, resource: StoredResource, session: Session) {
        #[cfg(feature = "fault-injection")]
        let task_id = Faults::signed_task(order.tamper, order.task_id);
        #[cfg(not(feature = "fault-injection"))]
        let task_id = order.task_id;
        let spec = BundleSpec {
            resource: &resource,
            task_id,
            demand_cookie: order.demand_cookie,
        };
        let seq = self.take_seq();
        let header = bundle_header(&spec, &session, seq);
        self.send_seal(SealJob::Bundle {
            generation: self.generation,
            header: Box::new(header),
            list: resource.tree.list,
            content: resource.content,
            #[cfg(feature = "fault-injection")]
            tamper: order.tamper,
        });
    }

    /// Puts the first `n` prefetches (all fetched) under one manifest.
    fn seal_batch(&mut self, n: usize, session: Session) {
        let seq = self.take_seq();
        let mut bundles = Vec::with_capacity(n);
        for p in self.prefetches.drain(..n).collect::<Vec<_>>() {
            let Fetch::Done(resource) = p.fetch else {
                continue;
            };
            let spec = BundleSpec {
                resource: &resource,
                task_id: p.order.task_id,
                demand_cookie: 0,
            };
            let header = bundle_header(&spec, &session, self.take_seq());
            bundles.push((header, resource.tree.list, resource.content));
        }
        debug!("manifest seq {seq} covers {} bundles", bundles.len());
        self.send_seal(SealJob::Batch {
            generation: self.generation,
            session,
            seq,
            bundles,
        });
    }

    fn outgoing(&mut self, bytes: Vec<u8>, header: Option<BundleHeader>) -> Outgoing {
        let stream_id = self.next_stream;
        self.next_stream += 1;
        Outgoing {
            stream_id,
            bytes,
            offset: 0,
            header,
            #[cfg(feature = "fault-injection")]
            rewrite: false,
        }
    }

    /// Rewrites the staging buffer a [`Tamper::RewriteAfterDelivery`] bundle ended in.
    #[cfg(feature = "fault-injection")]
    fn rewrite_delivered(&mut self, mem: &Memory) {
        if let Some((addr, len)) = self.faults.rewrite_pending.take() {
            // The driver has had the buffer back since (it copied it before reposting):
            // rewriting it now must change nothing in the guest (the rewrite-after-copy test).
            match mem.write_slice(&vec![0xA5; len], addr) {
                Ok(()) => {
                    debug!("rewrote {len} bytes of the staging buffer at {:#x}", addr.0);
                    self.stat(|s| s.rewrites += 1);
                }
                Err(e) => warn!("rewrite of the staging buffer at {:#x} failed: {e}", addr.0),
            }
        }
    }

    /// The next object to write, taken out of the front slot (put back with `unsend`).
    fn next_object(&mut self) -> Option<Outgoing> {
        loop {
            let Some(Slot::Ready(objects)) = self.slots.front_mut() else {
                return None;
            };
            if let Some(out) = objects.pop_front() {
                return Some(out);
            }
            self.slots.pop_front();
            self.sequence();
        }
    }

    fn unsend(&mut self, out: Outgoing) {
        if let Some(Slot::Ready(objects)) = self.slots.front_mut() {
            objects.push_front(out);
        } else {
            self.slots.push_front(Slot::Ready(VecDeque::from([out])));
        }
    }

    /// Writes chunks of sealed objects into posted staging buffers.
    fn pump_staging(&mut self, vring: &VringRwLock) {
        let Some(mem) = self.memory() else { return };
        let mut state = vring.get_mut();
        if !state.is_enabled() {
            return;
        }
        #[cfg(feature = "fault-injection")]
        self.rewrite_delivered(&mem);
        let mut used_any = false;
        let mut cost = HostProfile::default();
        while let Some(mut out) = self.next_object() {
            let Some(chain) = state.get_queue_mut().pop_descriptor_chain(mem.clone()) else {
                self.unsend(out);
                break;
            };
            let head = chain.head_index();
            let descriptors: Vec<_> = chain.clone().take(2).collect();
            let usable = match descriptors.as_slice() {
                [d] if d.is_write_only()
                    && (d.len() as usize) > MessageHeader::LEN + Chunk::FIXED_LEN
                    && mem.check_range(d.addr(), d.len() as usize) =>
                {
                    Some(*d)
                }
                _ => None,
            };
            let Some(desc) = usable else {
                let (addr, len) = descriptors
                    .first()
                    .map_or((0, 0), |d| (d.addr().0, d.len()));
                self.refuse(QueueName::Staging, addr, len);
                let _ = state.add_used(head, 0);
                used_any = true;
                self.unsend(out);
                continue;
            };
            let room = (desc.len() as usize - MessageHeader::LEN - Chunk::FIXED_LEN)
                .min(self.config.max_chunk_len as usize);
            let end = (out.offset + room).min(out.bytes.len());
            let chunk_start = Instant::now();
            let chunk = Chunk {
                stream_id: out.stream_id,
                total_len: out.bytes.len() as u32,
                offset: out.offset as u32,
                data: &out.bytes[out.offset..end],
            };
            // The head, then the data straight from the sealed object (no message buffer).
            let written = Chunk::HEAD_LEN + chunk.data.len();
            let sent = chunk.encode_head(0).is_ok_and(|head| {
                mem.write_slice(&head, desc.addr()).is_ok()
                    && desc
                        .addr()
                        .checked_add(Chunk::HEAD_LEN as u64)
                        .is_some_and(|at| mem.write_slice(chunk.data, at).is_ok())
            });
            if !sent {
                self.refuse(QueueName::Staging, desc.addr().0, desc.len());
                let _ = state.add_used(head, 0);
                self.unsend(out);
                used_any = true;
                continue;
            }
            let ring_start = Instant::now();
            cost.chunk_ns += ring_start.duration_since(chunk_start).as_nanos() as u64;
            let _ = state.add_used(head, written as u32);
            cost.ring_ns += elapsed_ns(ring_start);
            used_any = true;
            self.stat(|s| s.chunks += 1);
            out.offset = end;
            if out.offset < out.bytes.len() {
                self.unsend(out);
                continue;
            }
            let Some(h) = out.header else {
                if !FloorsHeader::is_floors(&out.bytes) {
                    self.stat(|s| s.manifests += 1);
                }
                continue;
            };
            self.stat(|s| {
                s.bundles += 1;
                s.bytes += h.content_len;
            });
            self.emit(BackendEvent::Staged {
                resource_id: h.resource_id,
                version: h.resource_version,
                task_id: h.task_id,
                bytes: h.content_len,
                seq: h.seq,
                demand_cookie: h.demand_cookie,
            });
            #[cfg(feature = "fault-injection")]
            if out.rewrite {
                self.faults.rewrite_pending = Some((desc.addr(), written));
            }
        }
        if used_any {
            let ring_start = Instant::now();
            if let Err(e) = state.signal_used_queue() {
                warn!("stagingq interrupt: {e}");
            }
            cost.ring_ns += elapsed_ns(ring_start);
        }
        self.stat(|s| s.profile.add(&cost));
    }

    /// Writes dispatched requests into posted requestq buffers.
    fn pump_requests(&mut self, vring: &VringRwLock) {
        let Some(mem) = self.memory() else { return };
        let mut state = vring.get_mut();
        if !state.is_enabled() {
            return;
        }
        let mut used_any = false;
        while let Some(request) = self.requests.front() {
            let Some(chain) = state.get_queue_mut().pop_descriptor_chain(mem.clone()) else {
                break;
            };
            let head = chain.head_index();
            let descriptors: Vec<_> = chain.clone().take(2).collect();
            match descriptors.as_slice() {
                [d] if d.is_write_only()
                    && d.len() as usize >= request.len()
                    && mem.check_range(d.addr(), d.len() as usize)
                    && mem.write_slice(request, d.addr()).is_ok() =>
                {
                    let _ = state.add_used(head, request.len() as u32);
                    let evict = request.get(5) == Some(&MessageKind::Evict.raw());
                    self.requests.pop_front();
                    self.stat(|s| {
                        if evict {
                            s.evicts += 1;
                        } else {
                            s.requests += 1;
                        }
                    });
                }
                other => {
                    let (addr, len) = other.first().map_or((0, 0), |d| (d.addr().0, d.len()));
                    self.refuse(QueueName::Request, addr, len);
                    let _ = state.add_used(head, 0);
                }
            }
            used_any = true;
        }
        if used_any {
            if let Err(e) = state.signal_used_queue() {
                warn!("requestq interrupt: {e}");
            }
        }
    }

    /// Answers every ctrlq chain the driver posted.
    fn process_control(&mut self, vring: &VringRwLock) {
        let Some(mem) = self.memory() else { return };
        let mut state = vring.get_mut();
        if !state.is_enabled() {
            return;
        }
        let mut used_any = false;
        while let Some(chain) = state.get_queue_mut().pop_descriptor_chain(mem.clone()) {
            used_any = true;
            let head = chain.head_index();
            let descriptors: Vec<_> = chain.clone().take(3).collect();
            let (msg_desc, ack_desc) = match descriptors.as_slice() {
                [m, a]
                    if !m.is_write_only()
                        && a.is_write_only()
                        && m.len() <= MAX_CTRL_MESSAGE
                        && a.len() as usize >= Ack::MESSAGE_LEN
                        && mem.check_range(m.addr(), m.len() as usize)
                        && mem.check_range(a.addr(), a.len() as usize) =>
                {
                    (*m, *a)
                }
                other => {
                    for d in other {
                        if !mem.check_range(d.addr(), d.len() as usize) {
                            self.refuse(QueueName::Control, d.addr().0, d.len());
                        }
                    }
                    if other
                        .iter()
                        .all(|d| mem.check_range(d.addr(), d.len() as usize))
                    {
                        self.refuse(
                            QueueName::Control,
                            other.first().map_or(0, |d| d.addr().0),
                            0,
                        );
                    }
                    let _ = state.add_used(head, 0);
                    continue;
                }
            };
            let mut message = vec![0u8; msg_desc.len() as usize];
            let (status, detail, cookie) = match mem.read_slice(&mut message, msg_desc.addr()) {
                Ok(()) => self.handle_control(&message),
                Err(_) => (Status::Malformed, 0, 0),
            };
            let ack = Message::Ack(Ack { status, detail });
            let mut buf = [0u8; Ack::MESSAGE_LEN];
            let len = ack.encode(cookie, &mut buf).unwrap_or(0);
            let written = if mem.write_slice(&buf[..len], ack_desc.addr()).is_ok() {
                len as u32
            } else {
                0
            };
            let _ = state.add_used(head, written);
        }
        if used_any {
            if let Err(e) = state.signal_used_queue() {
                warn!("ctrlq interrupt: {e}");
            }
        }
    }

    /// Handles one ctrlq message; returns the Ack's status, detail and cookie.
    fn handle_control(&mut self, bytes: &[u8]) -> (Status, u32, u32) {
        let (header, message) = match parse_message(bytes) {
            Ok(parsed) => parsed,
            Err(e) => {
                debug!("malformed ctrlq message: {e}");
                self.stat(|s| s.malformed += 1);
                self.emit(BackendEvent::Malformed { error: e });
                return (Status::Malformed, 0, 0);
            }
        };
        match message {
            Message::Hello(hello) => {
                info!("guest session: epoch {}", hello.epoch);
                self.session = Some(Session {
                    nonce: hello.nonce,
                    epoch: hello.epoch,
                });
                // Bundles sequenced for an older session are useless now (their sealing is
                // dropped when it comes back), and so are its demands; prefetch orders stay,
                // with whatever was fetched for them.
                self.next_seq = 1;
                self.generation += 1;
                self.slots.clear();
                self.demands.clear();
                self.fetched_demands.clear();
                for p in &mut self.prefetches {
                    p.held = false;
                }
                self.send_floors();
                self.emit(BackendEvent::Hello {
                    nonce: hello.nonce,
                    epoch: hello.epoch,
                });
                (Status::Ok, 0, header.cookie)
            }
            Message::Demand(demand) => {
                let refuse = |device: &Self, status| {
                    device.stat(|s| s.demands_refused += 1);
                    device.emit(BackendEvent::Demand {
                        app_id: demand.app_id,
                        task_id: demand.task_id,
                        resource_id: demand.resource_id,
                        served: false,
                    });
                    (status, 0, header.cookie)
                };
                if self.session.is_none() {
                    return refuse(self, Status::BadSession);
                }
                if header.cookie == 0 {
                    return refuse(self, Status::Malformed);
                }
                if !self.demand_bucket.take() {
                    // No event: a flood must not crowd the others out of the event channel.
                    self.stat(|s| {
                        s.demands_refused += 1;
                        s.demands_rate_limited += 1;
                    });
                    return (Status::Busy, 0, header.cookie);
                }
                let size = match self.store.size_of(demand.resource_id) {
                    Ok(size) if size <= u64::from(self.config.max_content_len) => size,
                    Ok(_) => return refuse(self, Status::TooLarge),
                    Err(_) => return refuse(self, Status::UnknownResource),
                };
                if self.demands.len() + self.fetched_demands.len() >= MAX_DEMANDS {
                    return refuse(self, Status::Busy);
                }
                let order = self.order(
                    demand.task_id,
                    demand.resource_id,
                    demand.min_version,
                    header.cookie,
                );
                let job = self.fetch_job(&order);
                if self.pool.try_submit(job).is_err() {
                    return refuse(self, Status::Busy);
                }
                self.demands.insert(job.ticket, order);
                self.stat(|s| s.demands += 1);
                self.emit(BackendEvent::Demand {
                    app_id: demand.app_id,
                    task_id: demand.task_id,
                    resource_id: demand.resource_id,
                    served: true,
                });
                (
                    Status::Ok,
                    (size + BundleHeader::LEN as u64 + virtio_prefetch_wire::digest_list_len(size))
                        as u32,
                    header.cookie,
                )
            }
            Message::Report(r) => {
                self.stat(|s| s.reports += 1);
                self.emit(BackendEvent::Report {
                    kind: r.kind,
                    reason: r.reason,
                    app_id: r.app_id,
                    task_id: r.task_id,
                    resource_id: r.resource_id,
                    version: r.version,
                    latency_ns: r.latency_ns,
                });
                (Status::Ok, 0, header.cookie)
            }
            Message::Complete(c) => {
                self.stat(|s| s.completions += 1);
                self.emit(BackendEvent::Complete {
                    request_id: c.request_id,
                    status: c.status,
                    total_ns: c.total_ns,
                    tasks: c.tasks.iter().collect(),
                });
                (Status::Ok, 0, header.cookie)
            }
            other => {
                debug!("unexpected {:?} on ctrlq", other.kind());
                self.stat(|s| s.malformed += 1);
                self.emit(BackendEvent::Malformed {
                    error: WireError::BadKind(header.kind.raw()),
                });
                (
                    Status::Malformed,
                    u32::from(MessageKind::raw(header.kind)),
                    header.cookie,
                )
            }
        }
    }
}

/// Whether a rate-limited log line may go out now (`Some(suppressed since the last)`).
fn limited(limiter: &Mutex<LogLimiter>) -> Option<u64> {
    limiter.lock().unwrap_or_else(|p| p.into_inner()).allow()
}

impl VhostUserBackendMut for PrefetchDevice {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        // F_MANIFEST is offered; batches are sent only when the driver acked it.
        DEVICE_FEATURES | F_VERSION_1 | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn reset_device(&mut self) {
        info!("device reset: session ended");
        self.session = None;
        self.generation += 1;
        self.slots.clear();
        self.demands.clear();
        self.fetched_demands.clear();
        // Orders given before any session stay (the driver resets the device as it boots);
        // fetches still running for the others come back to no order and are dropped.
        self.prefetches.retain(|p| p.held);
        self.requests.clear();
        #[cfg(feature = "fault-injection")]
        {
            self.faults.rewrite_pending = None;
        }
        self.emit(BackendEvent::Reset);
    }

    fn acked_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn set_event_idx(&mut self, _enabled: bool) {}

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let config = self.config.encode();
        let start = (offset as usize).min(config.len());
        let end = start.saturating_add(size as usize).min(config.len());
        let mut out = config[start..end].to_vec();
        out.resize(size as usize, 0);
        out
    }

    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        let regions: Vec<_> = mem
            .memory()
            .iter()
            .map(|r| (r.start_addr().0, r.len()))
            .collect();
        info!("memory table: {regions:x?} (the only guest memory this backend can touch)");
        self.mem = Some(mem);
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        vec![(1 << NUM_QUEUES) - 1]
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let (consumer, notifier) = self.exit.as_ref()?;
        Some((consumer.try_clone().ok()?, notifier.try_clone().ok()?))
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        if let Some(hook) = self.device_hook.take() {
            hook(BackendThread::Device);
        }
        let [requestq, stagingq, ctrlq] = vrings else {
            return Err(std::io::Error::other(
                "virtio-prefetch needs exactly three queues",
            ));
        };
        match device_event {
            e if e == CONTROL_QUEUE => self.process_control(ctrlq),
            e if e == COMMAND_EVENT => self.take_commands(),
            e if e == WORK_EVENT => {
                if !self.take_work() {
                    // Nothing changed: no run (a run is when a pending staging-buffer rewrite
                    // of the fault injection happens, and it must follow the guest's copy).
                    return Ok(());
                }
            }
            e if e == REQUEST_QUEUE || e == STAGING_QUEUE => {}
            other => debug!("unknown event {other}"),
        }
        // Any event can make work possible: more fetches, more sealing, the device-to-driver
        // queues.
        self.submit();
        self.sequence();
        self.pump_requests(requestq);
        self.pump_staging(stagingq);
        Ok(())
    }
}
