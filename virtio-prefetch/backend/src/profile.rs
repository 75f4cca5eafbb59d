//! Where the host's time goes: nanoseconds per stage of the staging path, accumulated in
//! [`crate::Stats::profile`] for `cargo xtask bench prefetch --profile`.
//!
//! The stages run on different threads (reading and hashing on the fetch workers, signing on
//! the sealing thread, chunking and the ring on the device thread), so their sum is CPU time
//! spent, not wall time. The cost is a few clock reads per bundle and two per chunk, always on.

use std::{cell::Cell, time::Instant};

use sha2::{Digest, Sha384};

/// Nanoseconds spent per stage since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostProfile {
    /// Fetch workers: getting content from the store (file reads, a remote origin), its hash
    /// left out. Wall time: a worker waiting for a CPU (or, in a store that has one, a lock)
    /// counts here.
    pub read_ns: u64,
    /// Fetch workers: hashing the content: its chunk tree (SHA-256 per tree chunk and the root
    /// the bundle header carries; the disk store checks objects by the root), and its SHA-384
    /// only where a store has no root to check against (an index from before the tree).
    pub hash_ns: u64,
    /// Sealing thread: ECDSA P-384 signatures (bundles, manifests, floors snapshots).
    pub sign_ns: u64,
    /// Sealing and device threads: laying out the bundle and each chunk and writing the chunk
    /// into the guest's staging buffer.
    pub chunk_ns: u64,
    /// Device thread: returning staging buffers on the used ring and signalling the guest.
    pub ring_ns: u64,
}

impl HostProfile {
    /// Adds `other`'s time to this one's.
    pub fn add(&mut self, other: &HostProfile) {
        self.read_ns += other.read_ns;
        self.hash_ns += other.hash_ns;
        self.sign_ns += other.sign_ns;
        self.chunk_ns += other.chunk_ns;
        self.ring_ns += other.ring_ns;
    }
}

thread_local! {
    /// Hashing time of this thread not yet taken by [`take_hash_ns`].
    static HASH_NS: Cell<u64> = const { Cell::new(0) };
}

/// SHA-384 of `content`, its time counted for this thread's `take_hash_ns`: stores hash
/// through it so a fetch worker can tell hashing from reading.
pub fn sha384(content: &[u8]) -> [u8; 48] {
    let start = Instant::now();
    let digest = Sha384::digest(content).into();
    let ns = elapsed_ns(start);
    HASH_NS.with(|h| h.set(h.get().saturating_add(ns)));
    digest
}

/// The chunk tree of `content`, its time counted for this thread's `take_hash_ns` like
/// [`sha384`]'s.
pub fn chunk_tree(content: &[u8]) -> crate::tree::ChunkTree {
    let start = Instant::now();
    let tree = crate::tree::ChunkTree::of(content);
    let ns = elapsed_ns(start);
    HASH_NS.with(|h| h.set(h.get().saturating_add(ns)));
    tree
}

/// Hashing time counted on this thread by [`sha384`] since the last call.
pub(crate) fn take_hash_ns() -> u64 {
    HASH_NS.with(|h| h.replace(0))
}

/// Nanoseconds since `start` (saturating).
pub(crate) fn elapsed_ns(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_time_is_counted_per_thread_and_taken_once() {
        let _ = take_hash_ns();
        let content = vec![7u8; 1 << 20];
        let digest = sha384(&content);
        assert_eq!(digest, <[u8; 48]>::from(Sha384::digest(&content)));
        let first = take_hash_ns();
        assert!(first > 0, "a MiB takes some time to hash");
        assert_eq!(take_hash_ns(), 0, "taken once");
        let other = std::thread::spawn(take_hash_ns).join().unwrap();
        assert_eq!(other, 0, "another thread's count is its own");
        let mut total = HostProfile {
            read_ns: 1,
            ..HostProfile::default()
        };
        total.add(&HostProfile {
            read_ns: 2,
            hash_ns: 3,
            sign_ns: 4,
            chunk_ns: 5,
            ring_ns: 6,
        });
        assert_eq!(
            total,
            HostProfile {
                read_ns: 3,
                hash_ns: 3,
                sign_ns: 4,
                chunk_ns: 5,
                ring_ns: 6
            }
        );
    }
}
