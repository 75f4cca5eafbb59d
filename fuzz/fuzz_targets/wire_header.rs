//! Any bytes as a message header alone: no panic; an accepted header's payload is exactly
//! `len` bytes inside the buffer, right after the 16 header bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_prefetch_wire::MessageHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, payload)) = MessageHeader::parse(data) {
        assert_eq!(payload.len(), header.len as usize);
        assert_eq!(
            payload,
            &data[MessageHeader::LEN..MessageHeader::LEN + payload.len()]
        );
        assert_eq!(header.flags, 0);
    }
});
