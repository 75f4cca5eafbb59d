//! Reassembly of chunked objects (bundles, manifests) in private memory.
//!
//! Chunks of one stream arrive in order with contiguous offsets from 0. The driver validates
//! each chunk header against the stream's private state before copying the payload out of the
//! shared window straight into the stream's private buffer (each shared byte is read once).
//! At most [`MAX_STREAMS`] streams are open at once; memory is reserved fallibly, so a device
//! that announces huge objects gets an error, not an allocation failure.

use alloc::vec::Vec;

/// Streams reassembled at the same time; a new stream beyond this evicts the oldest.
pub const MAX_STREAMS: usize = 4;

/// A chunk's header fields (already parsed from a private copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkInfo {
    /// Device-chosen stream id (one per object).
    pub stream_id: u64,
    /// Length of the whole object.
    pub total_len: u32,
    /// Offset of this chunk in the object.
    pub offset: u32,
    /// Payload bytes in this chunk.
    pub chunk_len: u32,
}

/// Why a chunk was dropped (the stream it belonged to is dropped with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The object is larger than the driver accepts.
    #[error("object of {0} bytes is larger than the driver accepts")]
    TooLarge(u32),
    /// Empty chunk, or a chunk that runs past the object's end.
    #[error("chunk bounds are inconsistent with the object length")]
    Bounds,
    /// The offset does not continue the stream, or the stream is unknown.
    #[error("chunk out of order (stream not open or offset not contiguous)")]
    OutOfOrder,
    /// The object's total length changed mid-stream.
    #[error("the object length changed mid-stream")]
    TotalChanged,
    /// Memory for the object could not be reserved.
    #[error("out of memory reassembling an object")]
    NoMemory,
}

#[derive(Debug)]
struct Stream {
    id: u64,
    total: u32,
    data: Vec<u8>,
    opened: u64,
}

/// Open streams.
#[derive(Debug)]
pub struct Reassembly {
    streams: Vec<Stream>,
    max_object: u32,
    opened: u64,
    /// Streams evicted or dropped before completion.
    pub dropped: u64,
}

impl Reassembly {
    /// Accepts objects up to `max_object` bytes.
    pub fn new(max_object: u32) -> Self {
        Self {
            streams: Vec::new(),
            max_object,
            opened: 0,
            dropped: 0,
        }
    }

    /// Drops every open stream.
    pub fn clear(&mut self) {
        self.dropped += self.streams.len() as u64;
        self.streams.clear();
    }

    /// Validates `c` against the stream's state, then calls `fill` with the private space for
    /// the payload (exactly `chunk_len` bytes) to copy it in. Returns the whole object once
    /// the last chunk is in.
    pub fn accept(
        &mut self,
        c: ChunkInfo,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<Option<Vec<u8>>, ChunkError> {
        let pos = self.streams.iter().position(|s| s.id == c.stream_id);
        let result = self.accept_inner(pos, c, fill);
        if result.is_err() {
            // The stream is poisoned: drop it (if it exists).
            if let Some(i) = self.streams.iter().position(|s| s.id == c.stream_id) {
                self.streams.swap_remove(i);
                self.dropped += 1;
            }
        }
        result
    }

    fn accept_inner(
        &mut self,
        pos: Option<usize>,
        c: ChunkInfo,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<Option<Vec<u8>>, ChunkError> {
        if c.total_len > self.max_object {
            return Err(ChunkError::TooLarge(c.total_len));
        }
        let end = c
            .offset
            .checked_add(c.chunk_len)
            .ok_or(ChunkError::Bounds)?;
        if c.chunk_len == 0 || end > c.total_len {
            return Err(ChunkError::Bounds);
        }
        let i = if c.offset == 0 {
            if let Some(i) = pos {
                // A restart of an open stream: the old one never completed.
                self.streams.swap_remove(i);
                self.dropped += 1;
            }
            if self.streams.len() >= MAX_STREAMS {
                if let Some(oldest) =
                    (0..self.streams.len()).min_by_key(|&i| self.streams[i].opened)
                {
                    self.streams.swap_remove(oldest);
                    self.dropped += 1;
                }
            }
            self.opened += 1;
            self.streams.push(Stream {
                id: c.stream_id,
                total: c.total_len,
                data: Vec::new(),
                opened: self.opened,
            });
            self.streams.len() - 1
        } else {
            let i = pos.ok_or(ChunkError::OutOfOrder)?;
            if self.streams[i].total != c.total_len {
                return Err(ChunkError::TotalChanged);
            }
            if self.streams[i].data.len() != c.offset as usize {
                return Err(ChunkError::OutOfOrder);
            }
            i
        };
        let s = &mut self.streams[i];
        let len = c.chunk_len as usize;
        if s.data.len() == 0 && end == c.total_len {
            s.data
                .try_reserve_exact(len)
                .map_err(|_| ChunkError::NoMemory)?;
        } else {
            s.data.try_reserve(len).map_err(|_| ChunkError::NoMemory)?;
        }
        let old = s.data.len();
        s.data.resize(old + len, 0);
        fill(&mut s.data[old..]);
        if end == c.total_len {
            let done = self.streams.swap_remove(i);
            return Ok(Some(done.data));
        }
        Ok(None)
    }

    /// Streams open.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: u64, total: u32, offset: u32, len: u32) -> ChunkInfo {
        ChunkInfo {
            stream_id: id,
            total_len: total,
            offset,
            chunk_len: len,
        }
    }

    #[test]
    fn reassembles_interleaved_streams() {
        let mut r = Reassembly::new(100);
        assert_eq!(
            r.accept(chunk(1, 6, 0, 3), |b| b.copy_from_slice(b"abc")),
            Ok(None)
        );
        assert_eq!(
            r.accept(chunk(2, 2, 0, 1), |b| b.copy_from_slice(b"x")),
            Ok(None)
        );
        let a = r.accept(chunk(1, 6, 3, 3), |b| b.copy_from_slice(b"def"));
        assert_eq!(a, Ok(Some(b"abcdef".to_vec())));
        let b = r.accept(chunk(2, 2, 1, 1), |b| b.copy_from_slice(b"y"));
        assert_eq!(b, Ok(Some(b"xy".to_vec())));
        assert_eq!(r.open_streams(), 0);
    }

    #[test]
    fn refuses_bad_chunks_and_drops_the_stream() {
        let mut r = Reassembly::new(100);
        let nofill = |_: &mut [u8]| panic!("must not copy a refused chunk");
        assert_eq!(
            r.accept(chunk(1, 101, 0, 1), nofill),
            Err(ChunkError::TooLarge(101))
        );
        assert_eq!(
            r.accept(chunk(1, 10, 0, 0), nofill),
            Err(ChunkError::Bounds)
        );
        assert_eq!(
            r.accept(chunk(1, 10, 5, 6), nofill),
            Err(ChunkError::Bounds)
        );
        assert_eq!(
            r.accept(chunk(1, 10, u32::MAX, 6), nofill),
            Err(ChunkError::Bounds)
        );
        assert_eq!(
            r.accept(chunk(1, 10, 4, 1), nofill),
            Err(ChunkError::OutOfOrder)
        );
        r.accept(chunk(1, 10, 0, 4), |b| b.fill(1)).unwrap();
        assert_eq!(
            r.accept(chunk(1, 10, 5, 1), nofill),
            Err(ChunkError::OutOfOrder)
        );
        assert_eq!(r.open_streams(), 0, "a bad chunk drops its stream");
        r.accept(chunk(1, 10, 0, 4), |b| b.fill(1)).unwrap();
        assert_eq!(
            r.accept(chunk(1, 12, 4, 1), nofill),
            Err(ChunkError::TotalChanged)
        );
    }

    #[test]
    fn bounds_open_streams() {
        let mut r = Reassembly::new(100);
        for id in 0..(MAX_STREAMS as u64 + 2) {
            r.accept(chunk(id, 10, 0, 1), |b| b.fill(0)).unwrap();
        }
        assert_eq!(r.open_streams(), MAX_STREAMS);
        // Stream 0 and 1 were evicted.
        assert_eq!(
            r.accept(chunk(0, 10, 1, 1), |b| b.fill(0)),
            Err(ChunkError::OutOfOrder)
        );
        assert!(r.accept(chunk(5, 10, 1, 1), |b| b.fill(0)).is_ok());
    }
}
