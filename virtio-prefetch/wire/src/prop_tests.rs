//! Property-style round trips over random field values (a seeded xorshift, so a failure
//! reproduces): every message, bundle header and manifest the encoders accept parses back to
//! the same value, and the encoded length is what `encoded_len` promised.

use crate::*;

struct Rng(u64);

impl Rng {
    fn u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn u32(&mut self) -> u32 {
        self.u64() as u32
    }
    fn below(&mut self, n: usize) -> usize {
        (self.u64() % n as u64) as usize
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        core::array::from_fn(|_| self.u64() as u8)
    }
}

fn random_message<'a>(rng: &mut Rng, bytes: &'a [u8], tasks: &'a [TaskTiming]) -> Message<'a> {
    match rng.below(8) {
        0 => Message::Request(Request {
            request_id: rng.u64(),
            session_id: rng.u64(),
            app_id: rng.u32(),
            request_type: rng.u32(),
            args: &bytes[..rng.below(MAX_REQUEST_ARGS as usize + 1)],
        }),
        1 => {
            let data = &bytes[..rng.below(bytes.len() + 1)];
            let offset = rng.u32() / 2;
            let total_len = offset + data.len() as u32 + rng.u32() / 4;
            Message::Chunk(Chunk {
                stream_id: rng.u64(),
                total_len,
                offset,
                data,
            })
        }
        2 => Message::Hello(Hello {
            nonce: rng.bytes(),
            epoch: rng.u64(),
            driver_version: rng.u32(),
            staging_buffers: rng.u32(),
        }),
        3 => Message::Demand(Demand {
            app_id: rng.u32(),
            task_id: rng.u64(),
            resource_id: rng.u64(),
            min_version: rng.u64(),
        }),
        4 => {
            let kind = ReportKind::ALL[rng.below(ReportKind::ALL.len())];
            let reason = (kind == ReportKind::Reject)
                .then(|| RejectReason::ALL[rng.below(RejectReason::ALL.len())]);
            Message::Report(Report {
                kind,
                reason,
                app_id: rng.u32(),
                task_id: rng.u64(),
                resource_id: rng.u64(),
                version: rng.u64(),
                latency_ns: rng.u64(),
            })
        }
        6 => Message::Evict(Evict {
            app_id: rng.u32(),
            resource_id: rng.u64(),
        }),
        5 => Message::Complete(Complete {
            request_id: rng.u64(),
            status: rng.u32(),
            total_ns: rng.u64(),
            tasks: TaskTimings::Slice(&tasks[..rng.below(tasks.len() + 1)]),
        }),
        _ => Message::Ack(Ack {
            status: Status::ALL[rng.below(Status::ALL.len())],
            detail: rng.u32(),
        }),
    }
}

#[test]
fn random_messages_round_trip() {
    let mut rng = Rng(0x5EE0_0001);
    let bytes: [u8; 4096] = rng.bytes();
    let tasks: [TaskTiming; MAX_COMPLETE_TASKS as usize] = core::array::from_fn(|i| TaskTiming {
        task_id: i as u64,
        claim_ns: rng.u64(),
        fetch_ns: rng.u64(),
        work_ns: rng.u64(),
        hits: rng.u32(),
        misses: rng.u32(),
        result: rng.u64(),
    });
    let mut buf = [0u8; 8192];
    let mut seen = [0usize; 8];
    for _ in 0..5_000 {
        let message = random_message(&mut rng, &bytes, &tasks);
        let cookie = rng.u32();
        let n = message.encode(cookie, &mut buf).unwrap();
        assert_eq!(n, message.encoded_len());
        // Trailing bytes of the carrying buffer are not part of the message.
        let (header, parsed) = parse_message(&buf[..n + rng.below(64)]).unwrap();
        assert_eq!((header.kind, header.cookie), (message.kind(), cookie));
        match (parsed, message) {
            (Message::Complete(a), Message::Complete(b)) => {
                assert_eq!(
                    (a.request_id, a.status, a.total_ns),
                    (b.request_id, b.status, b.total_ns)
                );
                assert!(a.tasks.iter().eq(b.tasks.iter()));
            }
            (a, b) => assert_eq!(a, b),
        }
        seen[MessageKind::ALL
            .iter()
            .position(|k| *k == message.kind())
            .unwrap()] += 1;
    }
    assert!(seen.iter().all(|&n| n > 500), "{seen:?}");
}

#[test]
fn random_bundles_and_manifests_round_trip() {
    let mut rng = Rng(0x5EE0_0002);
    let entries: [[u8; DIGEST_LEN]; 32] = core::array::from_fn(|_| rng.bytes());
    let mut buf = [0u8; ManifestHeader::LEN + 32 * DIGEST_LEN];
    for _ in 0..2_000 {
        let header = BundleHeader {
            flags: BundleFlags::from_bits(rng.u32() as u16 & 7).unwrap(),
            kind: [ResourceKind::Code, ResourceKind::Data][rng.below(2)],
            app_id: rng.u32(),
            task_id: rng.u64(),
            resource_id: rng.u64(),
            resource_version: rng.u64(),
            content_len: rng.u64() % (MAX_CONTENT_LEN + 1),
            tree_root: rng.bytes(),
            session_nonce: rng.bytes(),
            epoch: rng.u64(),
            seq: rng.u64(),
            demand_cookie: rng.u32(),
            signature: rng.bytes(),
        };
        assert_eq!(header.encode(&mut buf), Ok(BundleHeader::LEN));
        assert_eq!(BundleHeader::parse(&buf[..BundleHeader::LEN]), Ok(header));
        let tbs = header.to_be_signed();
        assert_eq!(&tbs[..BUNDLE_CONTEXT.len()], BUNDLE_CONTEXT);

        let count = rng.below(entries.len() + 1);
        let manifest = ManifestHeader {
            count: count as u32,
            session_nonce: rng.bytes(),
            epoch: rng.u64(),
            seq: rng.u64(),
            signature: rng.bytes(),
        };
        let n = manifest.encode(&entries[..count], &mut buf).unwrap();
        let (parsed, raw) = ManifestHeader::parse_manifest(&buf[..n]).unwrap();
        assert_eq!(parsed, manifest);
        for (i, entry) in entries[..count].iter().enumerate() {
            assert_eq!(ManifestHeader::entry(raw, i), Some(entry));
        }
    }
}
