//! The chunk tree of a bundle's content (SPEC.md section 6), computed on the host: SHA-256 of
//! each [`TREE_CHUNK_LEN`]-byte chunk (SHA-NI where the CPU has it: `sha2` detects it at run
//! time), and the root, SHA-384 of the wire crate's `tree_root_prefix` and the digest list.
//! The store computes it where it reads content (on the fetch workers), so signing and
//! chunking never hash.

use sha2::{Digest, Sha256, Sha384};
use virtio_prefetch_wire::{tree_root_prefix, DIGEST_LEN, TREE_CHUNK_LEN, TREE_DIGEST_LEN};

/// The digest list and root of one content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkTree {
    /// The SHA-256 of each tree chunk, in order, concatenated (32 bytes each): the bytes a
    /// bundle carries between its header and its content.
    pub list: Vec<u8>,
    /// SHA-384 of the root prefix and `list`: the bundle header's signed `tree_root`.
    pub root: [u8; DIGEST_LEN],
}

impl ChunkTree {
    /// The tree of `content`.
    pub fn of(content: &[u8]) -> Self {
        let mut list = Vec::with_capacity(content.len().div_ceil(TREE_CHUNK_LEN) * TREE_DIGEST_LEN);
        for chunk in content.chunks(TREE_CHUNK_LEN) {
            list.extend_from_slice(&Sha256::digest(chunk));
        }
        let root = Self::root_of(content.len() as u64, &list);
        Self { list, root }
    }

    /// The root of `content_len` bytes of content with digest list `list`.
    pub fn root_of(content_len: u64, list: &[u8]) -> [u8; DIGEST_LEN] {
        let mut h = Sha384::new();
        h.update(tree_root_prefix(content_len));
        h.update(list);
        h.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_has_one_digest_per_chunk_and_the_root_binds_list_and_length() {
        let c = TREE_CHUNK_LEN;
        for len in [0, 1, c, c + 1, 3 * c - 1] {
            let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let t = ChunkTree::of(&content);
            assert_eq!(t.list.len(), len.div_ceil(c) * 32, "{len}");
            for (i, chunk) in content.chunks(c).enumerate() {
                assert_eq!(t.list[32 * i..32 * i + 32], Sha256::digest(chunk)[..]);
            }
            assert_eq!(t.root, ChunkTree::root_of(len as u64, &t.list));
            assert_ne!(t.root, ChunkTree::root_of(len as u64 + 1, &t.list));
        }
        // Equal chunks in another order give another root.
        let mut a = vec![1u8; 2 * c];
        a[c..].fill(2);
        let mut b = vec![2u8; 2 * c];
        b[c..].fill(1);
        assert_ne!(ChunkTree::of(&a).root, ChunkTree::of(&b).root);
    }
}
