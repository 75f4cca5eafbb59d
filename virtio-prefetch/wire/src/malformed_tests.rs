//! Malformed input, one fault at a time, each answered by its own error; and seeded mutation
//! loops over valid bundles and manifests.

use crate::*;

fn encoded(message: &Message<'_>) -> ([u8; 256], usize) {
    let mut buf = [0u8; 256];
    let len = message.encode(0, &mut buf).unwrap();
    (buf, len)
}

const REQUEST: Message<'static> = Message::Request(Request {
    request_id: 1,
    session_id: 2,
    app_id: 3,
    request_type: 4,
    args: b"args",
});

const CHUNK: Message<'static> = Message::Chunk(Chunk {
    stream_id: 1,
    total_len: 100,
    offset: 96,
    data: b"tail",
});

#[test]
fn truncation_is_reported_where_it_happens() {
    let (buf, len) = encoded(&REQUEST);
    for cut in 0..MessageHeader::LEN {
        assert_eq!(
            parse_message(&buf[..cut]),
            Err(WireError::Truncated {
                what: "message header",
                need: MessageHeader::LEN,
                have: cut,
            })
        );
    }
    for cut in MessageHeader::LEN..len {
        assert_eq!(
            parse_message(&buf[..cut]),
            Err(WireError::TooLarge {
                field: "header.len",
                value: (len - MessageHeader::LEN) as u64,
                limit: (cut - MessageHeader::LEN) as u64,
            })
        );
    }
    // A header whose len covers only part of the payload: the payload parser says so.
    let mut short = buf;
    short[8..12].copy_from_slice(&30u32.to_le_bytes());
    assert_eq!(
        parse_message(&short[..len]),
        Err(WireError::Truncated {
            what: "payload",
            need: 32,
            have: 30,
        })
    );
    // arg_len beyond what len carries.
    let mut long_args = buf;
    long_args[16 + 24..16 + 28].copy_from_slice(&5u32.to_le_bytes());
    assert_eq!(
        parse_message(&long_args[..len]),
        Err(WireError::Truncated {
            what: "payload",
            need: 37,
            have: 36,
        })
    );
}

#[test]
fn counts_and_lengths_beyond_their_limits_are_refused_on_parse() {
    let (mut buf, len) = encoded(&REQUEST);
    buf[16 + 24..16 + 28].copy_from_slice(&(MAX_REQUEST_ARGS + 1).to_le_bytes());
    assert_eq!(
        parse_message(&buf[..len]),
        Err(WireError::TooLarge {
            field: "request.arg_len",
            value: u64::from(MAX_REQUEST_ARGS) + 1,
            limit: MAX_REQUEST_ARGS.into(),
        })
    );
    // Offsets near u32::MAX: offset + chunk_len is computed in u64, never wrapped.
    let (mut buf, len) = encoded(&CHUNK);
    buf[16 + 12..16 + 16].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
    assert_eq!(
        parse_message(&buf[..len]),
        Err(WireError::TooLarge {
            field: "chunk.offset + chunk.chunk_len",
            value: u64::from(u32::MAX) + 3,
            limit: 100,
        })
    );
    // chunk_len of u32::MAX with a short payload.
    let (mut buf, len) = encoded(&CHUNK);
    buf[16 + 16..16 + 20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        parse_message(&buf[..len]),
        Err(WireError::Truncated {
            what: "payload",
            ..
        })
    ));
}

#[test]
fn reserved_fields_are_checked_per_kind() {
    let cases: [(Message<'_>, usize, &str); 5] = [
        (REQUEST, 28, "request.reserved"),
        (CHUNK, 20, "chunk.reserved"),
        (
            Message::Demand(Demand {
                app_id: 1,
                task_id: 2,
                resource_id: 3,
                min_version: 4,
            }),
            4,
            "demand.reserved",
        ),
        (
            Message::Report(Report {
                kind: ReportKind::Miss,
                reason: None,
                app_id: 1,
                task_id: 2,
                resource_id: 3,
                version: 4,
                latency_ns: 5,
            }),
            4,
            "report.reason",
        ),
        (
            Message::Evict(Evict {
                app_id: 1,
                resource_id: 2,
            }),
            4,
            "evict.reserved",
        ),
    ];
    for (message, at, field) in cases {
        let (mut buf, len) = encoded(&message);
        assert!(parse_message(&buf[..len]).is_ok());
        buf[16 + at] = 1;
        assert_eq!(
            parse_message(&buf[..len]),
            Err(WireError::ReservedNotZero(field))
        );
    }
}

fn bundle() -> BundleHeader {
    BundleHeader {
        flags: BundleFlags::IN_MANIFEST.union(BundleFlags::PREFETCHED),
        kind: ResourceKind::Code,
        app_id: 1,
        task_id: 2,
        resource_id: 3,
        resource_version: 4,
        content_len: 3,
        tree_root: [6; 48],
        session_nonce: [7; 32],
        epoch: 8,
        seq: 9,
        demand_cookie: 0,
        signature: [0; 96],
    }
}

#[test]
fn bundle_faults_have_their_own_errors() {
    let mut buf = [0u8; BundleHeader::LEN + 32 + 3];
    bundle().encode(&mut buf).unwrap();
    assert_eq!(
        BundleHeader::parse_bundle(&buf[..255]),
        Err(WireError::Truncated {
            what: "bundle header",
            need: 256,
            have: 255,
        })
    );
    let faults: [(usize, u8, WireError); 5] = [
        (
            0,
            b'X',
            WireError::BadMagic {
                what: "bundle",
                found: u32::from_le_bytes(*b"XEEB"),
            },
        ),
        // Version 1 (the bundle without a chunk tree) is no longer accepted.
        (
            4,
            1,
            WireError::BadVersion {
                what: "bundle",
                found: 1,
            },
        ),
        (
            8,
            3,
            WireError::BadValue {
                field: "bundle.kind",
                value: 3,
            },
        ),
        (10, 1, WireError::ReservedNotZero("bundle.reserved0")),
        (148, 1, WireError::ReservedNotZero("bundle.reserved1")),
    ];
    for (at, value, error) in faults {
        let mut bad = buf;
        bad[at] = value;
        assert_eq!(BundleHeader::parse_bundle(&bad), Err(error), "byte {at}");
    }
    // A manifest is not a bundle, and the other way round.
    assert!(!ManifestHeader::is_manifest(&buf));
    assert!(matches!(
        ManifestHeader::parse_manifest(&buf),
        Err(WireError::BadMagic {
            what: "manifest",
            ..
        })
    ));
}

#[test]
fn manifest_faults_have_their_own_errors() {
    let header = ManifestHeader {
        count: 1,
        session_nonce: [1; 32],
        epoch: 2,
        seq: 3,
        signature: [4; 96],
    };
    let mut buf = [0u8; ManifestHeader::LEN + DIGEST_LEN];
    header.encode(&[[5; 48]], &mut buf).unwrap();
    assert_eq!(
        ManifestHeader::parse_manifest(&buf[..100]),
        Err(WireError::Truncated {
            what: "manifest header",
            need: ManifestHeader::LEN,
            have: 100,
        })
    );
    let faults: [(usize, u8, WireError); 4] = [
        (
            4,
            9,
            WireError::BadVersion {
                what: "manifest",
                found: 9,
            },
        ),
        (6, 1, WireError::ReservedNotZero("manifest.reserved0")),
        (12, 1, WireError::ReservedNotZero("manifest.reserved1")),
        (
            8,
            2,
            WireError::LengthMismatch {
                what: "manifest entries",
                declared: 96,
                actual: 48,
            },
        ),
    ];
    for (at, value, error) in faults {
        let mut bad = buf;
        bad[at] = value;
        assert_eq!(
            ManifestHeader::parse_manifest(&bad),
            Err(error),
            "byte {at}"
        );
    }
    let mut long = [0u8; BundleHeader::LEN];
    long[..buf.len()].copy_from_slice(&buf);
    assert!(matches!(
        BundleHeader::parse(&long),
        Err(WireError::BadMagic { what: "bundle", .. })
    ));
}

/// xorshift64: a fixed seed keeps failures reproducible.
fn rng(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// Seeded mutations of a valid bundle and a valid manifest: no panic, and whatever parses
/// re-encodes to the same bytes.
#[test]
fn mutated_bundles_and_manifests_never_panic_and_stay_canonical() {
    let mut next = rng(0xB0_4D1E);
    let mut bundle_buf = [0u8; BundleHeader::LEN + 32 + 3];
    bundle().encode(&mut bundle_buf).unwrap();
    let mut manifest_buf = [0u8; ManifestHeader::LEN + 2 * DIGEST_LEN];
    ManifestHeader {
        count: 2,
        session_nonce: [1; 32],
        epoch: 2,
        seq: 3,
        signature: [4; 96],
    }
    .encode(&[[5; 48], [6; 48]], &mut manifest_buf)
    .unwrap();
    let (mut bundles_ok, mut manifests_ok) = (0, 0);
    for _ in 0..20_000 {
        let mut b = bundle_buf;
        let mut m = manifest_buf;
        for _ in 0..1 + next() % 2 {
            let at = (next() % b.len() as u64) as usize;
            b[at] = next() as u8;
            let at = (next() % m.len() as u64) as usize;
            m[at] = next() as u8;
        }
        if let Ok((header, content)) = BundleHeader::parse_bundle(&b) {
            let mut again = [0u8; BundleHeader::LEN];
            header.encode(&mut again).unwrap();
            assert_eq!(&again[..], &b[..BundleHeader::LEN]);
            assert_eq!(content.len() as u64, header.content_len);
            bundles_ok += 1;
        }
        if let Ok((header, entries)) = ManifestHeader::parse_manifest(&m) {
            let list = [
                *ManifestHeader::entry(entries, 0).unwrap(),
                *ManifestHeader::entry(entries, 1).unwrap(),
            ];
            let mut again = [0u8; ManifestHeader::LEN + 2 * DIGEST_LEN];
            header.encode(&list, &mut again).unwrap();
            assert_eq!(again, m);
            manifests_ok += 1;
        }
    }
    // Mutations inside signed fields keep a structure valid, so both paths were exercised.
    assert!(
        bundles_ok > 1000 && manifests_ok > 1000,
        "{bundles_ok} {manifests_ok}"
    );
}
