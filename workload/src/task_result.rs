//! The result a task reports for the host to check: one word per resource it worked on,
//! folded in the task's resource order (virtio-prefetch/SPEC.md, the Complete task entry).
//!
//! The guest computes it from the bytes it claimed or fetched, the host from the store's
//! bytes; a task whose result differs from the host's did its work on other bytes, or did
//! other work.

use crate::{process, WorkloadError, MAGIC};

/// The fold's starting value (FNV-1a's 64-bit offset basis).
const SEED: u64 = 0xcbf2_9ce4_8422_2325;
/// The fold's multiplier (FNV-1a's 64-bit prime).
const PRIME: u64 = 0x0000_0100_0000_01B3;

/// True when `content` is a see-workload resource (starts with the magic), so the work on it
/// is [`process`].
pub fn is_workload(content: &[u8]) -> bool {
    content.get(..4) == Some(&MAGIC.to_le_bytes()[..])
}

/// The word a resource contributes to its task's result: [`process`]'s digest for a
/// see-workload resource, otherwise the first 8 bytes (little-endian) of `sha384`, the
/// content's SHA-384 (the caller hashes: this crate has no SHA-384).
///
/// A see-workload resource that does not process gives its [`WorkloadError`].
pub fn resource_word(content: &[u8], sha384: &[u8; 48]) -> Result<u64, WorkloadError> {
    if is_workload(content) {
        return Ok(process(content)?.digest);
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&sha384[..8]);
    Ok(u64::from_le_bytes(first))
}

/// A task's result, folded one resource word at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskResult(u64);

impl Default for TaskResult {
    fn default() -> Self {
        Self::new()
    }
}

impl TaskResult {
    /// The result of a task with no resources.
    pub const fn new() -> Self {
        Self(SEED)
    }

    /// Folds in the next resource's word ([`resource_word`]).
    pub fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(PRIME);
    }

    /// The value on the wire.
    pub fn value(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{generate, Kind, Spec};

    fn resource(id: u64) -> alloc::vec::Vec<u8> {
        generate(&Spec {
            resource_id: id,
            version: 1,
            size: 4096,
            kind: Kind::Data,
        })
        .unwrap()
    }

    #[test]
    fn a_workload_resource_contributes_its_digest() {
        let bytes = resource(3);
        let digest = process(&bytes).unwrap().digest;
        assert_eq!(resource_word(&bytes, &[0xAA; 48]), Ok(digest));
    }

    #[test]
    fn other_content_contributes_its_hash_prefix() {
        let mut sha = [0u8; 48];
        sha[..8].copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(resource_word(b"plain", &sha), Ok(0x0102_0304_0506_0708));
    }

    #[test]
    fn a_corrupt_workload_resource_is_an_error() {
        let mut bytes = resource(4);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            resource_word(&bytes, &[0; 48]),
            Err(WorkloadError::Checksum { .. })
        ));
    }

    #[test]
    fn the_fold_depends_on_every_word_and_their_order() {
        let fold = |words: &[u64]| {
            let mut r = TaskResult::new();
            for &w in words {
                r.add(w);
            }
            r.value()
        };
        assert_eq!(fold(&[]), SEED);
        assert_ne!(fold(&[1, 2]), fold(&[2, 1]));
        assert_ne!(fold(&[1, 2]), fold(&[1, 3]));
        assert_ne!(fold(&[1]), fold(&[1, 0]));
        assert_eq!(fold(&[5, 6]), fold(&[5, 6]));
    }
}
