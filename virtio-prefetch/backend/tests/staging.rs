//! The daemon's data path as a driver sees it, completions awaited on the call eventfd (the
//! irqfd the VMM would register): a 1 MiB demand arrives in 64 KiB chunks through eight staging
//! buffers the driver reposts, verifies and matches the store byte for byte, and every step was
//! signalled; prefetches queued together go out under one signed manifest (F_MANIFEST); a
//! dispatched request arrives on requestq; a guest report becomes an event.

#[path = "../benches/driver/mod.rs"]
mod driver;

use std::{sync::Arc, time::Duration};

use p384::ecdsa::{signature::Verifier, Signature, SigningKey, VerifyingKey};
use see_prefetch_backend::{
    store::DiskStore, Backend, BackendConfig, BackendEvent, BackendHandle, PrefetchOrder, Request,
};
use sha2::{Digest, Sha384};
use virtio_prefetch_wire::{
    parse_message, BundleFlags, BundleHeader, ManifestHeader, Message, RejectReason, Report,
    ReportKind, ResourceKind, Status,
};

fn key() -> SigningKey {
    let mut bytes = [6u8; 48];
    bytes[0] = 2;
    SigningKey::from_slice(&bytes).unwrap()
}

fn start(content: &[u8]) -> (BackendHandle, driver::Driver, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path().join("store")).unwrap();
    store.add(11, 2, ResourceKind::Code, 4, content).unwrap();
    let socket = dir.path().join("backend.sock");
    let mut config = BackendConfig::new(&socket, Arc::new(store), key());
    config.max_chunk_len = 64 * 1024; // the chunk count below assumes 64 KiB chunks
    let backend = Backend::spawn(config).unwrap();
    let mut driver = driver::Driver::connect(&socket);
    driver.hello();
    (backend, driver, dir)
}

#[test]
fn a_1_mib_demand_arrives_in_signalled_chunks_and_verifies() {
    let content: Vec<u8> = (0..1usize << 20).map(|i| (i * 31 % 253) as u8).collect();
    let (backend, mut driver, _dir) = start(&content);
    let after_hello = driver.interrupts();
    assert!(after_hello >= 1, "the Hello's Ack was signalled");
    let bundle = driver.demand(11, 77);
    let (header, body) = BundleHeader::parse_bundle(&bundle).unwrap();
    assert!(
        body == content.as_slice(),
        "the content arrived byte for byte"
    );
    assert_eq!(
        (header.app_id, header.resource_id, header.resource_version),
        (4, 11, 2)
    );
    assert_eq!(
        (header.task_id, header.demand_cookie, header.seq),
        (1, 77, 1)
    );
    VerifyingKey::from(&key())
        .verify(
            &header.to_be_signed(),
            &Signature::from_slice(&header.signature).unwrap(),
        )
        .expect("the bundle verifies under the PTO key");
    // 1 MiB + 256 bytes of header in 64 KiB chunks: 17 chunks, each in its own buffer; the
    // floors snapshot after Hello takes one more chunk and one more signature.
    let stats = backend.stats();
    assert_eq!((stats.chunks, stats.bundles, stats.signatures), (18, 1, 2));
    assert_eq!(stats.bytes, 1 << 20);
    assert!(
        driver.interrupts() > after_hello,
        "the Ack and the chunks were signalled on the call eventfd"
    );
    // A second demand gets the next sequence number.
    let again = driver.demand(11, 78);
    assert_eq!(BundleHeader::parse_bundle(&again).unwrap().0.seq, 2);
}

#[test]
fn an_evict_arrives_on_requestq_in_order_with_the_requests() {
    let (backend, mut driver, _dir) = start(b"tiny");
    backend
        .evict(see_prefetch_backend::Eviction {
            app_id: 4,
            resource_id: 11,
        })
        .unwrap();
    backend
        .dispatch(Request {
            request_id: 5,
            session_id: 6,
            app_id: 4,
            request_type: 2,
            args: Vec::new(),
        })
        .unwrap();
    match parse_message(&driver.request()).unwrap() {
        (_, Message::Evict(e)) => assert_eq!((e.app_id, e.resource_id), (4, 11)),
        other => panic!("expected an Evict, got {other:?}"),
    }
    match parse_message(&driver.request()).unwrap() {
        (_, Message::Request(r)) => assert_eq!(r.request_id, 5),
        other => panic!("expected a Request, got {other:?}"),
    }
    let stats = backend.stats();
    assert_eq!((stats.evicts, stats.requests), (1, 1));
}

#[test]
fn a_dispatched_request_arrives_and_a_report_becomes_an_event() {
    let (backend, mut driver, _dir) = start(b"tiny");
    backend
        .dispatch(Request {
            request_id: 5,
            session_id: 6,
            app_id: 4,
            request_type: 2,
            args: b"args".to_vec(),
        })
        .unwrap();
    let bytes = driver.request();
    match parse_message(&bytes).unwrap() {
        (_, Message::Request(r)) => assert_eq!(
            (r.request_id, r.session_id, r.app_id, r.request_type, r.args),
            (5, 6, 4, 2, &b"args"[..])
        ),
        other => panic!("expected a Request, got {other:?}"),
    }
    let report = Message::Report(Report {
        kind: ReportKind::Reject,
        reason: Some(RejectReason::DigestMismatch),
        app_id: 4,
        task_id: 9,
        resource_id: 11,
        version: 2,
        latency_ns: 1234,
    });
    assert_eq!(driver.control(report, 0), Status::Ok);
    let seen = backend.wait_for(Duration::from_secs(5), |e| match e {
        BackendEvent::Report {
            kind: ReportKind::Reject,
            reason: Some(RejectReason::DigestMismatch),
            task_id: 9,
            latency_ns: 1234,
            ..
        } => Some(()),
        _ => None,
    });
    assert!(seen.is_some(), "the report reached the API as an event");
    let stats = backend.stats();
    assert_eq!((stats.requests, stats.reports), (1, 1));
}

#[test]
fn queued_prefetches_go_out_under_one_verified_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path().join("store")).unwrap();
    let contents: Vec<Vec<u8>> = (1..=3u8).map(|i| vec![i; 5000 * usize::from(i)]).collect();
    for (i, content) in contents.iter().enumerate() {
        store
            .add(20 + i as u64, 1, ResourceKind::Data, 4, content)
            .unwrap();
    }
    let socket = dir.path().join("backend.sock");
    let backend = Backend::spawn(BackendConfig::new(&socket, Arc::new(store), key())).unwrap();
    let mut driver = driver::Driver::connect(&socket);
    for i in 0..3 {
        backend
            .prefetch(PrefetchOrder {
                app_id: 4,
                task_id: 30 + i,
                resource_id: 20 + i,
            })
            .unwrap();
    }
    driver.hello();
    let object = driver.receive();
    let (manifest, entries) = ManifestHeader::parse_manifest(&object).expect("a manifest first");
    assert_eq!((manifest.count, manifest.seq), (3, 1));
    let mut statement = manifest.tbs_prefix().to_vec();
    statement.extend_from_slice(entries);
    let vk = VerifyingKey::from(&key());
    vk.verify(
        &statement,
        &Signature::from_slice(&manifest.signature).unwrap(),
    )
    .expect("the manifest verifies under the PTO key");
    for (i, content) in contents.iter().enumerate() {
        let bytes = driver.receive();
        let (header, body) = BundleHeader::parse_bundle(&bytes).unwrap();
        assert_eq!(body, content.as_slice());
        assert_eq!(
            (header.task_id, header.resource_id, header.seq),
            (30 + i as u64, 20 + i as u64, 2 + i as u64)
        );
        assert!(header.flags.contains(BundleFlags::IN_MANIFEST));
        let digest: [u8; 48] = Sha384::digest(header.to_be_signed()).into();
        assert_eq!(ManifestHeader::entry(entries, i), Some(&digest));
    }
    // A demand after the batch is signed on its own, with the next sequence number.
    let bundle = driver.demand(21, 5);
    let (header, _) = BundleHeader::parse_bundle(&bundle).unwrap();
    assert_eq!((header.seq, header.demand_cookie), (5, 5));
    vk.verify(
        &header.to_be_signed(),
        &Signature::from_slice(&header.signature).unwrap(),
    )
    .expect("a demanded bundle carries its own signature");
    let stats = backend.stats();
    assert_eq!(
        (stats.manifests, stats.bundles, stats.signatures),
        (1, 4, 3),
        "one signature for the floors snapshot, one for the three prefetches, one for the demand"
    );
}
