//! The driver's public settings, states, errors and request types.

use alloc::vec::Vec;

use crate::{
    mmio::TransportError,
    msg::RejectReason,
    queue::QueueError,
    window::{SharedWindow, WindowError},
};

/// How the driver learns that the device used buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The embedder calls [`crate::InterruptHandle::on_interrupt`] from the device's IRQ handler;
    /// waits sleep in [`crate::Platform::wait_for_event`].
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
    /// Demand fetches [`crate::Driver::claim_each`] keeps outstanding at once (at least 1; at
    /// most half of `ctrl_chains` are used, so reports still find a chain).
    pub max_demands: u16,
    /// Keep verified resources after their claims (the verified cache). False: the naive
    /// baseline, where a claim consumes the resource (its entry is dropped once handed over)
    /// and a demanded bundle is handed over without being kept.
    pub cache: bool,
    /// The trusted lower bound on the time, in seconds since the Unix epoch (the kernel takes
    /// it from `see.min_epoch=` on its measured command line): a floors snapshot that expires
    /// at or before it is refused (`StaleFloors`, SPEC.md section 8). 0: no bound but the
    /// snapshots accepted since boot.
    pub min_time_s: u64,
}

impl DriverConfig {
    /// Defaults: 32 staging buffers of 64 KiB, 16 request buffers, 64 ctrlq chains, 16 MiB
    /// resources, a 64 MiB store that caches what is claimed, 1 s for an Ack and 10 s for a
    /// demand fetch, 8 demands outstanding at once.
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
            max_demands: 8,
            cache: true,
            min_time_s: 0,
        }
    }
}

/// Why the device is unusable until [`crate::Driver::reset`].
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

/// Why [`crate::Driver::new`] or [`crate::Driver::reset`] failed.
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
