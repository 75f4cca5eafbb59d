//! Reassembly of chunked objects (bundles, manifests) in private memory.
//!
//! Each chunk arrives in a private copy of its staging buffer; `virtio-prefetch-wire`'s
//! [`ChunkSequence`] checks it continues its stream (same stream and total length, contiguous
//! offsets from 0, inside the object) and this module copies its bytes into the stream's
//! private buffer. At most [`MAX_STREAMS`] streams are open at once (a new one evicts the
//! oldest), and memory is reserved fallibly, so a device that announces huge objects gets an
//! error, never an allocation failure.

use alloc::vec::Vec;

use virtio_prefetch_wire::{Chunk, ChunkSequence, WireError};

/// Streams reassembled at the same time; a new stream beyond this evicts the oldest.
pub const MAX_STREAMS: usize = 4;

/// Why a chunk was dropped (the stream it belonged to is dropped with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The object is larger than the driver accepts.
    #[error("object of {0} bytes is larger than the driver accepts")]
    TooLarge(u32),
    /// The chunk does not continue its stream (or starts none).
    #[error("chunk refused: {0}")]
    Sequence(WireError),
    /// Memory for the object could not be reserved.
    #[error("out of memory reassembling an object")]
    NoMemory,
}

#[derive(Debug)]
struct Stream {
    seq: ChunkSequence,
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

    /// Streams open.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Takes one chunk (from a private copy). Returns the whole object once its last chunk
    /// is in. On an error the chunk's stream is dropped.
    pub fn accept(&mut self, c: &Chunk<'_>) -> Result<Option<Vec<u8>>, ChunkError> {
        let pos = self
            .streams
            .iter()
            .position(|s| s.seq.stream_id() == c.stream_id);
        let result = self.accept_inner(pos, c);
        if result.is_err() {
            if let Some(i) = self
                .streams
                .iter()
                .position(|s| s.seq.stream_id() == c.stream_id)
            {
                self.streams.swap_remove(i);
                self.dropped += 1;
            }
        }
        result
    }

    fn accept_inner(
        &mut self,
        pos: Option<usize>,
        c: &Chunk<'_>,
    ) -> Result<Option<Vec<u8>>, ChunkError> {
        let (i, range) = if c.offset == 0 {
            if c.total_len > self.max_object {
                return Err(ChunkError::TooLarge(c.total_len));
            }
            let (seq, range) =
                ChunkSequence::start(c, self.max_object).map_err(ChunkError::Sequence)?;
            if let Some(i) = pos {
                // A restart of an open stream: the old object never completed.
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
                seq,
                data: Vec::new(),
                opened: self.opened,
            });
            (self.streams.len() - 1, range)
        } else {
            let i = pos.ok_or(ChunkError::Sequence(WireError::OutOfSequence(
                "a chunk of a stream that is not open",
            )))?;
            let range = self.streams[i].seq.next(c).map_err(ChunkError::Sequence)?;
            (i, range)
        };
        let s = &mut self.streams[i];
        // ChunkSequence guarantees range.start == data.len() and range.end <= total_len.
        if s.data.is_empty() && s.seq.is_complete() {
            s.data.try_reserve_exact(c.data.len())
        } else {
            s.data.try_reserve(c.data.len())
        }
        .map_err(|_| ChunkError::NoMemory)?;
        debug_assert_eq!(range.start, s.data.len());
        s.data.extend_from_slice(c.data);
        if s.seq.is_complete() {
            let done = self.streams.swap_remove(i);
            return Ok(Some(done.data));
        }
        Ok(None)
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
    fn reassembles_interleaved_streams() {
        let mut r = Reassembly::new(100);
        assert_eq!(r.accept(&chunk(1, 6, 0, b"abc")), Ok(None));
        assert_eq!(r.accept(&chunk(2, 2, 0, b"x")), Ok(None));
        assert_eq!(
            r.accept(&chunk(1, 6, 3, b"def")),
            Ok(Some(b"abcdef".to_vec()))
        );
        assert_eq!(r.accept(&chunk(2, 2, 1, b"y")), Ok(Some(b"xy".to_vec())));
        assert_eq!(r.open_streams(), 0);
    }

    #[test]
    fn refuses_bad_chunks_and_drops_the_stream() {
        let mut r = Reassembly::new(100);
        assert_eq!(
            r.accept(&chunk(1, 101, 0, b"a")),
            Err(ChunkError::TooLarge(101))
        );
        assert!(r.accept(&chunk(1, 10, 0, b"")).is_err());
        assert!(r.accept(&chunk(1, 10, 4, b"a")).is_err(), "no stream open");
        r.accept(&chunk(1, 10, 0, b"abcd")).unwrap();
        assert!(r.accept(&chunk(1, 10, 5, b"a")).is_err(), "gap");
        assert_eq!(r.open_streams(), 0, "a bad chunk drops its stream");
        r.accept(&chunk(1, 10, 0, b"abcd")).unwrap();
        assert!(r.accept(&chunk(1, 12, 4, b"a")).is_err(), "total changed");
        r.accept(&chunk(1, 10, 0, b"abcd")).unwrap();
        assert!(
            r.accept(&chunk(1, 10, 4, b"abcdefg")).is_err(),
            "past the end"
        );
        assert_eq!(r.open_streams(), 0);
    }

    #[test]
    fn bounds_open_streams() {
        let mut r = Reassembly::new(100);
        for id in 0..(MAX_STREAMS as u64 + 2) {
            r.accept(&chunk(id, 10, 0, b"a")).unwrap();
        }
        assert_eq!(r.open_streams(), MAX_STREAMS);
        assert!(
            r.accept(&chunk(0, 10, 1, b"b")).is_err(),
            "stream 0 was evicted"
        );
        assert!(r.accept(&chunk(5, 10, 1, b"b")).is_ok());
    }
}
