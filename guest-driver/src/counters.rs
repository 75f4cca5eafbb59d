//! What the driver counts: staged hits, cache hits, misses, rejects by reason, evictions,
//! malformed input from the device.

/// Number of RejectReason codes (1..=12), indexed by code.
pub const REJECT_REASONS: usize = 13;

/// Counters, readable at any time through [`crate::Driver::counters`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Bundles verified and stored.
    pub accepted: u64,
    /// Bundles rejected, indexed by RejectReason code (index 0 unused).
    pub rejected: [u64; REJECT_REASONS],
    /// Used elements or messages dropped because they broke the ring or message rules.
    pub malformed: u64,
    /// Staged hits: first claims of prefetched resources.
    pub hits: u64,
    /// Claims served from the cache otherwise (claimed before, or demand-fetched earlier).
    pub cache_hits: u64,
    /// Claims that found nothing cached.
    pub misses: u64,
    /// Demand fetches served.
    pub demands_served: u64,
    /// Demand fetches that failed (error, timeout, broken device).
    pub demands_failed: u64,
    /// Cached resources evicted (least recently used, stale, the host's Evict, or discarded
    /// on reset).
    pub evicted: u64,
    /// Host Evict messages that dropped a cached resource.
    pub host_evicts: u64,
    /// Host Evict messages refused: no such resource cached for that app (unknown, or
    /// another app's).
    pub evicts_refused: u64,
    /// Manifests verified.
    pub manifests: u64,
    /// Floors snapshots verified (their floors applied).
    pub floors_snapshots: u64,
    /// Requests dropped because the embedder did not take them (queue of 256 full).
    pub requests_dropped: u64,
    /// Requests received on requestq.
    pub requests: u64,
    /// ctrlq messages that could not be posted (queue full) and were dropped.
    pub ctrl_dropped: u64,
    /// Queue notifications written (each a VM exit).
    pub notifies: u64,
    /// Register accesses of the data path (each a VM exit): notifications, InterruptStatus
    /// read and ack, status checks; bring-up's register setup is not counted. Divide by
    /// claims or requests to compare interrupt and polling mode.
    pub register_accesses: u64,
    /// Waits for the device (Hello and demand Acks, demanded bundles).
    pub waits: u64,
    /// Nanoseconds spent in those waits.
    pub wait_ns: u64,
    /// Interrupts signalled through [`crate::InterruptHandle::on_interrupt`].
    pub interrupts: u64,
    /// Device resets done by the driver.
    pub resets: u64,
}

impl Counters {
    /// Total bundles rejected, all reasons.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }
}
