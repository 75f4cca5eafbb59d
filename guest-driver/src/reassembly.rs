//! Reassembly of chunked objects (bundles, manifests) in private memory.
//!
//! Each chunk arrives in a private copy of its staging buffer and goes to
//! `virtio-prefetch-wire`'s [`Reassembler`] over a [`HeapBuffer`]: one object at a time, as
//! SPEC.md section 5 says (the backend finishes every object before it starts the next one,
//! a demand included). The first chunk reserves exactly the object's `total_len`, fallibly, and
//! never more than the driver's bound (`256 + max_content_len`, or the largest manifest), so a
//! hostile device can make the driver hold at most one object's bound at a time; a chunk that
//! breaks the sequence drops the object and frees its memory. The finished object is handed on
//! in its own allocation, without a copy.

use alloc::vec::Vec;

use virtio_prefetch_wire::{Chunk, HeapBuffer, Reassembler, WireError};

/// Why a chunk was dropped (the object being reassembled, if any, is dropped with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
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
}

/// The object being reassembled.
#[derive(Debug)]
pub struct Reassembly {
    inner: Reassembler<HeapBuffer>,
    /// Objects dropped before completion (by a bad chunk or [`Reassembly::clear`]).
    pub dropped: u64,
}

impl Reassembly {
    /// Accepts objects up to `max_object` bytes.
    pub fn new(max_object: u32) -> Self {
        Self {
            inner: Reassembler::with_buffer(HeapBuffer::new(max_object)),
            dropped: 0,
        }
    }

    /// Drops the object being reassembled, if any, and frees its memory.
    pub fn clear(&mut self) {
        if self.inner.in_progress().is_some() {
            self.dropped += 1;
        }
        self.inner.abandon();
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
    pub fn accept(&mut self, c: &Chunk<'_>) -> Result<Option<Vec<u8>>, ChunkError> {
        let partial = self.inner.in_progress().is_some();
        // A first chunk that announces an object above the bound: refused before any
        // reservation or copy (the Reassembler's own check, told apart for the counters).
        let oversized = !partial && c.offset == 0 && c.total_len > self.inner.limit();
        match self.inner.push(c) {
            Ok(done) => Ok(done),
            Err(e) => {
                if partial {
                    self.dropped += 1;
                }
                Err(match e {
                    _ if oversized => ChunkError::TooLarge(c.total_len),
                    WireError::NoMemory { .. } => ChunkError::NoMemory,
                    e => ChunkError::Sequence(e),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(r.accept(&chunk(1, 6, 0, b"abc")), Ok(None));
        assert!(r.in_progress());
        assert_eq!(
            r.accept(&chunk(1, 6, 3, b"def")),
            Ok(Some(b"abcdef".to_vec()))
        );
        assert_eq!(r.accept(&chunk(2, 2, 0, b"x")), Ok(None));
        assert_eq!(r.accept(&chunk(2, 2, 1, b"y")), Ok(Some(b"xy".to_vec())));
        assert!(!r.in_progress());
        assert_eq!((r.reserved(), r.dropped), (0, 0));
    }

    #[test]
    fn interleaved_streams_are_refused_and_drop_the_object() {
        let mut r = Reassembly::new(100);
        assert_eq!(r.accept(&chunk(1, 6, 0, b"abc")), Ok(None));
        // A second object starting before the first is done: refused, and the first dropped.
        assert_eq!(
            r.accept(&chunk(2, 2, 0, b"x")),
            Err(ChunkError::Sequence(WireError::OutOfSequence(
                "a chunk of another stream arrived mid-object"
            )))
        );
        assert_eq!((r.in_progress(), r.reserved(), r.dropped), (false, 0, 1));
        // Neither stream continues: both need a new start at offset 0.
        assert!(r.accept(&chunk(1, 6, 3, b"def")).is_err());
        assert!(r.accept(&chunk(2, 2, 1, b"y")).is_err());
        assert_eq!(r.dropped, 1, "a refused continuation drops no object");
        // The restart of the same stream mid-object is refused the same way.
        assert_eq!(r.accept(&chunk(3, 4, 0, b"ab")), Ok(None));
        assert!(r.accept(&chunk(3, 4, 0, b"ab")).is_err());
        assert_eq!(r.dropped, 2);
        assert_eq!(r.accept(&chunk(4, 1, 0, b"z")), Ok(Some(b"z".to_vec())));
    }

    #[test]
    fn refuses_bad_chunks_and_drops_the_object() {
        let mut r = Reassembly::new(100);
        assert_eq!(
            r.accept(&chunk(1, 101, 0, b"a")),
            Err(ChunkError::TooLarge(101))
        );
        assert!(r.accept(&chunk(1, 10, 0, b"")).is_err());
        assert!(r.accept(&chunk(1, 10, 4, b"a")).is_err(), "no object open");
        r.accept(&chunk(1, 10, 0, b"abcd")).unwrap();
        assert!(r.accept(&chunk(1, 10, 5, b"a")).is_err(), "gap");
        assert!(!r.in_progress(), "a bad chunk drops the object");
        r.accept(&chunk(1, 10, 0, b"abcd")).unwrap();
        assert!(r.accept(&chunk(1, 12, 4, b"a")).is_err(), "total changed");
        r.accept(&chunk(1, 10, 0, b"abcd")).unwrap();
        assert!(
            r.accept(&chunk(1, 10, 4, b"abcdefg")).is_err(),
            "past the end"
        );
        assert!(!r.in_progress());
        assert_eq!(r.dropped, 3);
        // An oversized total mid-object is a sequence fault, not a size refusal.
        r.accept(&chunk(1, 10, 0, b"abcd")).unwrap();
        assert!(matches!(
            r.accept(&chunk(1, 1000, 4, b"a")),
            Err(ChunkError::Sequence(_))
        ));
    }

    #[test]
    fn holds_at_most_one_object_of_at_most_the_bound() {
        let mut r = Reassembly::new(64);
        assert_eq!(r.limit(), 64);
        // Many first chunks on many streams: each drops the one before, so the memory held
        // never exceeds one object of the announced size, itself at most the bound.
        assert_eq!(r.accept(&chunk(0, 64, 0, b"a")), Ok(None));
        for id in 1..10u64 {
            assert!(r.accept(&chunk(id, 64, 0, b"a")).is_err());
            assert!(r.reserved() <= 64);
            assert_eq!(r.accept(&chunk(id, 64, 0, b"a")), Ok(None));
            assert_eq!(r.reserved(), 64, "exactly the announced size");
        }
        assert_eq!(r.dropped, 9);
        // Above the bound nothing is reserved, and the partial object is dropped.
        assert_eq!(
            r.accept(&chunk(20, 65, 0, b"a")),
            Err(ChunkError::Sequence(WireError::OutOfSequence(
                "a chunk of another stream arrived mid-object"
            )))
        );
        assert_eq!(r.reserved(), 0);
        assert_eq!(
            r.accept(&chunk(20, 65, 0, b"a")),
            Err(ChunkError::TooLarge(65))
        );
        assert_eq!(r.reserved(), 0);
        // A huge announced size is refused, never an allocation attempt.
        assert_eq!(
            r.accept(&chunk(21, u32::MAX, 0, b"a")),
            Err(ChunkError::TooLarge(u32::MAX))
        );
        r.accept(&chunk(22, 3, 0, b"ab")).unwrap();
        r.clear();
        assert_eq!((r.in_progress(), r.reserved(), r.dropped), (false, 0, 11));
    }
}
