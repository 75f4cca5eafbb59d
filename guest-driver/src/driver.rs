//! The driver: device bring-up, the used-ring processing, the verified store and the claim API.

use alloc::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    vec::Vec,
};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use log::{debug, warn};
use p384::ecdsa::VerifyingKey;

pub use crate::store::{Resource, Source};
use crate::{
    counters::Counters,
    mmio::{self, irq, status, Transport, TransportError},
    msg::{self, RejectReason, ReportKind, Status},
    platform::Platform,
    queue::{self, QueueError, RingAddrs, Segment, SplitQueue, Used, UsedFault},
    reassembly::Reassembly,
    registry::AppRegistry,
    store::VerifiedStore,
    verify::{Session, Verdict},
    window::{Carver, SharedWindow, WindowError},
};

/// Queue indices.
pub(crate) const REQUESTQ: u16 = 0;
pub(crate) const STAGINGQ: u16 = 1;
pub(crate) const CTRLQ: u16 = 2;
/// Bytes of each request buffer and each ctrlq message buffer.
const REQUEST_BUF: u32 = 4096;
const CTRL_MSG_BUF: u32 = 4096;
/// Bytes of each ctrlq Ack buffer (contract: >= 64).
const ACK_BUF: u32 = 64;
/// Requests kept for the embedder before new ones are dropped.
const MAX_QUEUED_REQUESTS: usize = 256;
/// In polling mode, how often (at most) the status register is read.
const STATUS_CHECK_NS: u64 = 1_000_000;
/// Most rounds of one wait (each round polls and sleeps or spins); only reached if the clock
/// stops.
const MAX_WAIT_ROUNDS: u64 = 1 << 26;
/// Driver version sent in Hello.
const DRIVER_VERSION: u32 = 1;

/// How the driver learns that the device used buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The embedder calls [`InterruptHandle::on_interrupt`] from the device's IRQ handler;
    /// waits sleep in [`Platform::wait_for_event`].
    Interrupt,
    /// The driver asks the device not to interrupt and waits by polling the used rings.
    Polling,
}

/// Driver settings. [`DriverConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The shared window (E820 type 0x5EE0); every ring and buffer is carved from it.
    pub window: SharedWindow,
    /// Interrupt-driven or polled completion.
    pub completion: Completion,
    /// Staging buffers (and stagingq size; a power of two).
    pub staging_buffers: u16,
    /// Largest chunk payload the driver accepts per staging buffer (the device's
    /// `max_chunk_len` is capped to this).
    pub max_chunk_len: u32,
    /// Request buffers (and requestq size; a power of two).
    pub request_buffers: u16,
    /// ctrlq chains in flight at once (ctrlq size is twice this; a power of two).
    pub ctrl_chains: u16,
    /// Largest resource content accepted (the device's `max_content_len` is capped to this).
    pub max_content_len: u32,
    /// Content bytes the verified store may hold.
    pub store_budget: u64,
    /// Deadline for a ctrlq Ack (Hello, Demand).
    pub ctrl_timeout_ns: u64,
    /// Deadline for a demand fetch to deliver its bundle.
    pub demand_timeout_ns: u64,
}

impl DriverConfig {
    /// Defaults: 32 staging buffers of 64 KiB, 16 request buffers, 64 ctrlq chains, 16 MiB
    /// resources, a 64 MiB store, 1 s for an Ack and 10 s for a demand fetch.
    pub fn new(window: SharedWindow) -> Self {
        Self {
            window,
            completion: Completion::Interrupt,
            staging_buffers: 32,
            max_chunk_len: 64 * 1024,
            request_buffers: 16,
            ctrl_chains: 64,
            max_content_len: 16 * 1024 * 1024,
            store_budget: 64 * 1024 * 1024,
            ctrl_timeout_ns: 1_000_000_000,
            demand_timeout_ns: 10_000_000_000,
        }
    }
}

/// Why the device is unusable until [`Driver::reset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokenReason {
    /// The device set DEVICE_NEEDS_RESET (the backend is gone).
    NeedsReset,
    /// A wait for the device passed its deadline.
    DeadlineMissed,
    /// The device broke the ring protocol.
    Protocol(QueueError),
}

/// The driver's view of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverState {
    /// Live: Hello acknowledged.
    Ready,
    /// Unusable; every claim and fetch fails at once.
    Broken(BrokenReason),
}

/// A request the PTO dispatched into the guest (requestq).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingRequest {
    /// Request id (echoed in [`RequestCompletion`]).
    pub request_id: u64,
    /// Client session.
    pub session_id: u64,
    /// App that serves it.
    pub app_id: u32,
    /// Request type.
    pub request_type: u32,
    /// Arguments (bounded by the request buffer).
    pub args: Vec<u8>,
}

/// Timings of one task of a request, reported in Complete (the wire crate's type).
pub use virtio_prefetch_wire::TaskTiming;

/// The completion of a request, sent on ctrlq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestCompletion {
    /// The request.
    pub request_id: u64,
    /// 0 for success, else an app-defined code.
    pub status: u32,
    /// End-to-end time in the guest.
    pub total_ns: u64,
    /// Per-task timings (at most 64 are sent).
    pub tasks: Vec<TaskTiming>,
}

/// Why [`Driver::new`] or [`Driver::reset`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    /// Register-level problem.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The window cannot hold the rings and buffers.
    #[error(transparent)]
    Window(#[from] WindowError),
    /// The embedded verifying key is not a SEC1 P-384 public key.
    #[error("the verifying key is not a SEC1-encoded P-384 public key; rebuild the image with SEE_PTO_VERIFYING_KEY pointing at pto.pub")]
    BadKey,
    /// The configuration is inconsistent.
    #[error("bad driver configuration: {0}")]
    Config(&'static str),
    /// The device config space never settled.
    #[error("the device's config space kept changing; the device is unstable")]
    ConfigUnstable,
    /// The device did not acknowledge Hello.
    #[error("the device did not acknowledge Hello: {0}")]
    Hello(ClaimError),
}

/// Why a claim or fetch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// The device is broken or gone; reset it.
    #[error("the prefetch device is unusable ({0:?}); reset it or run without prefetch")]
    DeviceBroken(BrokenReason),
    /// Nothing staged for (task, resource).
    #[error("resource not staged; use claim_or_fetch to fetch it on demand")]
    NotStaged,
    /// The app registry does not give this (task, resource) to this app.
    #[error("app {app_id} may not claim task {task_id} resource {resource_id}; declare it in the AppRegistry")]
    AccessDenied {
        /// Claiming app.
        app_id: u32,
        /// Task.
        task_id: u64,
        /// Resource.
        resource_id: u64,
    },
    /// The device refused the demand (Ack status code).
    #[error("the device refused the request with status {0}")]
    Refused(u32),
    /// The bundle the device delivered for this demand was rejected (RejectReason code).
    #[error("the device delivered a bundle that failed verification ({0:?}); see the counters")]
    Rejected(RejectReason),
    /// The device answered with a malformed Ack.
    #[error("the device answered with a malformed Ack; see the malformed counter")]
    BadAck,
    /// No free ctrlq chain.
    #[error("ctrlq is full; poll and retry")]
    QueueFull,
    /// The deadline passed; the device is now marked broken.
    #[error("the device did not answer before the deadline; it is marked broken")]
    Timeout,
}

#[derive(Debug, Default)]
struct IrqShared {
    pending: AtomicBool,
    count: AtomicU64,
}

/// A handle the IRQ handler uses; cloning is cheap, `on_interrupt` only touches atomics.
#[derive(Debug, Clone)]
pub struct InterruptHandle(Arc<IrqShared>);

impl InterruptHandle {
    /// Call from the device's interrupt handler: marks work pending (the driver processes the
    /// rings in [`Driver::poll`], from task context). Never takes a lock.
    pub fn on_interrupt(&self) {
        self.0.count.fetch_add(1, Ordering::Relaxed);
        self.0.pending.store(true, Ordering::Release);
    }
}

/// What a ctrlq chain carries, so its Ack can be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CtrlPurpose {
    Hello,
    Demand(u32),
    Report,
    Complete,
}

/// The Ack of a ctrlq message, as far as the driver knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckState {
    Pending,
    /// Accepted; the Ack's cookie.
    Ok(u32),
    /// Non-zero Status code.
    Status(u32),
    /// The device returned the chain with a malformed Ack.
    Garbled,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct CtrlSlot {
    pub msg_gpa: u64,
    pub ack_gpa: u64,
    pub busy: Option<CtrlPurpose>,
}

/// A demand fetch in flight.
#[derive(Debug)]
pub(crate) struct PendingDemand {
    pub app_id: u32,
    pub task_id: u64,
    pub resource_id: u64,
    pub min_version: u64,
    pub ack: AckState,
    pub outcome: Option<Result<Resource, RejectReason>>,
}

/// Everything carved out of the window, and the queues over it.
#[derive(Debug)]
pub(crate) struct Rings {
    pub requestq: SplitQueue,
    pub request_bufs: Vec<u64>,
    pub stagingq: SplitQueue,
    pub staging_bufs: Vec<u64>,
    pub staging_len: u32,
    pub ctrlq: SplitQueue,
    pub ctrl: Vec<CtrlSlot>,
    pub ctrl_unkicked: bool,
}

/// The virtio-prefetch driver over a [`Platform`].
#[derive(Debug)]
pub struct Driver<P: Platform> {
    pub(crate) p: P,
    pub(crate) config: DriverConfig,
    pub(crate) key: VerifyingKey,
    pub(crate) registry: AppRegistry,
    pub(crate) state: DriverState,
    pub(crate) irq: InterruptHandle,
    pub(crate) counters: Counters,
    pub(crate) store: VerifiedStore,
    pub(crate) rings: Option<Rings>,
    pub(crate) session: Session,
    /// Highest accepted version per resource id; survives resets (rollback across sessions).
    pub(crate) versions: BTreeMap<u64, u64>,
    pub(crate) reassembly: Reassembly,
    pub(crate) demands: BTreeMap<u32, PendingDemand>,
    pub(crate) next_cookie: u32,
    pub(crate) requests: VecDeque<IncomingRequest>,
    pub(crate) features: u64,
    /// Effective limits after reading the device config.
    pub(crate) max_content_len: u32,
    pub(crate) last_status_check: u64,
    scratch: Vec<Result<Used, UsedFault>>,
    /// Private copy of one staging buffer (allocation reused).
    staging_copy: Vec<u8>,
}

impl<P: Platform> Driver<P> {
    /// Brings the device up: reset, feature negotiation, queues and buffers in the shared
    /// window, DRIVER_OK, Hello with a fresh session nonce, and waits for the Hello Ack.
    pub fn new(
        platform: P,
        config: DriverConfig,
        verifying_key_sec1: &[u8],
        registry: AppRegistry,
    ) -> Result<Self, InitError> {
        let key =
            VerifyingKey::from_sec1_bytes(verifying_key_sec1).map_err(|_| InitError::BadKey)?;
        for (n, max, what) in [
            (
                config.staging_buffers,
                32768,
                "staging_buffers must be a power of two <= 32768",
            ),
            (
                config.request_buffers,
                32768,
                "request_buffers must be a power of two <= 32768",
            ),
            (
                config.ctrl_chains,
                16384,
                "ctrl_chains must be a power of two <= 16384",
            ),
        ] {
            if !n.is_power_of_two() || n > max {
                return Err(InitError::Config(what));
            }
        }
        if config.max_chunk_len == 0 || config.max_chunk_len > 16 * 1024 * 1024 {
            return Err(InitError::Config("max_chunk_len must be in 1..=16 MiB"));
        }
        let max_content_len = config.max_content_len;
        let mut d = Self {
            p: platform,
            store: VerifiedStore::new(config.store_budget),
            reassembly: Reassembly::new(msg::max_object_len(max_content_len)),
            config,
            key,
            registry,
            state: DriverState::Broken(BrokenReason::NeedsReset),
            irq: InterruptHandle(Arc::new(IrqShared::default())),
            counters: Counters::default(),
            rings: None,
            session: Session::default(),
            versions: BTreeMap::new(),
            demands: BTreeMap::new(),
            next_cookie: 1,
            requests: VecDeque::new(),
            features: 0,
            max_content_len,
            last_status_check: 0,
            scratch: Vec::new(),
            staging_copy: Vec::new(),
        };
        d.bring_up()?;
        Ok(d)
    }

    /// Resets the device and starts a new session (fresh nonce, next epoch): staged bundles,
    /// partial chunks, queued requests and pending demands are discarded. Per-resource version
    /// floors are kept (a rollback across sessions is still refused).
    pub fn reset(&mut self) -> Result<(), InitError> {
        self.counters.resets += 1;
        self.discard(BrokenReason::NeedsReset);
        self.bring_up()
    }

    fn bring_up(&mut self) -> Result<(), InitError> {
        self.rings = None;
        Transport::probe(&self.p, msg::DEVICE_ID)?;
        let wanted = msg::F_MANIFEST | msg::F_NEEDS_RESET;
        self.features = Transport::negotiate(&self.p, mmio::F_VERSION_1, wanted)?;
        let cfg = Transport::read_config::<P, { msg::CONFIG_LEN }>(&self.p)
            .ok_or(InitError::ConfigUnstable)?;
        let dev = msg::DeviceConfig::parse(&cfg)
            .map_err(|_| InitError::Config("the device's config space is malformed"))?;
        // The device's limits can only lower ours (0 means it did not say).
        self.max_content_len = match dev.max_content_len {
            0 => self.config.max_content_len,
            n => self.config.max_content_len.min(n),
        };
        self.reassembly = Reassembly::new(msg::max_object_len(self.max_content_len));
        let chunk = if dev.max_chunk_len == 0 {
            self.config.max_chunk_len
        } else {
            self.config.max_chunk_len.min(dev.max_chunk_len)
        };
        if dev.max_chunk_len > self.config.max_chunk_len {
            warn!(
                "virtio-prefetch: device chunks up to {} bytes; staging buffers hold {}",
                dev.max_chunk_len, self.config.max_chunk_len
            );
        }
        let staging_len = chunk + msg::CHUNK_PREFIX as u32;
        let rings = match self.carve(staging_len) {
            Ok(r) => r,
            Err(e) => {
                Transport::fail(&self.p);
                return Err(e);
            }
        };
        self.rings = Some(rings);
        self.post_all_buffers();
        Transport::driver_ok(&self.p);
        // No notification before DRIVER_OK (virtio 1.2, 3.1.1).
        Transport::notify(&self.p, REQUESTQ);
        Transport::notify(&self.p, STAGINGQ);
        self.state = DriverState::Ready;
        self.last_status_check = self.p.now_ns();
        self.session = Session::fresh(&mut self.p, self.session.epoch.wrapping_add(1));
        debug!(
            "virtio-prefetch: up, features {:#x}, staging {} x {} bytes, epoch {}",
            self.features, self.config.staging_buffers, staging_len, self.session.epoch
        );
        self.hello().map_err(|e| {
            if self.state == DriverState::Ready {
                self.discard(BrokenReason::NeedsReset);
            }
            InitError::Hello(e)
        })
    }

    fn carve(&mut self, staging_len: u32) -> Result<Rings, InitError> {
        let c = &self.config;
        let polling = c.completion == Completion::Polling;
        let mut carver = Carver::new(c.window);
        let queue_at =
            |carver: &mut Carver, index: u16, size: u16| -> Result<SplitQueue, InitError> {
                let rings = RingAddrs {
                    desc: carver.take(queue::desc_bytes(size), 16)?,
                    avail: carver.take(queue::avail_bytes(size), 2)?,
                    used: carver.take(queue::used_bytes(size), 4)?,
                };
                Transport::setup_queue(&self.p, index, size, rings.desc, rings.avail, rings.used)?;
                Ok(SplitQueue::new(&self.p, index, size, rings, polling))
            };
        let requestq = queue_at(&mut carver, REQUESTQ, c.request_buffers)?;
        let stagingq = queue_at(&mut carver, STAGINGQ, c.staging_buffers)?;
        let ctrlq = queue_at(&mut carver, CTRLQ, c.ctrl_chains * 2)?;
        let mut take_n = |n: u16, len: u32| -> Result<Vec<u64>, InitError> {
            (0..n)
                .map(|_| Ok(carver.take(u64::from(len), 64)?))
                .collect()
        };
        let request_bufs = take_n(c.request_buffers, REQUEST_BUF)?;
        let staging_bufs = take_n(c.staging_buffers, staging_len)?;
        let msgs = take_n(c.ctrl_chains, CTRL_MSG_BUF)?;
        let acks = take_n(c.ctrl_chains, ACK_BUF)?;
        let ctrl = msgs
            .into_iter()
            .zip(acks)
            .map(|(msg_gpa, ack_gpa)| CtrlSlot {
                msg_gpa,
                ack_gpa,
                busy: None,
            })
            .collect();
        Ok(Rings {
            requestq,
            request_bufs,
            stagingq,
            staging_bufs,
            staging_len,
            ctrlq,
            ctrl,
            ctrl_unkicked: false,
        })
    }

    fn post_all_buffers(&mut self) {
        let Some(r) = self.rings.as_mut() else { return };
        for (i, &gpa) in r.request_bufs.iter().enumerate() {
            let seg = Segment {
                gpa,
                len: REQUEST_BUF,
                writable: true,
            };
            r.requestq.post(&self.p, &[seg], i as u32);
        }
        for (i, &gpa) in r.staging_bufs.iter().enumerate() {
            let seg = Segment {
                gpa,
                len: r.staging_len,
                writable: true,
            };
            r.stagingq.post(&self.p, &[seg], i as u32);
        }
    }

    /// Marks the device broken and discards everything tied to the session.
    pub(crate) fn discard(&mut self, why: BrokenReason) {
        if self.state == DriverState::Ready {
            warn!("virtio-prefetch: device unusable: {why:?}");
        }
        if self.rings.is_some() {
            // Stop the device using the rings; Driver::reset brings it back.
            Transport::reset(&self.p);
        }
        self.state = DriverState::Broken(why);
        self.counters.evicted += self.store.clear() as u64;
        self.reassembly.clear();
        self.requests.clear();
        self.session.manifest_digests.clear();
    }

    /// The handle the IRQ handler calls.
    pub fn interrupt_handle(&self) -> InterruptHandle {
        self.irq.clone()
    }

    /// Same as [`InterruptHandle::on_interrupt`].
    pub fn on_interrupt(&self) {
        self.irq.on_interrupt();
    }

    /// The device's state.
    pub fn state(&self) -> DriverState {
        self.state
    }

    /// The counters (interrupts included).
    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        c.interrupts = self.irq.0.count.load(Ordering::Relaxed);
        c
    }

    /// The app registry (to declare apps after init).
    pub fn registry_mut(&mut self) -> &mut AppRegistry {
        &mut self.registry
    }

    /// The features negotiated with the device.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// This session's nonce and epoch (sent in Hello).
    pub fn session(&self) -> ([u8; 32], u64) {
        (self.session.nonce, self.session.epoch)
    }

    /// Reads the device status; a device that asks for a reset (or dropped DRIVER_OK) is
    /// marked broken.
    pub fn check_device(&mut self) -> DriverState {
        self.last_status_check = self.p.now_ns();
        if self.state == DriverState::Ready {
            let s = self.p.mmio_read32(mmio::reg::STATUS);
            if s & status::DEVICE_NEEDS_RESET != 0 || s & status::DRIVER_OK == 0 {
                self.discard(BrokenReason::NeedsReset);
            }
        }
        self.state
    }

    /// Processes every used buffer on all three queues: incoming requests, staging chunks
    /// (copied once, reassembled, verified, stored), ctrlq Acks. Also kicks ctrlq messages
    /// (reports) posted since the last kick. Cheap when nothing happened: three reads of a
    /// used index from the shared window.
    pub fn poll(&mut self) {
        if self.irq.0.pending.swap(false, Ordering::Acquire) {
            let isr = self.p.mmio_read32(mmio::reg::INTERRUPT_STATUS);
            if isr != 0 {
                self.p.mmio_write32(mmio::reg::INTERRUPT_ACK, isr);
            }
            if isr & irq::CONFIG_CHANGE != 0 {
                self.check_device();
            }
        } else if self.config.completion == Completion::Polling
            && self.p.now_ns().saturating_sub(self.last_status_check) >= STATUS_CHECK_NS
        {
            self.check_device();
        }
        if self.state != DriverState::Ready {
            return;
        }
        let mut used = core::mem::take(&mut self.scratch);
        for q in [STAGINGQ, REQUESTQ, CTRLQ] {
            used.clear();
            let Some(r) = self.rings.as_mut() else { break };
            let queue = match q {
                REQUESTQ => &mut r.requestq,
                STAGINGQ => &mut r.stagingq,
                _ => &mut r.ctrlq,
            };
            if let Err(e) = queue.collect(&self.p, &mut used) {
                warn!("virtio-prefetch: {e}");
                self.counters.malformed += 1;
                self.discard(BrokenReason::Protocol(e));
                break;
            }
            for u in used.drain(..) {
                match (q, u) {
                    (
                        _,
                        Err(UsedFault::LengthTooLong {
                            token,
                            len,
                            capacity,
                        }),
                    ) => {
                        debug!("virtio-prefetch: queue {q}: used length {len} > {capacity}");
                        self.counters.malformed += 1;
                        self.recycle(q, token, None);
                    }
                    (_, Err(f)) => {
                        debug!("virtio-prefetch: queue {q}: dropped used element {f:?}");
                        self.counters.malformed += 1;
                    }
                    (_, Ok(u)) => self.recycle(q, u.token, Some(u.len)),
                }
            }
        }
        self.scratch = used;
    }

    /// Handles one used buffer (`len` None: refused, only recycle) and gives it back.
    fn recycle(&mut self, q: u16, token: u32, len: Option<u32>) {
        let Some(r) = self.rings.as_ref() else { return };
        match q {
            STAGINGQ => {
                let Some(&gpa) = r.staging_bufs.get(token as usize) else {
                    return;
                };
                if let Some(len) = len {
                    self.on_staging(gpa, len);
                }
                self.repost(STAGINGQ, token);
            }
            REQUESTQ => {
                let Some(&gpa) = r.request_bufs.get(token as usize) else {
                    return;
                };
                if let Some(len) = len {
                    self.on_request(gpa, len);
                }
                self.repost(REQUESTQ, token);
            }
            _ => {
                let Some(slot) = r.ctrl.get(token as usize).copied() else {
                    return;
                };
                let ack = match len {
                    Some(len) => self.read_ack(slot.ack_gpa, len),
                    None => AckState::Garbled,
                };
                self.on_ack(token as usize, ack);
            }
        }
    }

    fn repost(&mut self, q: u16, token: u32) {
        if self.state != DriverState::Ready {
            return;
        }
        let Some(r) = self.rings.as_mut() else { return };
        let (queue, gpa, len) = if q == STAGINGQ {
            (
                &mut r.stagingq,
                r.staging_bufs[token as usize],
                r.staging_len,
            )
        } else {
            (&mut r.requestq, r.request_bufs[token as usize], REQUEST_BUF)
        };
        queue.post(
            &self.p,
            &[Segment {
                gpa,
                len,
                writable: true,
            }],
            token,
        );
        // One kick per poll would do; the device normally has plenty of buffers posted, so
        // kick only when its queue ran low.
        if u32::from(queue.outstanding()) <= u32::from(queue.size()) / 2 {
            Transport::notify(&self.p, q);
        }
    }

    /// A staging buffer came back with `len` bytes: copy them out of the shared window once
    /// into private memory, parse the chunk there, reassemble, and verify a completed object.
    fn on_staging(&mut self, gpa: u64, len: u32) {
        let mut copy = core::mem::take(&mut self.staging_copy);
        copy.clear();
        copy.resize(len as usize, 0);
        self.p.shared_read(gpa, &mut copy);
        let done = match msg::parse_chunk(&copy) {
            None => {
                self.counters.malformed += 1;
                None
            }
            Some(chunk) => match self.reassembly.accept(&chunk) {
                Ok(done) => done,
                Err(e) => {
                    debug!(
                        "virtio-prefetch: chunk of stream {} dropped: {e}",
                        chunk.stream_id
                    );
                    if matches!(e, crate::reassembly::ChunkError::TooLarge(_)) {
                        self.count_reject(RejectReason::TooLarge);
                    } else {
                        self.counters.malformed += 1;
                    }
                    None
                }
            },
        };
        self.staging_copy = copy;
        if let Some(object) = done {
            self.on_object(&object);
        }
    }

    pub(crate) fn count_reject(&mut self, reason: RejectReason) {
        if let Some(slot) = self.counters.rejected.get_mut(reason.raw() as usize) {
            *slot += 1;
        }
    }

    /// A reassembled object (private memory): verify, then change trusted state.
    fn on_object(&mut self, object: &[u8]) {
        let now = self.p.now_ns();
        let verdict = crate::verify::check(
            object,
            &self.key,
            &self.session,
            &self.versions,
            &self.registry,
            &self.demands,
            self.max_content_len,
            self.features & msg::F_MANIFEST != 0,
        );
        match verdict {
            Ok(Verdict::Bundle(b)) => {
                // Every check passed: now, and only now, trusted state changes.
                self.session.last_seq = Some(b.seq);
                if let Some(d) = b.manifest_digest {
                    self.session.manifest_digests.remove(&d);
                }
                let floor = self.versions.entry(b.resource.resource_id).or_insert(0);
                *floor = (*floor).max(b.resource.version);
                self.counters.accepted += 1;
                let mut r = b.resource;
                r.verified_ns = now;
                match b.demand {
                    Some(cookie) => {
                        r.source = Source::Demanded;
                        if let Some(d) = self.demands.get_mut(&cookie) {
                            d.outcome = Some(Ok(r));
                        }
                    }
                    None => {
                        for old in self.store.insert(r) {
                            self.counters.evicted += 1;
                            self.report_resource(ReportKind::Evict, &old, 0);
                        }
                    }
                }
            }
            Ok(Verdict::Manifest { seq, digests }) => {
                self.session.last_seq = Some(seq);
                self.session.add_manifest(digests);
                self.counters.manifests += 1;
            }
            Err(rej) => {
                debug!("virtio-prefetch: object rejected: {:?}", rej.reason);
                self.count_reject(rej.reason);
                if let Some(cookie) = rej.demand {
                    if let Some(d) = self.demands.get_mut(&cookie) {
                        d.outcome.get_or_insert(Err(rej.reason));
                    }
                }
                self.report(ReportKind::Reject, Some(rej.reason), rej.ids, 0);
            }
        }
    }

    fn on_request(&mut self, gpa: u64, len: u32) {
        let mut buf = alloc::vec![0u8; len as usize];
        self.p.shared_read(gpa, &mut buf);
        match msg::parse_request(&buf) {
            Some(r) if self.requests.len() < MAX_QUEUED_REQUESTS => {
                self.counters.requests += 1;
                self.requests.push_back(r);
            }
            Some(_) => {
                warn!("virtio-prefetch: request queue full; request dropped");
                self.counters.requests_dropped += 1;
            }
            None => self.counters.malformed += 1,
        }
    }

    fn read_ack(&mut self, gpa: u64, len: u32) -> AckState {
        let mut buf = [0u8; ACK_BUF as usize];
        let n = (len as usize).min(buf.len());
        self.p.shared_read(gpa, &mut buf[..n]);
        match msg::parse_ack(&buf[..n]) {
            Some((ack, cookie)) if ack.status == Status::Ok => AckState::Ok(cookie),
            Some((ack, _)) => AckState::Status(ack.status.raw()),
            None => {
                self.counters.malformed += 1;
                AckState::Garbled
            }
        }
    }

    fn on_ack(&mut self, slot: usize, ack: AckState) {
        let Some(r) = self.rings.as_mut() else { return };
        let Some(purpose) = r.ctrl.get_mut(slot).and_then(|s| s.busy.take()) else {
            return;
        };
        match purpose {
            CtrlPurpose::Demand(cookie) => {
                // An Ok Ack must echo the demand id.
                let ack = match ack {
                    AckState::Ok(c) if c != cookie => {
                        self.counters.malformed += 1;
                        AckState::Garbled
                    }
                    other => other,
                };
                if let Some(d) = self.demands.get_mut(&cookie) {
                    d.ack = ack;
                }
            }
            CtrlPurpose::Hello => self.session.hello_ack = ack,
            CtrlPurpose::Report | CtrlPurpose::Complete => {
                if !matches!(ack, AckState::Ok(_)) {
                    debug!("virtio-prefetch: {purpose:?} answered {ack:?}");
                }
            }
        }
    }

    /// Posts a ctrlq message (the Ack buffer follows it in the chain). `kick` notifies the
    /// device now; otherwise at the next [`Driver::poll`] or [`Driver::flush`].
    pub(crate) fn send_ctrl(
        &mut self,
        purpose: CtrlPurpose,
        message: &[u8],
        kick: bool,
    ) -> Result<(), ClaimError> {
        if let DriverState::Broken(why) = self.state {
            return Err(ClaimError::DeviceBroken(why));
        }
        let Some(r) = self.rings.as_mut() else {
            return Err(ClaimError::DeviceBroken(BrokenReason::NeedsReset));
        };
        if message.len() > CTRL_MSG_BUF as usize {
            return Err(ClaimError::QueueFull);
        }
        let Some(slot) = r.ctrl.iter().position(|s| s.busy.is_none()) else {
            self.counters.ctrl_dropped += 1;
            return Err(ClaimError::QueueFull);
        };
        let s = r.ctrl[slot];
        self.p.shared_write(s.msg_gpa, message);
        let chain = [
            Segment {
                gpa: s.msg_gpa,
                len: message.len() as u32,
                writable: false,
            },
            Segment {
                gpa: s.ack_gpa,
                len: ACK_BUF,
                writable: true,
            },
        ];
        if !r.ctrlq.post(&self.p, &chain, slot as u32) {
            self.counters.ctrl_dropped += 1;
            return Err(ClaimError::QueueFull);
        }
        r.ctrl[slot].busy = Some(purpose);
        if kick {
            r.ctrl_unkicked = false;
            Transport::notify(&self.p, CTRLQ);
        } else {
            r.ctrl_unkicked = true;
        }
        Ok(())
    }

    /// Notifies the device of ctrlq messages (reports) posted without a kick.
    pub fn flush(&mut self) {
        if let Some(r) = self.rings.as_mut() {
            if r.ctrl_unkicked && self.state == DriverState::Ready {
                r.ctrl_unkicked = false;
                Transport::notify(&self.p, CTRLQ);
            }
        }
    }

    /// Polls until `done` holds, the device breaks, or `deadline_ns` passes (then the device is
    /// marked broken: a device that misses a deadline is not trusted to answer later).
    pub(crate) fn wait_until(
        &mut self,
        deadline_ns: u64,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Result<(), ClaimError> {
        // A guard against a clock that never advances: a wait never exceeds this many rounds.
        for _ in 0..MAX_WAIT_ROUNDS {
            self.flush();
            self.poll();
            if let DriverState::Broken(why) = self.state {
                return Err(ClaimError::DeviceBroken(why));
            }
            if done(self) {
                return Ok(());
            }
            if self.p.now_ns() >= deadline_ns {
                if let DriverState::Broken(why) = self.check_device() {
                    return Err(ClaimError::DeviceBroken(why));
                }
                self.discard(BrokenReason::DeadlineMissed);
                return Err(ClaimError::Timeout);
            }
            match self.config.completion {
                Completion::Interrupt => {
                    if !self.irq.0.pending.load(Ordering::Acquire) {
                        self.p.wait_for_event(deadline_ns);
                    }
                }
                Completion::Polling => core::hint::spin_loop(),
            }
        }
        self.discard(BrokenReason::DeadlineMissed);
        Err(ClaimError::Timeout)
    }

    fn hello(&mut self) -> Result<(), ClaimError> {
        let m = msg::encode_hello(
            &self.session.nonce,
            self.session.epoch,
            DRIVER_VERSION,
            u32::from(self.config.staging_buffers),
        );
        self.session.hello_ack = AckState::Pending;
        self.send_ctrl(CtrlPurpose::Hello, &m, true)?;
        let deadline = self.p.now_ns().saturating_add(self.config.ctrl_timeout_ns);
        self.wait_until(deadline, |d| d.session.hello_ack != AckState::Pending)?;
        match self.session.hello_ack {
            AckState::Ok(_) => Ok(()),
            AckState::Status(s) => Err(ClaimError::Refused(s)),
            _ => Err(ClaimError::BadAck),
        }
    }
}
