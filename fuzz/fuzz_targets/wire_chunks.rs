//! A sequence of stagingq messages (length-prefixed in the input) fed to the chunk checker:
//! every range it hands out lies inside the object, and ranges are contiguous.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_prefetch_wire::{parse_message, ChunkSequence, Message};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut sequence: Option<ChunkSequence> = None;
    let mut filled = 0usize;
    while rest.len() >= 2 {
        let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        let Some(buf) = rest.get(2..2 + len) else { break };
        rest = &rest[2 + len..];
        let Ok((_, Message::Chunk(chunk))) = parse_message(buf) else { continue };
        let result = match sequence.as_mut() {
            Some(seq) => seq.next(&chunk),
            None => ChunkSequence::start(&chunk, 1 << 20).map(|(seq, range)| {
                sequence = Some(seq);
                filled = 0;
                range
            }),
        };
        if let (Ok(range), Some(seq)) = (result, sequence) {
            assert_eq!(range.start, filled);
            assert!(range.end <= seq.total_len() as usize);
            filled = range.end;
            if seq.is_complete() {
                sequence = None;
            }
        }
    }
});
