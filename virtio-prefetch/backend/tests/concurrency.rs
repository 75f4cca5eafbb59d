//! The device thread does not wait on the store: with large prefetches stuck in a slow origin
//! (a store whose fetches block until the test releases them), a dispatched request and a ctrlq
//! demand still get through, and once released the prefetches follow with higher sequence
//! numbers. The tests assert the order of events, never a duration.

#[path = "../benches/driver/mod.rs"]
mod driver;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::Duration,
};

use p384::ecdsa::SigningKey;
use see_prefetch_backend::{
    store::{ResourceStore, StoreError, StoredResource},
    Backend, BackendConfig, PrefetchOrder, Request,
};
use virtio_prefetch_wire::{parse_message, BundleFlags, BundleHeader, Message, ResourceKind};

/// A hung test fails after this; no assertion depends on it.
const LIMIT: Duration = Duration::from_secs(30);

fn key() -> SigningKey {
    let mut bytes = [8u8; 48];
    bytes[0] = 3;
    SigningKey::from_slice(&bytes).unwrap()
}

#[derive(Default)]
struct Gates {
    resources: BTreeMap<u64, StoredResource>,
    closed: bool,
    gated: BTreeSet<u64>,
    waiting: usize,
}

/// Resources in memory; fetches of gated resources block while the gate is closed.
#[derive(Default)]
struct SlowOrigin {
    gates: Mutex<Gates>,
    changed: Condvar,
}

impl SlowOrigin {
    fn gates(&self) -> MutexGuard<'_, Gates> {
        self.gates.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, id: u64, content: Vec<u8>, gated: bool) {
        let mut g = self.gates();
        g.resources.insert(
            id,
            StoredResource::new(id, 1, ResourceKind::Data, 1, content),
        );
        if gated {
            g.gated.insert(id);
        }
    }

    /// Waits until `n` fetches are blocked at the gate.
    fn wait_blocked(&self, n: usize) {
        let g = self.gates();
        let (_g, t) = self
            .changed
            .wait_timeout_while(g, LIMIT, |g| g.waiting < n)
            .unwrap();
        assert!(!t.timed_out(), "{n} fetches never reached the origin");
    }

    fn blocked(&self) -> usize {
        self.gates().waiting
    }

    fn release(&self) {
        self.gates().closed = false;
        self.changed.notify_all();
    }
}

impl ResourceStore for SlowOrigin {
    fn get(&self, id: u64, min_version: u64) -> Result<StoredResource, StoreError> {
        let mut g = self.gates();
        if g.gated.contains(&id) {
            g.waiting += 1;
            self.changed.notify_all();
            g = self.changed.wait_while(g, |g| g.closed).unwrap();
            g.waiting -= 1;
        }
        g.resources
            .get(&id)
            .filter(|r| r.version >= min_version)
            .cloned()
            .ok_or(StoreError::Unknown { id, min_version })
    }

    fn get_version(&self, id: u64, version: u64) -> Result<StoredResource, StoreError> {
        self.get(id, version)
    }

    fn size_of(&self, id: u64) -> Result<u64, StoreError> {
        let g = self.gates();
        let r = g.resources.get(&id);
        r.map(|r| r.content.len() as u64)
            .ok_or(StoreError::Unknown { id, min_version: 0 })
    }
}

#[test]
fn dispatch_and_demand_get_through_while_large_prefetches_are_stuck() {
    let origin = Arc::new(SlowOrigin::default());
    origin.gates().closed = true;
    // Large bundles (1 MiB, not batched), all stuck at the origin.
    for id in 1..=6u64 {
        origin.add(id, vec![id as u8; 1 << 20], true);
    }
    origin.add(9, b"small and demanded".to_vec(), false);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("backend.sock");
    let mut config = BackendConfig::new(&socket, origin.clone(), key());
    config.fetch_workers = 4;
    config.max_chunk_len = 64 * 1024;
    let backend = Backend::spawn(config).unwrap();
    let mut driver = driver::Driver::connect(&socket);
    driver.hello();
    for id in 1..=6u64 {
        backend
            .prefetch(PrefetchOrder {
                app_id: 1,
                task_id: 10 + id,
                resource_id: id,
            })
            .unwrap();
    }
    // Three of four workers sit in the origin (prefetches leave one to demands).
    origin.wait_blocked(3);

    backend
        .dispatch(Request {
            request_id: 42,
            session_id: 1,
            app_id: 1,
            request_type: 3,
            args: Vec::new(),
        })
        .unwrap();
    match parse_message(&driver.request()).unwrap() {
        (_, Message::Request(r)) => assert_eq!(r.request_id, 42),
        other => panic!("expected the request, got {other:?}"),
    }
    let bundle = driver.demand(9, 77);
    let (header, body) = BundleHeader::parse_bundle(&bundle).unwrap();
    assert_eq!(body, b"small and demanded");
    assert_eq!((header.demand_cookie, header.seq), (77, 1));
    assert_eq!(
        origin.blocked(),
        3,
        "the request and the demand went through while the prefetches were still stuck"
    );
    let stats = backend.stats();
    assert_eq!((stats.requests, stats.bundles), (1, 1));

    origin.release();
    let mut last_seq = header.seq;
    let mut ids = Vec::new();
    for _ in 1..=6 {
        let object = driver.receive();
        let (h, body) = BundleHeader::parse_bundle(&object).unwrap();
        assert!(h.flags.contains(BundleFlags::PREFETCHED));
        assert!(h.seq > last_seq, "sequence numbers rise in delivery order");
        assert_eq!(body.len(), 1 << 20);
        last_seq = h.seq;
        ids.push(h.resource_id);
    }
    assert_eq!(
        ids,
        [1, 2, 3, 4, 5, 6],
        "prefetches arrive in the order given"
    );
}

#[test]
fn a_demand_overtakes_queued_prefetches_once_fetched() {
    let origin = Arc::new(SlowOrigin::default());
    origin.gates().closed = true;
    origin.add(1, vec![1; 200_000], true);
    origin.add(2, vec![2; 300], false);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("backend.sock");
    let mut config = BackendConfig::new(&socket, origin.clone(), key());
    config.fetch_workers = 2;
    let backend = Backend::spawn(config).unwrap();
    let mut driver = driver::Driver::connect(&socket);
    driver.hello();
    backend
        .prefetch(PrefetchOrder {
            app_id: 1,
            task_id: 5,
            resource_id: 1,
        })
        .unwrap();
    origin.wait_blocked(1);
    // With two workers the prefetch holds one; the demand takes the other and is delivered
    // first, although the prefetch was ordered first.
    let first = driver.demand(2, 3);
    let (h, _) = BundleHeader::parse_bundle(&first).unwrap();
    assert_eq!((h.resource_id, h.demand_cookie, h.seq), (2, 3, 1));
    origin.release();
    let (h, _) = BundleHeader::parse_bundle(&driver.receive()).unwrap();
    assert_eq!((h.resource_id, h.demand_cookie, h.seq), (1, 0, 2));
}

#[test]
fn a_pool_size_out_of_range_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BackendConfig::new(
        dir.path().join("s.sock"),
        Arc::new(SlowOrigin::default()),
        key(),
    );
    config.fetch_workers = 0;
    let err = Backend::spawn(config).unwrap_err();
    assert!(err.to_string().contains("fetch_workers"), "{err}");
}
