//! The driver: device bring-up and reset, the session, ctrlq sending and bounded waits.
//! Used-ring processing is in `rx.rs`, the claim API in `claim.rs`.

use alloc::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    vec::Vec,
};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use log::{debug, warn};
use p384::ecdsa::VerifyingKey;

pub use crate::config::*;
pub use crate::store::{Resource, Source};
use crate::{
    counters::Counters,
    mmio::{self, status, Transport},
    msg::{self, RejectReason},
    platform::Platform,
    queue::{self, RingAddrs, Segment, SplitQueue, Used, UsedFault},
    reassembly::Reassembly,
    registry::AppRegistry,
    store::VerifiedStore,
    verify::{FloorsTrust, Session},
    window::Carver,
};

/// Queue indices.
pub(crate) const REQUESTQ: u16 = 0;
pub(crate) const STAGINGQ: u16 = 1;
pub(crate) const CTRLQ: u16 = 2;
/// Bytes of each request buffer and each ctrlq message buffer.
pub(crate) const REQUEST_BUF: u32 = 4096;
const CTRL_MSG_BUF: u32 = 4096;
/// Bytes of each ctrlq Ack buffer. SPEC.md section 4 requires at least 24 (the Ack message:
/// 16-byte header and 8-byte payload), which the backend checks; 64 leaves room.
pub(crate) const ACK_BUF: u32 = 64;
const _: () = assert!(ACK_BUF as usize >= virtio_prefetch_wire::Ack::MESSAGE_LEN);
/// Requests kept for the embedder before new ones are dropped.
pub(crate) const MAX_QUEUED_REQUESTS: usize = 256;
/// In polling mode, how often (at most) the status register is read.
pub(crate) const STATUS_CHECK_NS: u64 = 1_000_000;
/// Most rounds of one wait (each round polls and sleeps or spins); only reached if the clock
/// stops.
const MAX_WAIT_ROUNDS: u64 = 1 << 26;
/// Driver version sent in Hello.
const DRIVER_VERSION: u32 = 1;

#[derive(Debug, Default)]
pub(crate) struct IrqShared {
    pub(crate) pending: AtomicBool,
    pub(crate) count: AtomicU64,
}

/// A handle the IRQ handler uses; cloning is cheap, `on_interrupt` only touches atomics.
#[derive(Debug, Clone)]
pub struct InterruptHandle(pub(crate) Arc<IrqShared>);

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
    /// `Counters::accepted` when its bundle was accepted: the order of arrival.
    pub arrived: u64,
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
    /// Staging / request buffers reposted since the last notify of their queue.
    pub staging_unkicked: bool,
    pub request_unkicked: bool,
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
    pub(crate) profile: crate::Profile,
    pub(crate) store: VerifiedStore,
    pub(crate) rings: Option<Rings>,
    pub(crate) session: Session,
    /// Highest accepted version per resource id, raised by floors snapshots too; survives
    /// resets (rollback across sessions) and, through the PTO's snapshots, reboots.
    pub(crate) versions: BTreeMap<u64, u64>,
    /// The floors snapshots' serial and time bound since boot.
    pub(crate) floors_trust: FloorsTrust,
    pub(crate) reassembly: Reassembly,
    pub(crate) demands: BTreeMap<u32, PendingDemand>,
    pub(crate) next_cookie: u32,
    pub(crate) requests: VecDeque<IncomingRequest>,
    pub(crate) features: u64,
    /// Effective limits after reading the device config.
    pub(crate) max_content_len: u32,
    pub(crate) last_status_check: u64,
    /// `Platform::now_ns` when the last poll finished (the profile's notification stage starts
    /// no earlier).
    pub(crate) last_poll_end: u64,
    pub(crate) scratch: Vec<Result<Used, UsedFault>>,
    /// Private copy of one staging buffer (allocation reused).
    pub(crate) staging_copy: Vec<u8>,
    /// True while `bring_up` waits for the Hello Ack.
    bringing_up: bool,
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
        let min_time_s = config.min_time_s;
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
            profile: crate::Profile::default(),
            rings: None,
            session: Session::default(),
            versions: BTreeMap::new(),
            floors_trust: FloorsTrust {
                serial: None,
                time_floor: min_time_s,
            },
            demands: BTreeMap::new(),
            next_cookie: 1,
            requests: VecDeque::new(),
            features: 0,
            max_content_len,
            last_status_check: 0,
            last_poll_end: 0,
            scratch: Vec::new(),
            staging_copy: Vec::new(),
            bringing_up: false,
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
        // The private copy of one staging buffer, reserved once: copying never allocates.
        self.staging_copy.clear();
        self.staging_copy
            .try_reserve_exact(staging_len as usize)
            .map_err(|_| InitError::Config("no memory for the staging copy buffer"))?;
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
        self.kick(REQUESTQ);
        self.kick(STAGINGQ);
        self.state = DriverState::Ready;
        self.last_status_check = self.p.now_ns();
        self.session = Session::fresh(&mut self.p, self.session.epoch.wrapping_add(1));
        debug!(
            "virtio-prefetch: up, features {:#x}, staging {} x {} bytes, epoch {}",
            self.features, self.config.staging_buffers, staging_len, self.session.epoch
        );
        self.bringing_up = true;
        let hello = self.hello();
        self.bringing_up = false;
        hello.map_err(|e| {
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
            staging_unkicked: false,
            request_unkicked: false,
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

    /// Time spent per stage of the receive path so far.
    pub fn profile(&self) -> crate::Profile {
        self.profile
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
            self.counters.register_accesses += 1;
            let s = self.p.mmio_read32(mmio::reg::STATUS);
            if s & status::DEVICE_NEEDS_RESET != 0 || s & status::DRIVER_OK == 0 {
                self.discard(BrokenReason::NeedsReset);
            }
        }
        self.state
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
            self.kick(CTRLQ);
        } else {
            r.ctrl_unkicked = true;
        }
        Ok(())
    }

    /// Notifies the device of new buffers on queue `q` (one register write: a VM exit).
    pub(crate) fn kick(&mut self, q: u16) {
        self.counters.notifies += 1;
        self.counters.register_accesses += 1;
        Transport::notify(&self.p, q);
    }

    /// Notifies the device of ctrlq messages (reports) posted without a kick.
    pub fn flush(&mut self) {
        if let Some(r) = self.rings.as_mut() {
            if r.ctrl_unkicked && self.state == DriverState::Ready {
                r.ctrl_unkicked = false;
                self.kick(CTRLQ);
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
        let started = self.p.now_ns();
        let result = self.wait_rounds(deadline_ns, &mut done);
        self.counters.waits += 1;
        self.counters.wait_ns += self.p.now_ns().saturating_sub(started);
        result
    }

    fn wait_rounds(
        &mut self,
        deadline_ns: u64,
        done: &mut impl FnMut(&Self) -> bool,
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
            // During bring-up the IRQ handler may not be hooked yet: spin.
            let completion = if self.bringing_up {
                Completion::Polling
            } else {
                self.config.completion
            };
            match completion {
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
