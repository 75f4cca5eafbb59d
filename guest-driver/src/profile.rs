//! Where the guest's time goes on the receive path: nanoseconds per stage, from the
//! embedder's clock (the TSC in the kernel), for `cargo xtask bench prefetch --profile`.
//!
//! A few clock reads per staging buffer and per object, always on. The stages follow a MiB
//! from the device's interrupt to the verified store; time between them (waiting for the host,
//! the embedder's own work) is in none.

/// Nanoseconds spent per stage since the driver started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Bundles accepted into the store.
    pub bundles: u64,
    /// Their content bytes.
    pub bytes: u64,
    /// Interrupts whose age the embedder could tell ([`crate::Platform::interrupt_age_ns`]).
    pub notifications: u64,
    /// From the device's interrupt (or, when it came while the rings were being processed,
    /// from the end of that poll) to the start of ring processing: the handler, the wake-up,
    /// reading and acknowledging the interrupt status. Summed over `notifications`.
    pub notify_ns: u64,
    /// Copying staging buffers out of the shared window into private memory.
    pub copy_ns: u64,
    /// Parsing chunks and putting their bytes in place in the object being reassembled (the
    /// tree check's hashing left out: it is `hash_ns`).
    pub reassemble_ns: u64,
    /// The chunk-tree check of bundles as they arrive: SHA-384 of the digest list against the
    /// signed root, and SHA-256 of each tree chunk of the content (in the private copy).
    pub hash_ns: u64,
    /// Signature checks (ECDSA P-384; a manifest's, or the lookup of a bundle in one).
    pub signature_ns: u64,
    /// From a verified bundle to its entry in the store (trusted state, the content's
    /// allocation, eviction).
    pub insert_ns: u64,
}
