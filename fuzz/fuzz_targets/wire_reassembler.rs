//! Chunk sequences against the Reassembler over both of its buffers (a 4 KiB slice, and the
//! HeapBuffer the guest driver uses, with the same 4 KiB limit) and against a plain model of
//! the SPEC's chunking rules (section 5: one object at a time): all three must agree on every
//! chunk (accepted, completed or refused) and on the bytes of every completed object, and the
//! HeapBuffer must hold exactly the object in progress's total length, or nothing, reserved
//! (never more than the limit). Each chunk also round-trips through the
//! stagingq encoding. The input is decoded into chunks directly (not as messages), so the
//! fuzzer spends its time on sequences rather than on finding valid headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_prefetch_wire::{parse_message, Chunk, HeapBuffer, Message, Reassembler};

const LIMIT: usize = 4096;

/// The SPEC's rules, written as plainly as possible.
#[derive(Default)]
struct Model {
    object: Option<(u64, u32, Vec<u8>)>,
}

impl Model {
    fn push(&mut self, c: &Chunk<'_>) -> Result<Option<Vec<u8>>, ()> {
        let (stream, total, mut bytes) = match self.object.take() {
            None if c.offset == 0 && c.total_len > 0 && c.total_len as usize <= LIMIT => {
                (c.stream_id, c.total_len, Vec::new())
            }
            None => return Err(()),
            Some(object) => object,
        };
        let fits = bytes.len() + c.data.len() <= total as usize;
        if c.stream_id != stream
            || c.total_len != total
            || c.offset as usize != bytes.len()
            || c.data.is_empty()
            || !fits
        {
            return Err(());
        }
        bytes.extend_from_slice(c.data);
        if bytes.len() == total as usize {
            return Ok(Some(bytes));
        }
        self.object = Some((stream, total, bytes));
        Ok(None)
    }
}

/// Takes `n` bytes from the front of `input` (fewer at its end).
fn take<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = input.split_at(n.min(input.len()));
    *input = tail;
    head
}

fn u16_of(bytes: &[u8]) -> u16 {
    bytes
        .iter()
        .rev()
        .fold(0, |acc, &b| (acc << 8) | u16::from(b))
}

/// Chunk bytes come from here (at an input-chosen start), so lengths are not bounded by
/// the input and misplaced bytes show up.
fn pattern() -> &'static [u8; 8192 + 256] {
    static PATTERN: std::sync::OnceLock<[u8; 8192 + 256]> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| core::array::from_fn(|i| (i * 7 + i / 251) as u8))
}

fuzz_target!(|data: &[u8]| {
    let mut buf = [0u8; LIMIT];
    let mut reassembler = Reassembler::new(&mut buf);
    let mut heap = Reassembler::with_buffer(HeapBuffer::new(LIMIT as u32));
    let mut model = Model::default();
    let (mut total, mut next_offset) = (0u32, 0u32);
    let mut input = data;
    while let Some((&control, rest)) = input.split_first() {
        input = rest;
        // control: bits 0-1 stream, bit 2 new total, bit 3 explicit offset, bit 4 huge
        // offset, bit 5 the chunk runs to the end of the object, bits 6-7 length scale.
        if control & 4 != 0 {
            total = u32::from(u16_of(take(&mut input, 2)) & 0x1FFF);
        }
        let offset = match (control & 8 != 0, control & 16 != 0) {
            (_, true) => u32::MAX - u32::from(u16_of(take(&mut input, 2))),
            (true, false) => u32::from(u16_of(take(&mut input, 2))),
            (false, false) => next_offset,
        };
        let salt = usize::from(take(&mut input, 1).first().copied().unwrap_or(0));
        let len = if control & 32 != 0 {
            total.saturating_sub(offset).min(8192) as usize
        } else {
            let scale = usize::from(control >> 6) + 1;
            usize::from(take(&mut input, 1).first().copied().unwrap_or(0)) * scale
        };
        let chunk = Chunk {
            stream_id: u64::from(control & 3),
            total_len: total,
            offset,
            data: &pattern()[salt..salt + len],
        };
        next_offset = offset.wrapping_add(chunk.data.len() as u32);

        // The stagingq encoding carries exactly this chunk (or refuses it on both sides).
        let mut wire = vec![0u8; 16 + 24 + chunk.data.len()];
        match Message::Chunk(chunk).encode(7, &mut wire) {
            Ok(n) => {
                let (header, message) = parse_message(&wire[..n]).expect("encoded chunk parses");
                assert_eq!((header.cookie, message), (7, Message::Chunk(chunk)));
            }
            Err(_) => assert!(u64::from(offset) + chunk.data.len() as u64 > u64::from(total)),
        }

        let expected = model.push(&chunk);
        let got = reassembler.push(&chunk);
        match (&expected, &got) {
            (Ok(None), Ok(None)) | (Err(()), Err(_)) => {}
            (Ok(Some(want)), Ok(Some(object))) => assert_eq!(&want[..], *object),
            _ => panic!("model {expected:?} but reassembler {got:?} for {chunk:?}"),
        }
        assert_eq!(reassembler.in_progress().is_some(), model.object.is_some());

        let got = heap.push(&chunk);
        match (&expected, &got) {
            (Ok(None), Ok(None)) | (Err(()), Err(_)) => {}
            (Ok(Some(want)), Ok(Some(object))) => {
                assert_eq!(want, object);
                assert_eq!(object.capacity(), object.len(), "reserved exactly");
            }
            _ => panic!("model {expected:?} but heap reassembler {got:?} for {chunk:?}"),
        }
        let reserved = model
            .object
            .as_ref()
            .map_or(0, |(_, total, _)| *total as usize);
        assert_eq!(heap.buffer().reserved(), reserved);
        assert!(heap.buffer().reserved() <= LIMIT);
        assert_eq!(
            heap.in_progress().map(|s| (s.stream_id(), s.total_len())),
            model.object.as_ref().map(|(id, total, _)| (*id, *total))
        );
    }
});
