//! The fetch pool against a slow origin (each fetch sleeps a fixed latency, as a remote object
//! store would take), through the real daemon and a vhost-user frontend: for 1, 2, 4 and 8 fetch
//! workers, 16 prefetches of 512 KiB are ordered, then a request is dispatched and a small
//! resource demanded while they stage. Prints the dispatch's and the demand's latency and the
//! time until all 16 prefetches are delivered.
//!
//! `cargo bench -p see-prefetch-backend --bench pool [-- LATENCY_MS]` (default 20 ms). With one
//! worker the demand waits behind the fetch in progress; with more, prefetches leave a worker to
//! demands and their latencies overlap. Wall-clock figures: run on a quiet machine.

mod driver;

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use p384::ecdsa::SigningKey;
use see_prefetch_backend::{
    store::{ResourceStore, StoreError, StoredResource},
    Backend, BackendConfig, PrefetchOrder, Request,
};
use virtio_prefetch_wire::ResourceKind;

const PREFETCHES: u64 = 16;
const SIZE: usize = 512 << 10;
const DEMANDED: u64 = 100;

fn key() -> SigningKey {
    let mut bytes = [9u8; 48];
    bytes[0] = 3;
    SigningKey::from_slice(&bytes).expect("a valid P-384 scalar")
}

/// Resources in memory behind a fixed latency per fetch (fetches overlap).
struct SlowOrigin {
    resources: BTreeMap<u64, StoredResource>,
    latency: Duration,
}

impl ResourceStore for SlowOrigin {
    fn get(&self, id: u64, min_version: u64) -> Result<StoredResource, StoreError> {
        // The modelled origin: this wait is what is measured.
        std::thread::sleep(self.latency);
        self.resources
            .get(&id)
            .filter(|r| r.version >= min_version)
            .cloned()
            .ok_or(StoreError::Unknown { id, min_version })
    }

    fn get_version(&self, id: u64, version: u64) -> Result<StoredResource, StoreError> {
        self.get(id, version)
    }

    fn size_of(&self, id: u64) -> Result<u64, StoreError> {
        self.resources
            .get(&id)
            .map(|r| r.content.len() as u64)
            .ok_or(StoreError::Unknown { id, min_version: 0 })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The backend with `workers` fetch workers over a slow origin, and a driver after Hello.
fn start(
    workers: usize,
    latency: Duration,
) -> (
    see_prefetch_backend::BackendHandle,
    driver::Driver,
    tempfile::TempDir,
) {
    let mut resources = BTreeMap::new();
    for id in 1..=PREFETCHES {
        let content = vec![id as u8; SIZE];
        resources.insert(
            id,
            StoredResource::new(id, 1, ResourceKind::Data, 1, content),
        );
    }
    let small = StoredResource::new(DEMANDED, 1, ResourceKind::Data, 1, vec![7; 4096]);
    resources.insert(DEMANDED, small);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let socket = dir.path().join("backend.sock");
    let origin = Arc::new(SlowOrigin { resources, latency });
    let mut config = BackendConfig::new(&socket, origin, key());
    config.fetch_workers = workers;
    config.max_chunk_len = 64 << 10;
    let backend = Backend::spawn(config).expect("the backend starts");
    let mut driver = driver::Driver::connect(&socket);
    driver.hello();
    (backend, driver, dir)
}

fn run(workers: usize, latency: Duration) {
    let (backend, mut driver, _dir) = start(workers, latency);
    let t0 = Instant::now();
    for id in 1..=PREFETCHES {
        backend
            .prefetch(PrefetchOrder {
                app_id: 1,
                task_id: id,
                resource_id: id,
            })
            .expect("ordered");
    }
    let sent = Instant::now();
    backend
        .dispatch(Request {
            request_id: 1,
            session_id: 1,
            app_id: 1,
            request_type: 1,
            args: Vec::new(),
        })
        .expect("dispatched");
    driver.request();
    let dispatch = sent.elapsed();
    for _ in 0..PREFETCHES {
        driver.receive();
    }
    let all = t0.elapsed();
    println!(
        "fetch_workers {workers:>2}: dispatch {:>8.2} ms   16 x 512 KiB prefetches delivered in {:>8.1} ms",
        ms(dispatch),
        ms(all),
    );
    backend.shutdown();
}

fn demand_latency(workers: usize, latency: Duration) {
    let (backend, mut driver, _dir) = start(workers, latency);
    for id in 1..=PREFETCHES {
        backend
            .prefetch(PrefetchOrder {
                app_id: 1,
                task_id: id,
                resource_id: id,
            })
            .expect("ordered");
    }
    let asked = Instant::now();
    let status = driver.control(
        virtio_prefetch_wire::Message::Demand(virtio_prefetch_wire::Demand {
            app_id: 1,
            task_id: 1,
            resource_id: DEMANDED,
            min_version: 0,
        }),
        9,
    );
    let acked = asked.elapsed();
    assert_eq!(status, virtio_prefetch_wire::Status::Ok);
    let mut before = 0;
    loop {
        let object = driver.receive();
        let (header, _) = virtio_prefetch_wire::BundleHeader::parse_bundle(&object)
            .expect("a bundle (512 KiB resources are not batched)");
        if header.demand_cookie == 9 {
            break;
        }
        before += 1;
    }
    let served = asked.elapsed();
    println!(
        "fetch_workers {workers:>2}: demand acked in {:>8.2} ms, served in {:>8.1} ms ({before} prefetches delivered first)",
        ms(acked),
        ms(served),
    );
    for _ in before..PREFETCHES {
        driver.receive();
    }
    backend.shutdown();
}

fn main() {
    let latency_ms: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let latency = Duration::from_millis(latency_ms);
    println!("origin latency {latency_ms} ms per fetch");
    for workers in [1, 2, 4, 8] {
        run(workers, latency);
    }
    for workers in [1, 2, 4, 8] {
        demand_latency(workers, latency);
    }
}
