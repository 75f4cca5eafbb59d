//! Reassembles chunked objects, one at a time, into private memory.
//!
//! [`Reassembler`] pairs a [`ChunkSequence`] with an [`ObjectBuffer`]: it checks each chunk,
//! copies its bytes into place and hands back the whole object once the last byte has arrived.
//! Two buffers are provided: a caller-owned slice (`&mut [u8]`, a static array in a kernel),
//! whose length is the size limit, and, with the `alloc` feature, a `HeapBuffer` that
//! reserves exactly `total_len` bytes (fallibly) at an object's first chunk and hands the
//! finished object over without a copy. Either way no input can make it write outside its
//! buffer or reserve more than its limit.
//!
//! The rule is the SPEC's (section 5): one object at a time. A chunk that breaks the sequence
//! (another stream, a changed total length, a gap, an empty chunk, bytes past the end) is
//! refused and drops the object being reassembled; the next chunk must then start a new object
//! at offset 0. So at most one object's bytes are held at once.

use core::ops::Range;

use crate::{Chunk, ChunkSequence, WireError};

/// Private memory a [`Reassembler`] copies one object's bytes into.
///
/// The reassembler calls [`begin`](Self::begin) at an object's first chunk (with a
/// `total_len` of at most [`limit`](Self::limit)), then [`put`](Self::put) for every chunk in
/// order (ranges contiguous from 0, inside `total_len`), then [`finish`](Self::finish) once all
/// `total_len` bytes are in, or [`release`](Self::release) if the object will not complete.
pub trait ObjectBuffer {
    /// What a completed object is handed back as.
    type Object<'a>
    where
        Self: 'a;

    /// The largest object this buffer holds.
    fn limit(&self) -> u32;

    /// Makes room for a new object of `total_len` bytes, forgetting any earlier one.
    fn begin(&mut self, total_len: u32) -> Result<(), WireError>;

    /// Copies `data` (exactly `range.len()` bytes) to `range` of the object.
    fn put(&mut self, range: Range<usize>, data: &[u8]) -> Result<(), WireError>;

    /// Hands back the completed object (its first `total_len` bytes).
    fn finish(&mut self, total_len: u32) -> Result<Self::Object<'_>, WireError>;

    /// Forgets a partial object (and frees its memory, if the buffer can).
    fn release(&mut self) {}
}

fn chunk_end_error(range: &Range<usize>, limit: u32) -> WireError {
    WireError::TooLarge {
        field: "chunk end",
        value: range.end as u64,
        limit: limit.into(),
    }
}

impl ObjectBuffer for &mut [u8] {
    type Object<'a>
        = &'a [u8]
    where
        Self: 'a;

    /// The slice's length, capped at `u32::MAX` (the largest `total_len` a chunk declares).
    fn limit(&self) -> u32 {
        u32::try_from(self.len()).unwrap_or(u32::MAX)
    }

    fn begin(&mut self, total_len: u32) -> Result<(), WireError> {
        if total_len > self.limit() {
            return Err(WireError::TooLarge {
                field: "chunk.total_len",
                value: total_len.into(),
                limit: self.limit().into(),
            });
        }
        Ok(())
    }

    fn put(&mut self, range: Range<usize>, data: &[u8]) -> Result<(), WireError> {
        let limit = self.limit();
        // ChunkSequence bounds the range by total_len <= limit <= len, and the range is
        // exactly as long as the data; the checked access keeps that a checked fact.
        let Some(dst) = self
            .get_mut(range.clone())
            .filter(|dst| dst.len() == data.len())
        else {
            return Err(chunk_end_error(&range, limit));
        };
        dst.copy_from_slice(data);
        Ok(())
    }

    fn finish(&mut self, total_len: u32) -> Result<&[u8], WireError> {
        let limit = self.limit();
        self.get(..total_len as usize).ok_or(WireError::TooLarge {
            field: "chunk.total_len",
            value: total_len.into(),
            limit: limit.into(),
        })
    }
}

/// An [`ObjectBuffer`] on the heap: each object gets its own allocation of exactly
/// `total_len` bytes, reserved fallibly at its first chunk (an allocation failure refuses the
/// object, it never aborts), filled by appending, and handed back as the `Vec` itself.
#[cfg(any(test, feature = "alloc"))]
#[derive(Debug, Default)]
pub struct HeapBuffer {
    bytes: alloc::vec::Vec<u8>,
    total_len: usize,
    limit: u32,
}

#[cfg(any(test, feature = "alloc"))]
impl HeapBuffer {
    /// A buffer for objects of at most `limit` bytes; it holds no memory until an object
    /// starts.
    pub fn new(limit: u32) -> Self {
        Self {
            bytes: alloc::vec::Vec::new(),
            total_len: 0,
            limit,
        }
    }

    /// Bytes reserved for the object in progress (0 when there is none).
    pub fn reserved(&self) -> usize {
        self.bytes.capacity()
    }

    /// The bytes of the object in progress received so far (its prefix, in order), for a
    /// receiver that checks an object as it arrives.
    pub fn filled(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(any(test, feature = "alloc"))]
impl ObjectBuffer for HeapBuffer {
    type Object<'a> = alloc::vec::Vec<u8>;

    fn limit(&self) -> u32 {
        self.limit
    }

    fn begin(&mut self, total_len: u32) -> Result<(), WireError> {
        self.release();
        if total_len > self.limit {
            return Err(WireError::TooLarge {
                field: "chunk.total_len",
                value: total_len.into(),
                limit: self.limit.into(),
            });
        }
        let mut bytes = alloc::vec::Vec::new();
        bytes
            .try_reserve_exact(total_len as usize)
            .map_err(|_| WireError::NoMemory {
                need: total_len.into(),
            })?;
        self.bytes = bytes;
        self.total_len = total_len as usize;
        Ok(())
    }

    fn put(&mut self, range: Range<usize>, data: &[u8]) -> Result<(), WireError> {
        // Appending keeps the object unzeroed and never reallocates: the range must start
        // where the bytes so far end and stay inside the reserved object.
        if range.start != self.bytes.len()
            || range.end > self.total_len
            || range.len() != data.len()
        {
            return Err(chunk_end_error(&range, self.limit));
        }
        self.bytes.extend_from_slice(data);
        Ok(())
    }

    fn finish(&mut self, total_len: u32) -> Result<alloc::vec::Vec<u8>, WireError> {
        if self.bytes.len() != total_len as usize || self.total_len != total_len as usize {
            let actual = self.bytes.len() as u64;
            self.release();
            return Err(WireError::LengthMismatch {
                what: "reassembled object",
                declared: total_len.into(),
                actual,
            });
        }
        self.total_len = 0;
        Ok(core::mem::take(&mut self.bytes))
    }

    fn release(&mut self) {
        self.bytes = alloc::vec::Vec::new();
        self.total_len = 0;
    }
}

/// One object at a time, reassembled into an [`ObjectBuffer`].
#[derive(Debug)]
pub struct Reassembler<B> {
    buf: B,
    sequence: Option<ChunkSequence>,
}

impl<'b> Reassembler<&'b mut [u8]> {
    /// A reassembler whose objects may be at most `buf.len()` bytes (capped at `u32::MAX`,
    /// the largest `total_len` a chunk can declare), copied into `buf`.
    pub fn new(buf: &'b mut [u8]) -> Self {
        Self::with_buffer(buf)
    }
}

impl<B: ObjectBuffer> Reassembler<B> {
    /// A reassembler over any [`ObjectBuffer`] (for example a `HeapBuffer`).
    pub fn with_buffer(buf: B) -> Self {
        Self {
            buf,
            sequence: None,
        }
    }

    /// The largest object this reassembler accepts.
    pub fn limit(&self) -> u32 {
        self.buf.limit()
    }

    /// The buffer (for example to see what a `HeapBuffer` holds reserved).
    pub fn buffer(&self) -> &B {
        &self.buf
    }

    /// The object being reassembled, if one has started and not finished.
    pub fn in_progress(&self) -> Option<&ChunkSequence> {
        self.sequence.as_ref()
    }

    /// Drops the object being reassembled (after a device reset, or a timeout).
    pub fn abandon(&mut self) {
        self.sequence = None;
        self.buf.release();
    }

    /// Takes the next chunk. Returns the whole object when this chunk completes it, `None`
    /// while more chunks are due, and an error (dropping the partial object) when the chunk
    /// does not continue the object, exceeds the limit or finds no memory.
    pub fn push(&mut self, chunk: &Chunk<'_>) -> Result<Option<B::Object<'_>>, WireError> {
        match self.step(chunk) {
            Ok(Some(total_len)) => self.buf.finish(total_len).map(Some),
            Ok(None) => Ok(None),
            Err(e) => {
                self.abandon();
                Err(e)
            }
        }
    }

    /// Checks and copies one chunk; returns the object's length once it is complete.
    fn step(&mut self, chunk: &Chunk<'_>) -> Result<Option<u32>, WireError> {
        let (sequence, range) = match self.sequence.take() {
            Some(mut sequence) => {
                let range = sequence.next(chunk)?;
                (sequence, range)
            }
            None => {
                let (sequence, range) = ChunkSequence::start(chunk, self.buf.limit())?;
                self.buf.begin(sequence.total_len())?;
                (sequence, range)
            }
        };
        self.buf.put(range, chunk.data)?;
        if sequence.is_complete() {
            return Ok(Some(sequence.total_len()));
        }
        self.sequence = Some(sequence);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(stream_id: u64, total_len: u32, offset: u32, data: &[u8]) -> Chunk<'_> {
        Chunk {
            stream_id,
            total_len,
            offset,
            data,
        }
    }

    #[test]
    fn objects_reassemble_in_order_one_after_another() {
        let mut buf = [0u8; 16];
        let mut r = Reassembler::new(&mut buf);
        assert_eq!(r.push(&chunk(1, 10, 0, b"abcd")), Ok(None));
        assert_eq!(r.in_progress().map(ChunkSequence::stream_id), Some(1));
        assert_eq!(r.push(&chunk(1, 10, 4, b"efg")), Ok(None));
        assert_eq!(
            r.push(&chunk(1, 10, 7, b"hij")),
            Ok(Some(&b"abcdefghij"[..]))
        );
        assert!(r.in_progress().is_none());
        // The next object reuses the buffer; a one-chunk object completes at once.
        assert_eq!(r.push(&chunk(2, 3, 0, b"xyz")), Ok(Some(&b"xyz"[..])));
        assert_eq!(r.limit(), 16);
    }

    #[test]
    fn a_broken_sequence_drops_the_object_with_its_own_error() {
        let mut buf = [0u8; 16];
        let mut r = Reassembler::new(&mut buf);
        let faults: [(Chunk<'_>, WireError); 5] = [
            (
                chunk(9, 10, 5, b"x"),
                WireError::OutOfSequence("chunk offsets are not contiguous"),
            ),
            (
                chunk(1, 11, 4, b"x"),
                WireError::OutOfSequence("the total length changed mid-object"),
            ),
            (
                chunk(2, 10, 4, b"x"),
                WireError::OutOfSequence("a chunk of another stream arrived mid-object"),
            ),
            (
                chunk(1, 10, 4, b""),
                WireError::OutOfSequence("an empty chunk"),
            ),
            (
                chunk(1, 10, 4, b"0123456"),
                WireError::TooLarge {
                    field: "chunk end",
                    value: 11,
                    limit: 10,
                },
            ),
        ];
        for (i, (bad, error)) in faults.iter().enumerate() {
            let stream = if i == 0 { 9 } else { 1 };
            let first = chunk(stream, 10, 0, b"abcd");
            assert_eq!(r.push(&first), Ok(None));
            assert_eq!(
                r.push(bad).as_ref().map_err(|e| *e),
                Err(*error),
                "fault {i}"
            );
            assert!(r.in_progress().is_none(), "fault {i} left a partial object");
            // After the drop, a continuation is not a start.
            assert_eq!(
                r.push(&chunk(stream, 10, 4, b"efghij")),
                Err(WireError::OutOfSequence(
                    "the first chunk of an object must be at offset 0"
                ))
            );
        }
    }

    #[test]
    fn the_buffer_bounds_every_object_and_offsets_cannot_overflow() {
        let mut buf = [0u8; 8];
        let mut r = Reassembler::new(&mut buf);
        assert_eq!(
            r.push(&chunk(1, 9, 0, b"a")),
            Err(WireError::TooLarge {
                field: "chunk.total_len",
                value: 9,
                limit: 8,
            })
        );
        assert_eq!(
            r.push(&chunk(1, 0, 0, b"")),
            Err(WireError::BadValue {
                field: "chunk.total_len",
                value: 0,
            })
        );
        // Offsets near u32::MAX: the end is computed in u64 and checked, never wrapped.
        let mut big = [0u8; 4];
        let mut r = Reassembler::new(&mut big);
        assert_eq!(r.push(&chunk(1, 4, 0, b"ab")), Ok(None));
        assert_eq!(
            r.push(&chunk(1, 4, u32::MAX - 1, b"cd")),
            Err(WireError::OutOfSequence("chunk offsets are not contiguous"))
        );
        let mut seq = ChunkSequence::start(&chunk(1, u32::MAX, 0, b"ab"), u32::MAX)
            .unwrap()
            .0;
        assert_eq!(
            seq.next(&chunk(1, u32::MAX, 2, &[0u8; 8])),
            Ok(2..10),
            "a huge total_len is allowed by the checker when the caller's limit allows it"
        );
    }

    #[test]
    fn abandon_forgets_the_partial_object() {
        let mut buf = [0u8; 8];
        let mut r = Reassembler::new(&mut buf);
        assert_eq!(r.push(&chunk(1, 8, 0, b"abcd")), Ok(None));
        r.abandon();
        assert_eq!(r.push(&chunk(2, 2, 0, b"zz")), Ok(Some(&b"zz"[..])));
    }

    #[test]
    fn a_heap_buffer_follows_the_same_rules_and_reserves_one_object_exactly() {
        let mut r = Reassembler::with_buffer(HeapBuffer::new(10));
        assert_eq!(r.limit(), 10);
        assert_eq!(
            r.buffer().reserved(),
            0,
            "nothing reserved before a first chunk"
        );
        assert_eq!(r.push(&chunk(1, 9, 0, b"abcd")), Ok(None));
        assert_eq!(
            r.buffer().reserved(),
            9,
            "exactly total_len, at the first chunk"
        );
        assert_eq!(
            r.push(&chunk(1, 9, 4, b"efghi")),
            Ok(Some(b"abcdefghi".to_vec()))
        );
        assert_eq!(
            r.buffer().reserved(),
            0,
            "the object is handed over, not copied"
        );
        assert!(r.in_progress().is_none());
        // Above the limit: refused before anything is reserved.
        assert_eq!(
            r.push(&chunk(2, 11, 0, b"a")),
            Err(WireError::TooLarge {
                field: "chunk.total_len",
                value: 11,
                limit: 10,
            })
        );
        assert_eq!(r.buffer().reserved(), 0);
        // A chunk of another stream mid-object drops the object and frees its memory; it
        // does not start an object itself, so its continuation is refused too.
        assert_eq!(r.push(&chunk(3, 10, 0, b"abc")), Ok(None));
        assert_eq!(
            r.push(&chunk(4, 4, 0, b"zz")),
            Err(WireError::OutOfSequence(
                "a chunk of another stream arrived mid-object"
            ))
        );
        assert_eq!(r.buffer().reserved(), 0);
        assert_eq!(
            r.push(&chunk(4, 4, 2, b"zz")),
            Err(WireError::OutOfSequence(
                "the first chunk of an object must be at offset 0"
            ))
        );
        // abandon frees a partial object too.
        assert_eq!(r.push(&chunk(5, 8, 0, b"ab")), Ok(None));
        r.abandon();
        assert_eq!((r.buffer().reserved(), r.in_progress()), (0, None));
        assert_eq!(r.push(&chunk(6, 1, 0, b"q")), Ok(Some(b"q".to_vec())));
    }

    #[test]
    fn a_heap_buffer_refuses_misplaced_bytes_by_itself() {
        // ChunkSequence never asks for these; the buffer checks anyway.
        let mut b = HeapBuffer::new(8);
        b.begin(4).unwrap();
        assert!(b.put(1..2, b"x").is_err(), "not where the bytes so far end");
        assert!(b.put(0..5, b"abcde").is_err(), "past the object");
        assert!(b.put(0..2, b"a").is_err(), "range and data disagree");
        b.put(0..3, b"abc").unwrap();
        assert_eq!(
            b.finish(4),
            Err(WireError::LengthMismatch {
                what: "reassembled object",
                declared: 4,
                actual: 3,
            })
        );
        assert_eq!(b.reserved(), 0);
        let mut slice = [0u8; 4];
        let mut s: &mut [u8] = &mut slice;
        assert!(s.begin(5).is_err());
        assert!(s.put(2..6, b"abcd").is_err());
        assert!(s.finish(5).is_err());
    }
}
