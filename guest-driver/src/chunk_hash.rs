//! The guest's chunk hash: SHA-256 of one tree chunk of a bundle's content (SPEC.md section 6).
//!
//! Every chunk digest the driver computes goes through [`ChunkHasher`]: the crate's
//! [`crate::sha256::Sha256`], which uses the CPU's SHA extensions once the kernel has enabled
//! them ([`crate::sha256::enable_hardware`]) and portable software otherwise.

use crate::sha256::Sha256;
use virtio_prefetch_wire::{ChunkDigest, TREE_DIGEST_LEN};

/// An incremental SHA-256.
#[derive(Clone, Default)]
pub struct ChunkHasher(Sha256);

impl core::fmt::Debug for ChunkHasher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ChunkHasher").finish_non_exhaustive()
    }
}

impl ChunkHasher {
    /// A hash of nothing yet.
    pub fn new() -> Self {
        Self(Sha256::new())
    }

    /// Hashes `bytes` after what came before.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything given.
    pub fn finalize(self) -> [u8; TREE_DIGEST_LEN] {
        self.0.finalize()
    }
}

impl ChunkDigest for ChunkHasher {
    fn new() -> Self {
        ChunkHasher::new()
    }

    fn update(&mut self, bytes: &[u8]) {
        ChunkHasher::update(self, bytes);
    }

    fn finalize(self) -> [u8; TREE_DIGEST_LEN] {
        ChunkHasher::finalize(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_is_sha256_however_the_bytes_are_split() {
        // FIPS 180-2 example: SHA-256("abc").
        let abc = [
            0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae,
            0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61,
            0xf2, 0x00, 0x15, 0xad,
        ];
        let mut h = ChunkHasher::new();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finalize(), abc);
        let mut one = ChunkHasher::new();
        one.update(b"abd");
        assert_ne!(one.finalize(), abc);
    }
}
