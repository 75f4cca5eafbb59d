//! Round trips of every structure, each malformed-input error, and a seeded mutation loop
//! checking that no input makes a parser panic.

use crate::*;

fn samples() -> [Message<'static>; 7] {
    const TIMINGS: &[TaskTiming] = &[
        TaskTiming {
            task_id: 7,
            claim_ns: 1,
            fetch_ns: 2,
            work_ns: 3,
            hits: 4,
            misses: 5,
            result: 0xDEAD_BEEF_0BAD_F00D,
        },
        TaskTiming {
            task_id: 8,
            claim_ns: 10,
            fetch_ns: 20,
            work_ns: 30,
            hits: 0,
            misses: 1,
            result: u64::MAX,
        },
    ];
    [
        Message::Request(Request {
            request_id: 1,
            session_id: 2,
            app_id: 3,
            request_type: 4,
            args: b"checkout",
        }),
        Message::Chunk(Chunk {
            stream_id: 9,
            total_len: 100,
            offset: 96,
            data: b"tail",
        }),
        Message::Hello(Hello {
            nonce: [7; 32],
            epoch: 2,
            driver_version: 1,
            staging_buffers: 64,
        }),
        Message::Demand(Demand {
            app_id: 1,
            task_id: 2,
            resource_id: 3,
            min_version: 4,
        }),
        Message::Report(Report {
            kind: ReportKind::Reject,
            reason: Some(RejectReason::Rollback),
            app_id: 1,
            task_id: 2,
            resource_id: 3,
            version: 4,
            latency_ns: 5,
        }),
        Message::Complete(Complete {
            request_id: 11,
            status: 0,
            total_ns: 99,
            tasks: TaskTimings::Slice(TIMINGS),
        }),
        Message::Ack(Ack {
            status: Status::UnknownResource,
            detail: 12,
        }),
    ]
}

fn encode(message: &Message<'_>, cookie: u32) -> ([u8; 512], usize) {
    let mut buf = [0u8; 512];
    let len = message.encode(cookie, &mut buf).unwrap();
    assert_eq!(len, message.encoded_len());
    (buf, len)
}

#[test]
fn every_message_round_trips() {
    for message in samples() {
        let (buf, len) = encode(&message, 42);
        let (header, parsed) = parse_message(&buf[..len]).unwrap();
        assert_eq!(header.kind, message.kind());
        assert_eq!(header.cookie, 42);
        assert_eq!(header.len as usize, len - MessageHeader::LEN);
        match (parsed, message) {
            (Message::Complete(a), Message::Complete(b)) => {
                assert_eq!(
                    (a.request_id, a.status, a.total_ns),
                    (b.request_id, b.status, b.total_ns)
                );
                assert!(a.tasks.iter().eq(b.tasks.iter()));
                assert_eq!(a.tasks.len(), 2);
            }
            (a, b) => assert_eq!(a, b),
        }
        // A larger carrying buffer is fine: the header says where the message ends.
        let mut padded = [0xAAu8; 600];
        padded[..len].copy_from_slice(&buf[..len]);
        assert_eq!(parse_message(&padded).unwrap().0.len as usize, len - 16);
    }
}

#[test]
fn every_truncation_is_refused() {
    for message in samples() {
        let (buf, len) = encode(&message, 0);
        for cut in 0..len {
            assert!(
                parse_message(&buf[..cut]).is_err(),
                "{:?} cut at {cut}",
                message.kind()
            );
        }
    }
}

#[test]
fn header_faults_have_their_own_errors() {
    let (buf, len) = encode(&samples()[2], 0);
    let mut bad = buf;
    bad[0] ^= 1;
    assert!(matches!(
        parse_message(&bad[..len]),
        Err(WireError::BadMagic { .. })
    ));
    let mut bad = buf;
    bad[4] = 2;
    assert!(matches!(
        parse_message(&bad[..len]),
        Err(WireError::BadVersion { found: 2, .. })
    ));
    let mut bad = buf;
    bad[5] = 0x7f;
    assert_eq!(parse_message(&bad[..len]), Err(WireError::BadKind(0x7f)));
    let mut bad = buf;
    bad[6] = 1;
    assert_eq!(
        parse_message(&bad[..len]),
        Err(WireError::ReservedNotZero("header.flags"))
    );
    let mut bad = buf;
    bad[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        parse_message(&bad[..len]),
        Err(WireError::TooLarge {
            field: "header.len",
            ..
        })
    ));
    // A payload one byte longer than its kind defines is refused, not ignored.
    let mut bad = buf;
    bad[8..12].copy_from_slice(&((len - 16 + 1) as u32).to_le_bytes());
    assert!(matches!(
        parse_message(&bad[..len + 1]),
        Err(WireError::LengthMismatch { .. })
    ));
}

#[test]
fn payload_limits_are_enforced_both_ways() {
    let big = [0u8; MAX_REQUEST_ARGS as usize + 1];
    let request = Message::Request(Request {
        request_id: 0,
        session_id: 0,
        app_id: 0,
        request_type: 0,
        args: &big,
    });
    let mut out = [0u8; 4096];
    assert!(matches!(
        request.encode(0, &mut out),
        Err(WireError::TooLarge { .. })
    ));
    let chunk = Message::Chunk(Chunk {
        stream_id: 1,
        total_len: 3,
        offset: 1,
        data: b"abc",
    });
    assert!(matches!(
        chunk.encode(0, &mut out),
        Err(WireError::TooLarge { .. })
    ));
    assert!(matches!(
        samples()[0].encode(0, &mut out[..20]),
        Err(WireError::BufferTooSmall { .. })
    ));

    // Hand-made oversized fields.
    let (mut buf, len) = encode(&samples()[5], 0);
    buf[16 + 12..16 + 16].copy_from_slice(&(MAX_COMPLETE_TASKS + 1).to_le_bytes());
    assert!(matches!(
        parse_message(&buf[..len]),
        Err(WireError::TooLarge {
            field: "complete.task_count",
            ..
        })
    ));
    let (mut buf, len) = encode(&samples()[1], 0);
    buf[16 + 12..16 + 16].copy_from_slice(&u32::MAX.to_le_bytes()); // offset
    assert!(parse_message(&buf[..len]).is_err());
    let (mut buf, len) = encode(&samples()[4], 0);
    buf[16 + 4..16 + 8].copy_from_slice(&0u32.to_le_bytes()); // a Reject without a reason
    assert!(matches!(
        parse_message(&buf[..len]),
        Err(WireError::BadValue {
            field: "report.reason",
            ..
        })
    ));
    let (mut buf, len) = encode(&samples()[6], 0);
    buf[16..20].copy_from_slice(&77u32.to_le_bytes());
    assert!(matches!(
        parse_message(&buf[..len]),
        Err(WireError::BadValue {
            field: "ack.status",
            ..
        })
    ));
}

#[test]
fn enums_round_trip_their_raw_values() {
    for kind in MessageKind::ALL {
        assert_eq!(MessageKind::from_raw(kind.raw()), Ok(*kind));
    }
    for reason in RejectReason::ALL {
        assert_eq!(RejectReason::from_raw(reason.raw()), Ok(*reason));
    }
    for status in Status::ALL {
        assert_eq!(Status::from_raw(status.raw()), Ok(*status));
    }
    assert!(RejectReason::from_raw(0).is_err());
}

fn bundle() -> BundleHeader {
    BundleHeader {
        flags: BundleFlags::PREFETCHED,
        kind: ResourceKind::Data,
        app_id: 1,
        task_id: 2,
        resource_id: 3,
        resource_version: 4,
        content_len: 5,
        tree_root: [6; 48],
        session_nonce: [7; 32],
        epoch: 8,
        seq: 9,
        demand_cookie: 10,
        signature: [11; 96],
    }
}

#[test]
fn bundle_round_trips_and_checks_its_content_length() {
    let header = bundle();
    // Header, one digest (5 bytes is one tree chunk), content.
    let mut buf = [0u8; BundleHeader::LEN + 32 + 5];
    assert_eq!(header.encode(&mut buf).unwrap(), 256);
    buf[256..288].copy_from_slice(&[0xd1; 32]);
    buf[288..].copy_from_slice(b"hello");
    let (parsed, content) = BundleHeader::parse_bundle(&buf).unwrap();
    assert_eq!((parsed, content), (header, &b"hello"[..]));
    let (_, list, content) = BundleHeader::parse_tree(&buf).unwrap();
    assert_eq!((list, content), (&[0xd1; 32][..], &b"hello"[..]));
    assert_eq!(
        (
            header.digest_list_len(),
            header.content_offset(),
            header.object_len()
        ),
        (32, 288, 293)
    );
    assert!(matches!(
        BundleHeader::parse_bundle(&buf[..292]),
        Err(WireError::LengthMismatch { .. })
    ));
    // Without its digest list, the bytes are too short.
    let mut v1_layout = [0u8; BundleHeader::LEN + 5];
    v1_layout[..256].copy_from_slice(&buf[..256]);
    v1_layout[256..].copy_from_slice(b"hello");
    assert!(matches!(
        BundleHeader::parse_bundle(&v1_layout),
        Err(WireError::LengthMismatch { .. })
    ));
    let mut long = [0u8; BundleHeader::LEN + 32 + 6];
    long[..293].copy_from_slice(&buf);
    assert!(matches!(
        BundleHeader::parse_bundle(&long),
        Err(WireError::LengthMismatch { .. })
    ));
    let mut bad = buf;
    bad[255] = 1;
    assert_eq!(
        BundleHeader::parse(&bad),
        Err(WireError::ReservedNotZero("bundle.padding"))
    );
    let mut bad = buf;
    bad[6] = 0x80; // undefined flag
    assert!(matches!(
        BundleHeader::parse(&bad),
        Err(WireError::BadValue {
            field: "bundle.flags",
            ..
        })
    ));
    let mut bad = buf;
    bad[40..48].copy_from_slice(&(MAX_CONTENT_LEN + 1).to_le_bytes());
    assert!(matches!(
        BundleHeader::parse(&bad),
        Err(WireError::TooLarge { .. })
    ));
}

#[test]
fn the_signed_statement_covers_every_security_field_and_not_the_routing_ones() {
    let base = bundle().to_be_signed();
    assert!(base.starts_with(BUNDLE_CONTEXT));
    let changes: [fn(&mut BundleHeader); 10] = [
        |b| b.kind = ResourceKind::Code,
        |b| b.app_id += 1,
        |b| b.task_id += 1,
        |b| b.resource_id += 1,
        |b| b.resource_version += 1,
        |b| b.content_len += 1,
        |b| b.tree_root[47] ^= 1,
        |b| b.session_nonce[0] ^= 1,
        |b| b.epoch += 1,
        |b| b.seq += 1,
    ];
    for (i, change) in changes.iter().enumerate() {
        let mut b = bundle();
        change(&mut b);
        assert_ne!(b.to_be_signed(), base, "field {i} is not covered");
    }
    let mut routed = bundle();
    routed.flags = BundleFlags::DEMANDED;
    routed.demand_cookie = 99;
    routed.signature = [0; 96];
    assert_eq!(routed.to_be_signed(), base);
}

#[test]
fn manifest_round_trips_and_bounds_its_entries() {
    let header = ManifestHeader {
        count: 2,
        session_nonce: [1; 32],
        epoch: 3,
        seq: 4,
        signature: [5; 96],
    };
    let entries = [[8u8; 48], [9u8; 48]];
    let mut buf = [0u8; ManifestHeader::LEN + 96];
    assert_eq!(header.encode(&entries, &mut buf).unwrap(), buf.len());
    assert!(ManifestHeader::is_manifest(&buf));
    let (parsed, raw) = ManifestHeader::parse_manifest(&buf).unwrap();
    assert_eq!(parsed, header);
    assert_eq!(ManifestHeader::entry(raw, 1), Some(&[9u8; 48]));
    assert_eq!(ManifestHeader::entry(raw, 2), None);
    assert!(matches!(
        ManifestHeader::parse_manifest(&buf[..buf.len() - 1]),
        Err(WireError::LengthMismatch { .. })
    ));
    let mut bad = buf;
    bad[8..12].copy_from_slice(&(MAX_MANIFEST_ENTRIES + 1).to_le_bytes());
    assert!(matches!(
        ManifestHeader::parse_manifest(&bad),
        Err(WireError::TooLarge { .. })
    ));
    let mut other = header;
    other.seq += 1;
    assert_ne!(other.tbs_prefix(), header.tbs_prefix());
    assert!(header.encode(&entries[..1], &mut buf).is_err());
}

#[test]
fn chunk_sequences_must_be_contiguous_and_bounded() {
    let first = Chunk {
        stream_id: 1,
        total_len: 10,
        offset: 0,
        data: b"abcd",
    };
    let (mut seq, range) = ChunkSequence::start(&first, 100).unwrap();
    assert_eq!(range, 0..4);
    assert!(seq
        .next(&Chunk {
            stream_id: 2,
            total_len: 10,
            offset: 4,
            data: b"x"
        })
        .is_err());
    assert!(seq
        .next(&Chunk {
            stream_id: 1,
            total_len: 11,
            offset: 4,
            data: b"x"
        })
        .is_err());
    assert!(seq
        .next(&Chunk {
            stream_id: 1,
            total_len: 10,
            offset: 5,
            data: b"x"
        })
        .is_err());
    assert!(seq
        .next(&Chunk {
            stream_id: 1,
            total_len: 10,
            offset: 4,
            data: b""
        })
        .is_err());
    assert!(seq
        .next(&Chunk {
            stream_id: 1,
            total_len: 10,
            offset: 4,
            data: b"0123456"
        })
        .is_err());
    assert_eq!(
        seq.next(&Chunk {
            stream_id: 1,
            total_len: 10,
            offset: 4,
            data: b"efghij"
        })
        .unwrap(),
        4..10
    );
    assert!(seq.is_complete());
    assert!(ChunkSequence::start(&Chunk { offset: 1, ..first }, 100).is_err());
    assert!(ChunkSequence::start(&first, 9).is_err());
    assert!(ChunkSequence::start(
        &Chunk {
            total_len: 0,
            data: b"",
            ..first
        },
        9
    )
    .is_err());
}

#[test]
fn config_round_trips() {
    let config = DeviceConfig {
        max_content_len: 1 << 24,
        max_chunk_len: 65536,
        queue_sizes: [64, 256, 64],
    };
    assert_eq!(DeviceConfig::parse(&config.encode()), Ok(config));
    assert!(DeviceConfig::parse(&config.encode()[..15]).is_err());
}

/// A seeded mutation loop over valid encodings: no input may panic, and whatever parses must
/// re-encode to the same bytes (the format has one encoding per value).
#[test]
fn mutated_inputs_never_panic_and_accepted_ones_are_canonical() {
    let mut state = 0x5EE0_5EE0_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for message in samples() {
        let (buf, len) = encode(&message, 3);
        for _ in 0..3000 {
            let mut m = buf;
            for _ in 0..1 + next() % 3 {
                let at = (next() % len as u64) as usize;
                m[at] = next() as u8;
            }
            let cut = len - (next() % 4) as usize;
            if let Ok((header, parsed)) = parse_message(&m[..cut]) {
                let mut again = [0u8; 512];
                let n = parsed.encode(header.cookie, &mut again).unwrap();
                assert_eq!(&again[..n], &m[..n]);
            }
            let _ = BundleHeader::parse_bundle(&m[..cut]);
            let _ = ManifestHeader::parse_manifest(&m[..cut]);
        }
    }
}

#[test]
fn a_chunk_head_is_what_encode_writes_before_the_data() {
    let mut data = [0u8; 200];
    for (i, b) in data.iter_mut().enumerate() {
        *b = i as u8;
    }
    for (offset, len) in [(0u32, 1usize), (0, 200), (50, 100), (199, 1)] {
        let chunk = Chunk {
            stream_id: 0x0102_0304_0506_0708,
            total_len: 250,
            offset,
            data: &data[..len],
        };
        let mut whole = [0u8; 300];
        let n = Message::Chunk(chunk).encode(9, &mut whole).unwrap();
        let head = chunk.encode_head(9).unwrap();
        assert_eq!(
            &whole[..Chunk::HEAD_LEN],
            &head[..],
            "offset {offset} len {len}"
        );
        assert_eq!(&whole[Chunk::HEAD_LEN..n], chunk.data);
        assert_eq!(parse_message(&whole[..n]).unwrap().1, Message::Chunk(chunk));
    }
    // Past its object: refused, as encode refuses it.
    let beyond = Chunk {
        stream_id: 1,
        total_len: 3,
        offset: 1,
        data: b"abc",
    };
    assert!(matches!(
        beyond.encode_head(0),
        Err(WireError::TooLarge { .. })
    ));
}
