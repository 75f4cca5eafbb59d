//! Host-side cost of one bundle at 4 KiB, 64 KiB and 1 MiB: the parts (SHA-384 of the content,
//! its chunk tree, reading the object and a whole store read, the ECDSA P-384 signature, serialising the bundle, chunking it into 64 KiB staging buffers of
//! a memfd-backed region), 16 bundles under one batch manifest (F_MANIFEST), and the whole path
//! through the real daemon (a vhost-user frontend over a socket, a demand on ctrlq, the
//! bundle's chunks through stagingq, waiting on the call eventfd).
//!
//! `cargo bench -p see-prefetch-backend --bench host_cost` prints one line per figure (median of
//! the runs, and the spread). The daemon figures include the driver's side of the rings (this
//! process reading the chunks back), so they bound the backend's cost from above.

mod driver;

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use p384::ecdsa::SigningKey;
use see_prefetch_backend::{
    manifest::sign_batch,
    signer::{encode_bundle, BundleSpec, Session, Signer},
    store::{DiskStore, ResourceStore, StoredResource},
    Backend, BackendConfig,
};
use sha2::{Digest, Sha384};
use virtio_prefetch_wire::{Chunk, Message, MessageHeader, ResourceKind};
use vm_memory::{Bytes, GuestAddress};

const SIZES: [(usize, &str); 3] = [(4 << 10, "4 KiB"), (64 << 10, "64 KiB"), (1 << 20, "1 MiB")];
const CHUNK: usize = 64 << 10;

fn key() -> SigningKey {
    let mut bytes = [9u8; 48];
    bytes[0] = 3;
    SigningKey::from_slice(&bytes).expect("a valid P-384 scalar")
}

/// Runs `f` `runs` times (after two warm-up runs) and prints the median and the range.
fn measure(what: &str, runs: usize, bytes: usize, mut f: impl FnMut()) -> Duration {
    f();
    f();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    let median = times[runs / 2];
    let mib_s = bytes as f64 / (1 << 20) as f64 / median.as_secs_f64();
    println!(
        "{what:<44} median {:>9.1} us  (min {:>9.1}, max {:>9.1})  {mib_s:>8.1} MiB/s",
        median.as_secs_f64() * 1e6,
        times[0].as_secs_f64() * 1e6,
        times[runs - 1].as_secs_f64() * 1e6,
    );
    median
}

fn parts(size: usize, label: &str) {
    let resource = StoredResource::new(
        1,
        1,
        ResourceKind::Data,
        1,
        (0..size).map(|i| (i * 13 % 251) as u8).collect(),
    );
    let session = Session {
        nonce: [7; 32],
        epoch: 1,
    };
    let mut signer = Signer::new(key());
    let spec = BundleSpec {
        resource: &resource,
        task_id: 1,
        demand_cookie: 0,
    };
    let runs = if size >= 1 << 20 { 21 } else { 101 };
    measure(
        &format!("{label}: SHA-384 of the content"),
        runs,
        size,
        || {
            black_box(Sha384::digest(black_box(&resource.content)));
        },
    );
    measure(
        &format!("{label}: chunk tree (SHA-256 per 64 KiB, SHA-384 root)"),
        runs,
        size,
        || {
            black_box(see_prefetch_backend::tree::ChunkTree::of(black_box(
                &resource.content,
            )));
        },
    );
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = DiskStore::open(dir.path()).expect("a store");
    store
        .add(1, 1, ResourceKind::Data, 1, &resource.content)
        .expect("added");
    let object = dir
        .path()
        .join("objects")
        .join(see_prefetch_backend::store::hex(&resource.sha384));
    measure(
        &format!("{label}: read the object (page cache)"),
        runs,
        size,
        || {
            black_box(std::fs::read(black_box(&object)).expect("read"));
        },
    );
    measure(
        &format!("{label}: store get (read, tree, checked)"),
        runs,
        size,
        || {
            black_box(store.get(1, 0).expect("got"));
        },
    );
    let mut header = signer.header(&spec, &session);
    measure(&format!("{label}: ECDSA P-384 sign"), 41, 0, || {
        signer.sign(black_box(&mut header));
    });
    measure(
        &format!("{label}: serialise the bundle"),
        runs,
        size,
        || {
            black_box(encode_bundle(
                &header,
                &resource.tree.list,
                &resource.content,
            ));
        },
    );
    let bundle = encode_bundle(&header, &resource.tree.list, &resource.content);
    let mem = driver::shared_memory();
    let mut message = vec![0u8; MessageHeader::LEN + Chunk::FIXED_LEN + CHUNK];
    measure(
        &format!("{label}: chunk + write into staging buffers"),
        runs,
        size,
        || {
            let mut offset = 0;
            let mut at = driver::BASE + driver::BUF;
            while offset < bundle.len() {
                let end = (offset + CHUNK).min(bundle.len());
                let chunk = Message::Chunk(Chunk {
                    stream_id: 1,
                    total_len: bundle.len() as u32,
                    offset: offset as u32,
                    data: &bundle[offset..end],
                });
                let n = chunk.encode(0, &mut message).expect("chunk fits");
                mem.write_slice(&message[..n], GuestAddress(at))
                    .expect("inside the region");
                at += message.len() as u64;
                offset = end;
            }
        },
    );
    measure(
        &format!("{label}: whole (header + sign + serialise)"),
        41,
        size,
        || {
            let mut header = signer.header(&spec, &session);
            signer.sign(&mut header);
            black_box(encode_bundle(
                &header,
                &resource.tree.list,
                &resource.content,
            ));
        },
    );
}

/// One manifest over `BATCH` bundles: the per-bundle cost is the run's time / `BATCH`.
fn batched(size: usize, label: &str) {
    const BATCH: usize = 16;
    let resource = StoredResource::new(
        1,
        1,
        ResourceKind::Data,
        1,
        (0..size).map(|i| (i * 13 % 251) as u8).collect(),
    );
    let session = Session {
        nonce: [7; 32],
        epoch: 1,
    };
    let mut signer = Signer::new(key());
    let specs = vec![
        BundleSpec {
            resource: &resource,
            task_id: 1,
            demand_cookie: 0,
        };
        BATCH
    ];
    let runs = if size >= 1 << 20 { 11 } else { 41 };
    let whole = measure(
        &format!("{label}: manifest over {BATCH} bundles (whole batch)"),
        runs,
        size * BATCH,
        || {
            black_box(sign_batch(&mut signer, &session, &specs).expect("a batch"));
        },
    );
    println!(
        "{:<44} {:>16.1} us per bundle",
        format!("{label}: batched"),
        whole.as_secs_f64() * 1e6 / BATCH as f64
    );
}

fn through_the_daemon() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = DiskStore::open(dir.path().join("store")).expect("a store");
    for (i, &(size, _)) in SIZES.iter().enumerate() {
        let content: Vec<u8> = (0..size).map(|b| (b * 7 % 251) as u8).collect();
        store
            .add(i as u64 + 1, 1, ResourceKind::Data, 1, &content)
            .expect("added");
    }
    let socket = dir.path().join("bench.sock");
    let backend = Backend::spawn(BackendConfig::new(&socket, Arc::new(store), key()))
        .expect("backend started");
    let mut driver = driver::Driver::connect(&socket);
    driver.hello();
    let mut cookie = 1;
    for (i, &(size, label)) in SIZES.iter().enumerate() {
        let runs = if size >= 1 << 20 { 21 } else { 61 };
        measure(
            &format!("{label}: demand -> bundle through the daemon"),
            runs,
            size,
            || {
                let got = driver.demand(i as u64 + 1, cookie).len();
                cookie += 1;
                assert_eq!(got, size + 256, "the whole bundle arrived");
            },
        );
    }
    let stats = backend.stats();
    println!(
        "daemon: {} bundles, {} chunks, {} signatures, {} refused",
        stats.bundles, stats.chunks, stats.signatures, stats.refused_descriptors
    );
    backend.shutdown();
}

fn main() {
    // `cargo test --benches` runs this with --bench absent: keep that run short.
    let quick = !std::env::args().any(|a| a == "--bench");
    for &(size, label) in &SIZES {
        if quick && size > 4 << 10 {
            continue;
        }
        parts(size, label);
        batched(size, label);
    }
    through_the_daemon();
}
