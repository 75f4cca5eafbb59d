//! The backend's Rust API: what the PTO (or a test) asks of the device, and what the device
//! tells it back.

use virtio_prefetch_wire::{RejectReason, ReportKind, TaskTiming, WireError};

/// Push a resource into the guest's staging area ahead of need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefetchOrder {
    /// The app that will claim it (informational: the store's app id is what gets signed).
    pub app_id: u32,
    /// The task it is for.
    pub task_id: u64,
    /// The resource.
    pub resource_id: u64,
}

/// A request to dispatch into the guest over requestq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Unique per run.
    pub request_id: u64,
    /// The client session.
    pub session_id: u64,
    /// The app that serves it.
    pub app_id: u32,
    /// The request type.
    pub request_type: u32,
    /// Opaque arguments (at most 3072 bytes).
    pub args: Vec<u8>,
}

/// Which queue something happened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueName {
    /// requestq.
    Request,
    /// stagingq.
    Staging,
    /// ctrlq.
    Control,
}

/// What the device reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendEvent {
    /// The guest started a session.
    Hello {
        /// Its nonce.
        nonce: [u8; 32],
        /// Its epoch.
        epoch: u64,
    },
    /// A bundle's last chunk is in the guest's staging buffer.
    Staged {
        /// The resource.
        resource_id: u64,
        /// Its version.
        version: u64,
        /// The task it was signed for.
        task_id: u64,
        /// Content bytes.
        bytes: u64,
        /// Its sequence number.
        seq: u64,
        /// The demand it answered (0 for a prefetch).
        demand_cookie: u32,
    },
    /// A signature was made (for the audit log).
    Signed {
        /// The resource.
        resource_id: u64,
        /// Its version.
        version: u64,
        /// The sequence number.
        seq: u64,
        /// The session epoch.
        epoch: u64,
        /// SHA-384 of the signed statement.
        statement_sha384: [u8; 48],
    },
    /// The guest demanded a resource.
    Demand {
        /// The app.
        app_id: u32,
        /// The task.
        task_id: u64,
        /// The resource.
        resource_id: u64,
        /// Whether the store had it.
        served: bool,
    },
    /// A guest report.
    Report {
        /// What happened.
        kind: ReportKind,
        /// Why, for a rejection.
        reason: Option<RejectReason>,
        /// The app.
        app_id: u32,
        /// The task.
        task_id: u64,
        /// The resource.
        resource_id: u64,
        /// The version.
        version: u64,
        /// Guest-measured latency.
        latency_ns: u64,
    },
    /// A request completed in the guest.
    Complete {
        /// The request.
        request_id: u64,
        /// 0 for success.
        status: u32,
        /// Guest-measured total time.
        total_ns: u64,
        /// Per-task timings.
        tasks: Vec<TaskTiming>,
    },
    /// A descriptor outside the memory the backend was given, or unusable (wrong direction,
    /// too short); it was returned unused.
    Refused {
        /// The queue.
        queue: QueueName,
        /// Its guest address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// A ctrlq message that did not parse, or of a kind only the device sends (answered with
    /// Status::Malformed).
    Malformed {
        /// The parse error (`BadKind` for a device-to-driver kind).
        error: WireError,
    },
    /// The frontend disconnected or reset the device.
    Reset,
}

/// The host's choice of a victim in the guest's verified cache (an Evict on requestq; see
/// SPEC.md section 5). The guest drops it only if `app_id` owns it, and reports the eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eviction {
    /// The app that owns the cached resource.
    pub app_id: u32,
    /// The resource.
    pub resource_id: u64,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bundles whose last chunk was delivered.
    pub bundles: u64,
    /// Content bytes delivered in bundles.
    pub bytes: u64,
    /// Chunks written.
    pub chunks: u64,
    /// Signatures made (one per manifest for batched bundles).
    pub signatures: u64,
    /// Manifests delivered.
    pub manifests: u64,
    /// Floors snapshots queued (one after each Hello).
    pub floors_snapshots: u64,
    /// Demands served.
    pub demands: u64,
    /// Demands for unknown resources or before Hello, or refused `Busy` (too many outstanding).
    pub demands_refused: u64,
    /// Demands answered `Busy` because the guest exceeded its demand rate (also counted in
    /// `demands_refused`).
    pub demands_rate_limited: u64,
    /// Events dropped because [`crate::EVENT_QUEUE`] events waited for the reader.
    pub events_dropped: u64,
    /// Prefetch orders dropped because the device's order queue was full.
    pub prefetches_dropped: u64,
    /// Requests dispatched.
    pub requests: u64,
    /// Evict messages written to requestq.
    pub evicts: u64,
    /// Descriptors refused (outside the shared memory, wrong direction, too short).
    pub refused_descriptors: u64,
    /// Malformed ctrlq messages.
    pub malformed: u64,
    /// Reports received.
    pub reports: u64,
    /// Completions received.
    pub completions: u64,
    /// Staging buffers rewritten after delivery (`Tamper::RewriteAfterDelivery`), counted
    /// when the write is done.
    #[cfg(feature = "fault-injection")]
    pub rewrites: u64,
    /// Time spent per stage of the staging path.
    pub profile: crate::profile::HostProfile,
}

/// The kinds of thread the backend runs, for a [`ThreadHook`] (e.g. to install a seccomp
/// filter per kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendThread {
    /// The thread that accepts the frontend; the vhost-user protocol thread it starts
    /// inherits whatever it set up. Called before `accept`.
    Vhost,
    /// The device thread (vhost-user-backend's vring worker, which reads the queues). Called
    /// on its first event, before it reads anything the guest wrote.
    Device,
    /// A fetch pool worker. Called before its first job.
    Fetch,
    /// The sealing thread. Called before its first job.
    Seal,
}

/// Called by each backend thread as it starts (see [`BackendThread`] for when).
pub type ThreadHook = std::sync::Arc<dyn Fn(BackendThread) + Send + Sync>;
