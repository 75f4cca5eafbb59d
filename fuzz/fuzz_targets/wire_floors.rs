//! Any bytes as a reassembled floors snapshot: no panic; what parses has sorted, distinct
//! resource ids and re-encodes to the same bytes (one encoding per snapshot).
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_prefetch_wire::{Floor, FloorsHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok((header, entries)) = FloorsHeader::parse_floors(data) {
        let floors: Vec<Floor> = FloorsHeader::iter(entries).collect();
        assert_eq!(floors.len(), header.count as usize);
        assert!(floors.windows(2).all(|p| p[0].resource_id < p[1].resource_id));
        assert!(header.issued_at <= header.expires_at);
        let mut out = vec![0u8; data.len()];
        assert_eq!(header.encode(&floors, &mut out), Ok(data.len()));
        assert_eq!(out, data);
        let _ = header.tbs_prefix();
    }
});
