//! The fuzz targets' seed corpora (`fuzz/seeds/<target>/`): one valid input per structure, so
//! a short fuzz run on a fresh machine starts from inputs that pass the magic and length
//! checks. This test keeps them valid as the format evolves; with `SEE_WRITE_FUZZ_SEEDS=1` it
//! rewrites them from the encoders first.

extern crate std;

use std::path::{Path, PathBuf};
use std::vec::Vec;
use std::{format, fs, vec};

use crate::*;

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds")
}

/// Every seed: target, file name, bytes.
fn seeds() -> Vec<(&'static str, std::string::String, Vec<u8>)> {
    let tasks = [TaskTiming {
        task_id: 1,
        claim_ns: 2,
        fetch_ns: 3,
        work_ns: 4,
        hits: 5,
        misses: 6,
        result: 7,
    }];
    let messages = [
        Message::Request(Request {
            request_id: 1,
            session_id: 2,
            app_id: 3,
            request_type: 4,
            args: b"key=value",
        }),
        Message::Evict(Evict {
            app_id: 1,
            resource_id: 3,
        }),
        Message::Chunk(Chunk {
            stream_id: 1,
            total_len: 8,
            offset: 0,
            data: b"SEEB",
        }),
        Message::Hello(Hello {
            nonce: [9; NONCE_LEN],
            epoch: 1,
            driver_version: 1,
            staging_buffers: 64,
        }),
        Message::Demand(Demand {
            app_id: 1,
            task_id: 2,
            resource_id: 3,
            min_version: 0,
        }),
        Message::Report(Report {
            kind: ReportKind::Reject,
            reason: Some(RejectReason::Replay),
            app_id: 1,
            task_id: 2,
            resource_id: 3,
            version: 4,
            latency_ns: 5,
        }),
        Message::Complete(Complete {
            request_id: 1,
            status: 0,
            total_ns: 7,
            tasks: TaskTimings::Slice(&tasks),
        }),
        Message::Ack(Ack {
            status: Status::Ok,
            detail: 300,
        }),
    ];
    let mut out = Vec::new();
    for message in &messages {
        let mut buf = vec![0u8; message.encoded_len()];
        message.encode(1, &mut buf).unwrap();
        let name = format!("{:?}", message.kind()).to_lowercase();
        out.push(("wire_message", name.clone(), buf.clone()));
        out.push(("wire_header", name.clone(), buf.clone()));
        // The first byte picks the kind by its index in MessageKind::ALL.
        let index = MessageKind::ALL.iter().position(|k| *k == message.kind());
        let mut payload = vec![index.unwrap() as u8];
        payload.extend_from_slice(&buf[MessageHeader::LEN..]);
        out.push(("wire_payload", name, payload));
    }
    let bundle = BundleHeader {
        flags: BundleFlags::PREFETCHED,
        kind: ResourceKind::Data,
        app_id: 1,
        task_id: 2,
        resource_id: 3,
        resource_version: 4,
        content_len: 4,
        tree_root: [5; DIGEST_LEN],
        session_nonce: [6; NONCE_LEN],
        epoch: 1,
        seq: 1,
        demand_cookie: 0,
        signature: [7; SIGNATURE_LEN],
    };
    // Header, the one-chunk digest list, content (the digest is not checked by the parser).
    let mut buf = vec![0u8; BundleHeader::LEN + TREE_DIGEST_LEN + 4];
    bundle.encode(&mut buf).unwrap();
    buf[BundleHeader::LEN..BundleHeader::LEN + TREE_DIGEST_LEN].fill(8);
    buf[BundleHeader::LEN + TREE_DIGEST_LEN..].copy_from_slice(b"data");
    out.push(("wire_bundle", "bundle".into(), buf));
    let manifest = ManifestHeader {
        count: 2,
        session_nonce: [6; NONCE_LEN],
        epoch: 1,
        seq: 2,
        signature: [7; SIGNATURE_LEN],
    };
    let mut buf = vec![0u8; ManifestHeader::LEN + 2 * DIGEST_LEN];
    manifest.encode(&[[1; 48], [2; 48]], &mut buf).unwrap();
    out.push(("wire_manifest", "manifest".into(), buf));
    let floors = FloorsHeader {
        count: 2,
        session_nonce: [6; NONCE_LEN],
        epoch: 1,
        serial: 3,
        issued_at: 1_700_000_000,
        expires_at: 1_700_086_400,
        signature: [7; SIGNATURE_LEN],
    };
    let entries = [
        Floor {
            resource_id: 1,
            min_version: 2,
        },
        Floor {
            resource_id: 5,
            min_version: 1,
        },
    ];
    let mut buf = vec![0u8; FloorsHeader::LEN + 2 * FLOOR_ENTRY_LEN];
    floors.encode(&entries, &mut buf).unwrap();
    out.push(("wire_floors", "floors".into(), buf));
    let config = DeviceConfig {
        max_content_len: 16 << 20,
        max_chunk_len: 64 << 10,
        queue_sizes: [64, 256, 64],
    };
    out.push(("wire_config", "config".into(), config.encode().to_vec()));
    // Reassembler input (decoded by the target, see its docs): control 4 (a total follows),
    // total 8, salt 0, length 4; then control 32 (run to the end of the object), salt 4.
    let reassembly = [4u8, 8, 0, 0, 4, 32, 4].to_vec();
    out.push(("wire_reassembler", "two_chunks".into(), reassembly));
    // Interleaving (SPEC section 5: one object at a time): stream 0 starts an object of 8
    // (control 4, total 8, salt 0, length 4); stream 1 continues at offset 4 (control 1, salt
    // 0, length 4), refused and dropping the object; stream 0 starts again and completes it in
    // one chunk (control 44: a total, an explicit offset 0, salt 0, run to the end).
    let interleaved = [4u8, 8, 0, 0, 4, 1, 0, 4, 44, 8, 0, 0, 0, 0].to_vec();
    out.push(("wire_reassembler", "interleaved".into(), interleaved));
    // The chunk tree: control bytes (content length 0x020005 = two tree chunks and 5 bytes,
    // transport pieces of 1 + 250 x 4 bytes, an operation, where it applies), then the bytes
    // the content is stretched from. Operation 0 leaves the bundle intact, 1 flips a bit,
    // 3 swaps the first two chunks.
    for (name, op) in [("intact", 0u8), ("flipped_bit", 1), ("swapped", 3)] {
        let mut tree = [5u8, 0, 2, 250, 0, op, 7, 0].to_vec();
        tree.extend_from_slice(b"SEE-PTO chunk tree seed");
        out.push(("wire_tree", name.into(), tree));
    }
    out
}

/// The parser each target fuzzes, as a yes/no on one input.
fn accepted(target: &str, data: &[u8]) -> bool {
    match target {
        "wire_message" => parse_message(data).is_ok(),
        "wire_header" => MessageHeader::parse(data).is_ok(),
        "wire_payload" => data.split_first().is_some_and(|(&pick, payload)| {
            let kind = MessageKind::ALL[pick as usize % MessageKind::ALL.len()];
            Message::parse_payload(kind, payload).is_ok()
        }),
        "wire_bundle" => BundleHeader::parse_bundle(data).is_ok(),
        "wire_manifest" => ManifestHeader::parse_manifest(data).is_ok(),
        "wire_floors" => FloorsHeader::parse_floors(data).is_ok(),
        "wire_config" => DeviceConfig::parse(data).is_ok(),
        // Control bytes, then content: any input of at least 8 bytes is a case.
        "wire_tree" => data.len() >= 8,
        // Decoded into chunks by the target itself; the first chunk must start an object.
        "wire_reassembler" => data.first().is_some_and(|&control| control & 4 != 0),
        other => panic!("no parser known for fuzz target {other}"),
    }
}

#[test]
fn fuzz_seeds_exist_and_are_accepted_by_their_parsers() {
    let dir = seeds_dir();
    if std::env::var_os("SEE_WRITE_FUZZ_SEEDS").is_some() {
        for (target, name, bytes) in seeds() {
            fs::create_dir_all(dir.join(target)).unwrap();
            fs::write(dir.join(target).join(name), bytes).unwrap();
        }
    }
    for (target, name, bytes) in seeds() {
        let path = dir.join(target).join(&name);
        let on_disk = fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; regenerate with SEE_WRITE_FUZZ_SEEDS=1 cargo test -p \
                 virtio-prefetch-wire seeds",
                path.display()
            )
        });
        assert_eq!(on_disk, bytes, "{} is stale", path.display());
        assert!(accepted(target, &on_disk), "{} is refused", path.display());
    }
}
