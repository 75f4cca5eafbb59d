//! Reassembly of chunked objects (bundles, manifests) in private memory.
//!
//! Each chunk arrives in a private copy of its staging buffer and goes to
//! `virtio-prefetch-wire`'s [`Reassembler`] over a [`HeapBuffer`]: one object at a time, as
//! SPEC.md section 5 says (the backend finishes every object before it starts the next one,
//! a demand included). The first chunk reserves exactly the object's `total_len`, fallibly, and
//! never more than the driver's bound (`256 + 32 x ceil(max_content_len / 64 KiB) +
//! max_content_len`, or the largest manifest), so a
//! hostile device can make the driver hold at most one object's bound at a time; a chunk that
//! breaks the sequence drops the object and frees its memory. The finished object is handed on
//! in its own allocation, without a copy.
//!
//! A bundle is also checked as it lands (SPEC.md section 6): once its header and digest list
//! are in, the list is checked against the header's tree root (SHA-384), and from then on every
//! tree chunk of the content is hashed (SHA-256, [`ChunkHasher`]) in the private copy as soon
//! as its last byte is in, while the next transport chunk is in flight. The first chunk that
//! does not match refuses the whole object ([`ChunkError::Tree`]); the rest of its transport
//! chunks are then discarded quietly. A completed bundle comes back with the root its list and
//! every chunk were checked against; the verifier accepts no bundle without it.

use alloc::{boxed::Box, vec::Vec};

use sha2::{Digest, Sha384};
use virtio_prefetch_wire::{
    tree_root_prefix, BundleHeader, Chunk, ChunkSequence, ChunkVerifier, HeapBuffer, Reassembler,
    RejectReason, WireError, DIGEST_LEN,
};

use crate::chunk_hash::ChunkHasher;

/// Why a chunk was dropped (the object being reassembled, if any, is dropped with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The object is larger than the driver accepts.
    #[error("object of {0} bytes is larger than the driver accepts")]
    TooLarge(u32),
    /// The chunk does not continue the object (or starts none).
    #[error("chunk refused: {0}")]
    Sequence(WireError),
    /// Memory for the object could not be reserved.
    #[error("out of memory reassembling an object")]
    NoMemory,
    /// A bundle failed its chunk-tree check as it arrived and was refused whole: a header
    /// that does not parse or disagrees with the object's length, a digest list that does not
    /// match the root, or a tree chunk that does not match its digest.
    #[error("bundle refused as it arrived: {reason:?}")]
    Tree {
        /// Why (`Malformed`, `TooLarge` or `DigestMismatch`).
        reason: RejectReason,
        /// The bundle's header, when it parsed (unverified: for the report only).
        header: Option<Box<BundleHeader>>,
    },
}

/// A whole object, and for a bundle the tree root its digest list and every chunk of its
/// content were checked against as it arrived.
#[derive(Debug, PartialEq, Eq)]
pub struct Object {
    /// The object's bytes (private memory).
    pub bytes: Vec<u8>,
    /// The checked root (None for a manifest or floors snapshot).
    pub tree_root: Option<[u8; DIGEST_LEN]>,
}

/// The incremental check of the bundle being reassembled.
#[derive(Debug)]
enum TreeState {
    /// Too few bytes in to tell what the object is.
    Unknown,
    /// Not a bundle: checked whole when complete.
    Other,
    /// A bundle: its header (parsed, lengths consistent with the object) and, once the list
    /// matched the root, the chunk check.
    Bundle {
        header: Box<BundleHeader>,
        chunks: Option<ChunkVerifier<ChunkHasher>>,
    },
}

/// The object being reassembled.
#[derive(Debug)]
pub struct Reassembly {
    inner: Reassembler<HeapBuffer>,
    tree: TreeState,
    /// The sequence of a bundle refused mid-way: its remaining chunks are discarded quietly.
    refused: Option<ChunkSequence>,
    /// Objects dropped before completion (by a bad chunk or [`Reassembly::clear`]).
    pub dropped: u64,
    /// Nanoseconds spent in the tree check (root and chunk hashes) not yet taken by
    /// [`Reassembly::take_hash_ns`].
    hash_ns: u64,
}

impl Reassembly {
    /// Accepts objects up to `max_object` bytes.
    pub fn new(max_object: u32) -> Self {
        Self {
            inner: Reassembler::with_buffer(HeapBuffer::new(max_object)),
            tree: TreeState::Unknown,
            refused: None,
            dropped: 0,
            hash_ns: 0,
        }
    }

    /// Drops the object being reassembled, if any, and frees its memory.
    pub fn clear(&mut self) {
        if self.inner.in_progress().is_some() {
            self.dropped += 1;
        }
        self.inner.abandon();
        self.tree = TreeState::Unknown;
        self.refused = None;
    }

    /// Nanoseconds of tree hashing since the last call.
    pub fn take_hash_ns(&mut self) -> u64 {
        core::mem::take(&mut self.hash_ns)
    }

    /// True while an object is partly in.
    pub fn in_progress(&self) -> bool {
        self.inner.in_progress().is_some()
    }

    /// Bytes reserved for the object in progress (at most the driver's bound).
    pub fn reserved(&self) -> usize {
        self.inner.buffer().reserved()
    }

    /// The largest object accepted.
    pub fn limit(&self) -> u32 {
        self.inner.limit()
    }

    /// Takes one chunk (from a private copy). Returns the whole object once its last chunk
    /// is in. On an error the chunk is refused and the object in progress, if any, dropped.
    /// `now` is a clock in nanoseconds, for the time the tree check takes.
    pub fn accept(
        &mut self,
        c: &Chunk<'_>,
        now: &dyn Fn() -> u64,
    ) -> Result<Option<Object>, ChunkError> {
        // The rest of a bundle refused mid-way: discarded, not counted again. Anything that
        // does not continue it is taken as usual.
        if let Some(seq) = self.refused.as_mut() {
            if seq.next(c).is_ok() {
                if seq.is_complete() {
                    self.refused = None;
                }
                return Ok(None);
            }
            self.refused = None;
        }
        let partial = self.inner.in_progress().is_some();
        if !partial {
            self.tree = TreeState::Unknown;
        }
        // A first chunk that announces an object above the bound: refused before any
        // reservation or copy (the Reassembler's own check, told apart for the counters).
        let oversized = !partial && c.offset == 0 && c.total_len > self.inner.limit();
        let pushed = match self.inner.push(c) {
            Ok(done) => done,
            Err(e) => {
                if partial {
                    self.dropped += 1;
                }
                self.tree = TreeState::Unknown;
                return Err(match e {
                    _ if oversized => ChunkError::TooLarge(c.total_len),
                    WireError::NoMemory { .. } => ChunkError::NoMemory,
                    e => ChunkError::Sequence(e),
                });
            }
        };
        let start = now();
        let checked = match &pushed {
            Some(object) => Self::advance(&mut self.tree, object, c.total_len),
            None => Self::advance(&mut self.tree, self.inner.buffer().filled(), c.total_len),
        };
        self.hash_ns += now().saturating_sub(start);
        if let Err(reason) = checked {
            let header = match &self.tree {
                TreeState::Bundle { header, .. } => Some(header.clone()),
                _ => BundleHeader::parse(self.inner.buffer().filled())
                    .ok()
                    .map(Box::new),
            };
            if pushed.is_none() {
                self.refused = self.inner.in_progress().copied();
                self.dropped += 1;
                self.inner.abandon();
            }
            self.tree = TreeState::Unknown;
            return Err(ChunkError::Tree { reason, header });
        }
        Ok(pushed.map(|bytes| {
            let tree_root = match core::mem::replace(&mut self.tree, TreeState::Unknown) {
                TreeState::Bundle {
                    header,
                    chunks: Some(v),
                } if v.is_complete() => Some(header.tree_root),
                _ => None,
            };
            Object { bytes, tree_root }
        }))
    }

    /// Checks what is new in `object` (the object's prefix received so far, in private
    /// memory): a bundle's header once it is in, its digest list against the root once that
    /// is in, then each content byte into its tree chunk's hash.
    fn advance(tree: &mut TreeState, object: &[u8], total_len: u32) -> Result<(), RejectReason> {
        if matches!(tree, TreeState::Unknown) {
            if object.len() < 4 {
                return Ok(());
            }
            if object[..4] != BundleHeader::MAGIC.to_le_bytes() {
                *tree = TreeState::Other;
                return Ok(());
            }
            if object.len() < BundleHeader::LEN {
                return Ok(());
            }
            let header = BundleHeader::parse(object).map_err(|e| match e {
                WireError::TooLarge { .. } => RejectReason::TooLarge,
                _ => RejectReason::Malformed,
            })?;
            // The object must be exactly the header, the list for content_len, and content_len
            // bytes: a list of the wrong length, or content too short or too long, is refused
            // here, before any hashing.
            if header.object_len() != u64::from(total_len) {
                return Err(RejectReason::Malformed);
            }
            *tree = TreeState::Bundle {
                header: Box::new(header),
                chunks: None,
            };
        }
        let TreeState::Bundle { header, chunks } = tree else {
            return Ok(());
        };
        let list_end = header.content_offset();
        if chunks.is_none() {
            let Some(list) = object.get(BundleHeader::LEN..list_end) else {
                return Ok(());
            };
            let mut h = Sha384::new();
            h.update(tree_root_prefix(header.content_len));
            h.update(list);
            let root: [u8; DIGEST_LEN] = h.finalize().into();
            if root != header.tree_root {
                return Err(RejectReason::DigestMismatch);
            }
            *chunks = Some(ChunkVerifier::new(header.content_len));
        }
        if let Some(v) = chunks.as_mut() {
            let list = object.get(BundleHeader::LEN..list_end).unwrap_or(&[]);
            let from = list_end.saturating_add(v.fed() as usize);
            let new = object.get(from..).unwrap_or(&[]);
            if !new.is_empty() {
                v.update(list, new)
                    .map_err(|_| RejectReason::DigestMismatch)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts a chunk with a stopped clock; the object's bytes when it completes.
    fn acc(r: &mut Reassembly, c: &Chunk<'_>) -> Result<Option<Vec<u8>>, ChunkError> {
        r.accept(c, &|| 0).map(|done| done.map(|o| o.bytes))
    }

    fn chunk(id: u64, total: u32, offset: u32, data: &[u8]) -> Chunk<'_> {
        Chunk {
            stream_id: id,
            total_len: total,
            offset,
            data,
        }
    }

    #[test]
    fn reassembles_objects_one_after_another() {
        let mut r = Reassembly::new(100);
        assert_eq!(acc(&mut r, &chunk(1, 6, 0, b"abc")), Ok(None));
        assert!(r.in_progress());
        assert_eq!(
            acc(&mut r, &chunk(1, 6, 3, b"def")),
            Ok(Some(b"abcdef".to_vec()))
        );
        assert_eq!(acc(&mut r, &chunk(2, 2, 0, b"x")), Ok(None));
        assert_eq!(acc(&mut r, &chunk(2, 2, 1, b"y")), Ok(Some(b"xy".to_vec())));
        assert!(!r.in_progress());
        assert_eq!((r.reserved(), r.dropped), (0, 0));
    }

    #[test]
    fn interleaved_streams_are_refused_and_drop_the_object() {
        let mut r = Reassembly::new(100);
        assert_eq!(acc(&mut r, &chunk(1, 6, 0, b"abc")), Ok(None));
        // A second object starting before the first is done: refused, and the first dropped.
        assert_eq!(
            acc(&mut r, &chunk(2, 2, 0, b"x")),
            Err(ChunkError::Sequence(WireError::OutOfSequence(
                "a chunk of another stream arrived mid-object"
            )))
        );
        assert_eq!((r.in_progress(), r.reserved(), r.dropped), (false, 0, 1));
        // Neither stream continues: both need a new start at offset 0.
        assert!(acc(&mut r, &chunk(1, 6, 3, b"def")).is_err());
        assert!(acc(&mut r, &chunk(2, 2, 1, b"y")).is_err());
        assert_eq!(r.dropped, 1, "a refused continuation drops no object");
        // The restart of the same stream mid-object is refused the same way.
        assert_eq!(acc(&mut r, &chunk(3, 4, 0, b"ab")), Ok(None));
        assert!(acc(&mut r, &chunk(3, 4, 0, b"ab")).is_err());
        assert_eq!(r.dropped, 2);
        assert_eq!(acc(&mut r, &chunk(4, 1, 0, b"z")), Ok(Some(b"z".to_vec())));
    }

    #[test]
    fn refuses_bad_chunks_and_drops_the_object() {
        let mut r = Reassembly::new(100);
        assert_eq!(
            acc(&mut r, &chunk(1, 101, 0, b"a")),
            Err(ChunkError::TooLarge(101))
        );
        assert!(acc(&mut r, &chunk(1, 10, 0, b"")).is_err());
        assert!(
            acc(&mut r, &chunk(1, 10, 4, b"a")).is_err(),
            "no object open"
        );
        acc(&mut r, &chunk(1, 10, 0, b"abcd")).unwrap();
        assert!(acc(&mut r, &chunk(1, 10, 5, b"a")).is_err(), "gap");
        assert!(!r.in_progress(), "a bad chunk drops the object");
        acc(&mut r, &chunk(1, 10, 0, b"abcd")).unwrap();
        assert!(
            acc(&mut r, &chunk(1, 12, 4, b"a")).is_err(),
            "total changed"
        );
        acc(&mut r, &chunk(1, 10, 0, b"abcd")).unwrap();
        assert!(
            acc(&mut r, &chunk(1, 10, 4, b"abcdefg")).is_err(),
            "past the end"
        );
        assert!(!r.in_progress());
        assert_eq!(r.dropped, 3);
        // An oversized total mid-object is a sequence fault, not a size refusal.
        acc(&mut r, &chunk(1, 10, 0, b"abcd")).unwrap();
        assert!(matches!(
            acc(&mut r, &chunk(1, 1000, 4, b"a")),
            Err(ChunkError::Sequence(_))
        ));
    }

    #[test]
    fn holds_at_most_one_object_of_at_most_the_bound() {
        let mut r = Reassembly::new(64);
        assert_eq!(r.limit(), 64);
        // Many first chunks on many streams: each drops the one before, so the memory held
        // never exceeds one object of the announced size, itself at most the bound.
        assert_eq!(acc(&mut r, &chunk(0, 64, 0, b"a")), Ok(None));
        for id in 1..10u64 {
            assert!(acc(&mut r, &chunk(id, 64, 0, b"a")).is_err());
            assert!(r.reserved() <= 64);
            assert_eq!(acc(&mut r, &chunk(id, 64, 0, b"a")), Ok(None));
            assert_eq!(r.reserved(), 64, "exactly the announced size");
        }
        assert_eq!(r.dropped, 9);
        // Above the bound nothing is reserved, and the partial object is dropped.
        assert_eq!(
            acc(&mut r, &chunk(20, 65, 0, b"a")),
            Err(ChunkError::Sequence(WireError::OutOfSequence(
                "a chunk of another stream arrived mid-object"
            )))
        );
        assert_eq!(r.reserved(), 0);
        assert_eq!(
            acc(&mut r, &chunk(20, 65, 0, b"a")),
            Err(ChunkError::TooLarge(65))
        );
        assert_eq!(r.reserved(), 0);
        // A huge announced size is refused, never an allocation attempt.
        assert_eq!(
            acc(&mut r, &chunk(21, u32::MAX, 0, b"a")),
            Err(ChunkError::TooLarge(u32::MAX))
        );
        acc(&mut r, &chunk(22, 3, 0, b"ab")).unwrap();
        r.clear();
        assert_eq!((r.in_progress(), r.reserved(), r.dropped), (false, 0, 11));
    }
}
