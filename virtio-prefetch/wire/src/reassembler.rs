//! Reassembles chunked objects into a caller-provided buffer.
//!
//! [`Reassembler`] pairs a [`ChunkSequence`] with a private buffer the caller owns (a static
//! array in a kernel, a `Vec` on the host): it checks each chunk, copies its bytes into place
//! and hands back the whole object once the last byte has arrived. The buffer's length is the
//! size limit, so no input can make it write outside the buffer or allocate. A chunk that
//! breaks the sequence drops the object being reassembled; the next chunk must then start a
//! new object at offset 0.

use crate::{Chunk, ChunkSequence, WireError};

/// One object at a time, reassembled into a borrowed buffer.
#[derive(Debug)]
pub struct Reassembler<'b> {
    buf: &'b mut [u8],
    sequence: Option<ChunkSequence>,
}

impl<'b> Reassembler<'b> {
    /// A reassembler whose objects may be at most `buf.len()` bytes (capped at `u32::MAX`,
    /// the largest `total_len` a chunk can declare).
    pub fn new(buf: &'b mut [u8]) -> Self {
        Self {
            buf,
            sequence: None,
        }
    }

    /// The largest object this reassembler accepts.
    pub fn limit(&self) -> u32 {
        u32::try_from(self.buf.len()).unwrap_or(u32::MAX)
    }

    /// The object being reassembled, if one has started and not finished.
    pub fn in_progress(&self) -> Option<&ChunkSequence> {
        self.sequence.as_ref()
    }

    /// Drops the object being reassembled (after a device reset, or a timeout).
    pub fn abandon(&mut self) {
        self.sequence = None;
    }

    /// Takes the next chunk. Returns the whole object when this chunk completes it, `None`
    /// while more chunks are due, and an error (dropping the partial object) when the chunk
    /// does not continue the object or exceeds the limit.
    pub fn push(&mut self, chunk: &Chunk<'_>) -> Result<Option<&[u8]>, WireError> {
        let limit = self.limit();
        let step = match self.sequence.as_mut() {
            Some(sequence) => sequence.next(chunk).map(|range| (*sequence, range)),
            None => ChunkSequence::start(chunk, limit),
        };
        let (sequence, range) = match step {
            Ok(step) => step,
            Err(e) => {
                self.sequence = None;
                return Err(e);
            }
        };
        // ChunkSequence bounds the range by total_len <= limit <= buf.len(), and the range
        // is exactly as long as the chunk's data; the checked access keeps that a checked fact.
        let Some(dst) = self
            .buf
            .get_mut(range.clone())
            .filter(|dst| dst.len() == chunk.data.len())
        else {
            self.sequence = None;
            return Err(WireError::TooLarge {
                field: "chunk end",
                value: range.end as u64,
                limit: limit.into(),
            });
        };
        dst.copy_from_slice(chunk.data);
        if sequence.is_complete() {
            self.sequence = None;
            return Ok(self.buf.get(..sequence.total_len() as usize));
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
}
