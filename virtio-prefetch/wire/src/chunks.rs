//! Checks a stream of chunks that reassemble one object (bundle or manifest).
//!
//! The checker holds no buffer: it says where each chunk's bytes go, and the caller copies
//! them into its own private buffer. Chunks of one object arrive in order with contiguous
//! offsets starting at 0, all naming the same stream and total length.

use crate::{Chunk, WireError};

/// The state of one object being reassembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSequence {
    stream_id: u64,
    total_len: u32,
    received: u32,
}

impl ChunkSequence {
    /// Starts an object from its first chunk; `max_total` bounds the object size (header
    /// included). Returns the state and the byte range of the object this chunk fills.
    pub fn start(
        first: &Chunk<'_>,
        max_total: u32,
    ) -> Result<(Self, core::ops::Range<usize>), WireError> {
        if first.offset != 0 {
            return Err(WireError::OutOfSequence(
                "the first chunk of an object must be at offset 0",
            ));
        }
        if first.total_len == 0 {
            return Err(WireError::BadValue {
                field: "chunk.total_len",
                value: 0,
            });
        }
        if first.total_len > max_total {
            return Err(WireError::TooLarge {
                field: "chunk.total_len",
                value: first.total_len.into(),
                limit: max_total.into(),
            });
        }
        let mut sequence = Self {
            stream_id: first.stream_id,
            total_len: first.total_len,
            received: 0,
        };
        let range = sequence.accept(first)?;
        Ok((sequence, range))
    }

    /// Accepts the next chunk of this object; returns the byte range it fills.
    pub fn next(&mut self, chunk: &Chunk<'_>) -> Result<core::ops::Range<usize>, WireError> {
        if chunk.stream_id != self.stream_id {
            return Err(WireError::OutOfSequence(
                "a chunk of another stream arrived mid-object",
            ));
        }
        if chunk.total_len != self.total_len {
            return Err(WireError::OutOfSequence(
                "the total length changed mid-object",
            ));
        }
        if chunk.offset != self.received {
            return Err(WireError::OutOfSequence("chunk offsets are not contiguous"));
        }
        self.accept(chunk)
    }

    fn accept(&mut self, chunk: &Chunk<'_>) -> Result<core::ops::Range<usize>, WireError> {
        if chunk.data.is_empty() {
            return Err(WireError::OutOfSequence("an empty chunk"));
        }
        let start = u64::from(chunk.offset);
        let end = start + chunk.data.len() as u64;
        if end > u64::from(self.total_len) {
            return Err(WireError::TooLarge {
                field: "chunk end",
                value: end,
                limit: self.total_len.into(),
            });
        }
        self.received = end as u32;
        Ok(start as usize..end as usize)
    }

    /// The stream this object arrives on.
    pub fn stream_id(&self) -> u64 {
        self.stream_id
    }

    /// The object's size.
    pub fn total_len(&self) -> u32 {
        self.total_len
    }

    /// True when every byte has arrived.
    pub fn is_complete(&self) -> bool {
        self.received == self.total_len
    }
}
