//! Any bytes as a reassembled manifest: no panic; accepted entries are all addressable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_prefetch_wire::ManifestHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, entries)) = ManifestHeader::parse_manifest(data) {
        for i in 0..header.count as usize {
            assert!(ManifestHeader::entry(entries, i).is_some());
        }
        assert!(ManifestHeader::entry(entries, header.count as usize).is_none());
        let _ = header.tbs_prefix();
    }
});
