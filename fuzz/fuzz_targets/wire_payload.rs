//! Any bytes as the payload of any kind (the first input byte picks the kind), without a
//! header in front: each payload parser on its own. No panic; whatever parses re-encodes to
//! the same payload bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_prefetch_wire::{Message, MessageHeader, MessageKind};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let kind = MessageKind::ALL[pick as usize % MessageKind::ALL.len()];
    if let Ok(message) = Message::parse_payload(kind, payload) {
        assert_eq!(message.kind(), kind);
        assert_eq!(message.payload_len(), payload.len());
        let mut out = vec![0u8; message.encoded_len()];
        let n = message
            .encode(0, &mut out)
            .expect("an accepted payload re-encodes");
        assert_eq!(&out[MessageHeader::LEN..n], payload);
    }
});
