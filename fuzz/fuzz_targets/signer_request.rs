//! Any bytes as a request to the signer (what a compromised daemon may send): parsing never
//! panics and never accepts more than the protocol's bound; an accepted request encodes back
//! to exactly the same bytes (the format has one encoding), its statements parse or are
//! refused as malformed, and a manifest's bundles are checked against its entries without
//! panicking. The same bytes as a reply: parsed or refused, never a panic, and a parsed reply
//! encodes back to them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_prefetch_wire::{FloorsHeader, FLOORS_TBS_PREFIX_LEN, FLOOR_ENTRY_LEN};
use see_signer::{
    protocol::{Kind, Refusal, Reply, Request, MAX_REQUEST_LEN},
    statement::{BundleStatement, ManifestStatement},
};

fuzz_target!(|data: &[u8]| {
    match Request::parse(data) {
        Ok(request) => {
            assert!(data.len() <= MAX_REQUEST_LEN);
            assert_eq!(request.encode(), data);
            match request.kind {
                Kind::Bundle => {
                    assert!(request.bundles.is_empty());
                    let _ = BundleStatement::parse(&request.statement);
                }
                Kind::Manifest => {
                    if let Ok(m) = ManifestStatement::parse(&request.statement) {
                        assert_eq!(m.entries.len(), request.bundles.len());
                        match m.check_bundles(&request.bundles) {
                            Ok(bundles) => assert_eq!(bundles.len(), m.entries.len()),
                            Err(r) => {
                                assert!(matches!(r, Refusal::Malformed | Refusal::ManifestMismatch))
                            }
                        }
                    }
                }
                Kind::Floors => {
                    // Parsing bounded the statement to a prefix and whole entries.
                    assert!(request.bundles.is_empty());
                    assert!(request.statement.len() >= FLOORS_TBS_PREFIX_LEN);
                    let entries = &request.statement[FLOORS_TBS_PREFIX_LEN..];
                    assert_eq!(entries.len() % FLOOR_ENTRY_LEN, 0);
                    assert_eq!(
                        FloorsHeader::iter(entries).count(),
                        entries.len() / FLOOR_ENTRY_LEN
                    );
                }
            }
        }
        Err(r) => assert!(matches!(
            r,
            Refusal::Malformed | Refusal::UnsupportedVersion(_)
        )),
    }
    if let Ok(reply) = Reply::parse(data) {
        assert_eq!(reply.encode(), data);
    }
});
