//! Any bytes as a reassembled bundle: no panic; an accepted header re-encodes identically and
//! its digest list and content lengths match the bytes after it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_prefetch_wire::BundleHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, list, content)) = BundleHeader::parse_tree(data) {
        assert_eq!(content.len() as u64, header.content_len);
        assert_eq!(list.len(), header.digest_list_len());
        assert_eq!(BundleHeader::parse_bundle(data), Ok((header, content)));
        let mut out = [0u8; BundleHeader::LEN];
        header
            .encode(&mut out)
            .expect("an accepted header re-encodes");
        assert_eq!(&out[..], &data[..BundleHeader::LEN]);
        let _ = header.to_be_signed();
    }
});
