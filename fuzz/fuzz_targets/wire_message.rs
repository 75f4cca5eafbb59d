//! Any bytes as a message on any queue: the parser must not panic, and whatever it accepts
//! must re-encode to the same bytes (one encoding per value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_prefetch_wire::parse_message;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, message)) = parse_message(data) {
        let mut out = vec![0u8; message.encoded_len()];
        let n = message
            .encode(header.cookie, &mut out)
            .expect("an accepted message re-encodes");
        assert_eq!(&out[..n], &data[..n]);
    }
});
