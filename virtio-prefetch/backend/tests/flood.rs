//! A hostile guest floods ctrlq: 100 000 messages (demands and reports) over a real vhost-user
//! connection, without ever draining its staging buffers, while nobody reads the backend's
//! events. Every message is answered, the backend holds at most its stated number of queued
//! items, and the process's memory grows by less than [`RSS_BOUND_KIB`].

#[path = "../benches/driver/mod.rs"]
mod driver;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use p384::ecdsa::SigningKey;
use see_prefetch_backend::{
    store::{ResourceStore, StoreError, StoredResource},
    Backend, BackendConfig, DEMAND_BURST, EVENT_QUEUE, MAX_DEMANDS,
};
use virtio_prefetch_wire::{Demand, Message, Report, ReportKind, ResourceKind, Status};

/// Messages the guest sends.
const FLOOD: usize = 100_000;
/// The stated bound: the flood may grow the process's resident memory by at most this much
/// (the queues it can fill hold at most [`EVENT_QUEUE`] events and [`MAX_DEMANDS`] demands).
const RSS_BOUND_KIB: u64 = 32 * 1024;

struct Resources(BTreeMap<u64, StoredResource>);

impl ResourceStore for Resources {
    fn get(&self, id: u64, min_version: u64) -> Result<StoredResource, StoreError> {
        self.0
            .get(&id)
            .filter(|r| r.version >= min_version)
            .cloned()
            .ok_or(StoreError::Unknown { id, min_version })
    }

    fn get_version(&self, id: u64, version: u64) -> Result<StoredResource, StoreError> {
        self.get(id, version)
    }

    fn size_of(&self, id: u64) -> Result<u64, StoreError> {
        self.0
            .get(&id)
            .map(|r| r.content.len() as u64)
            .ok_or(StoreError::Unknown { id, min_version: 0 })
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[test]
fn a_flood_of_demands_and_reports_stays_bounded() {
    let resources = (1..=16u64)
        .map(|id| {
            let r = StoredResource::new(id, 1, ResourceKind::Data, 1, vec![id as u8; 8 * 1024]);
            (id, r)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("backend.sock");
    let mut key = [9u8; 48];
    key[0] = 2;
    let config = BackendConfig::new(
        &socket,
        Arc::new(Resources(resources)),
        SigningKey::from_slice(&key).unwrap(),
    );
    let backend = Backend::spawn(config).unwrap();
    let mut driver = driver::Driver::connect(&socket);
    driver.hello();
    let before = rss_kib();

    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..FLOOD {
        let message = if i % 2 == 0 {
            Message::Demand(Demand {
                app_id: 1,
                task_id: i as u64,
                resource_id: 1 + (i as u64 / 2) % 16,
                min_version: 0,
            })
        } else {
            Message::Report(Report {
                kind: ReportKind::Miss,
                reason: None,
                app_id: 1,
                task_id: i as u64,
                resource_id: 1,
                version: 1,
                latency_ns: 1,
            })
        };
        let status = driver.control(message, 1 + i as u32);
        *answers.entry(format!("{status:?}")).or_default() += 1;
    }

    let grown = rss_kib().saturating_sub(before);
    let stats = backend.stats();
    eprintln!("answers {answers:?}; RSS grew by {grown} KiB; {stats:?}");
    assert_eq!(
        answers.values().sum::<usize>(),
        FLOOD,
        "every message answered"
    );
    assert_eq!(
        answers.get("Ok").copied().unwrap_or(0) as u64,
        stats.demands + stats.reports
    );
    assert_eq!(stats.reports as usize, FLOOD / 2);
    assert_eq!(stats.demands + stats.demands_refused, FLOOD as u64 / 2);
    // Staging never drains, so at most MAX_DEMANDS demands (plus those already delivered into
    // the 8 staging buffers and the delivery slots) are ever taken.
    assert!(
        stats.demands <= (MAX_DEMANDS + 16) as u64,
        "{} demands taken",
        stats.demands
    );
    assert!(stats.demands_rate_limited > 0 || FLOOD / 2 <= DEMAND_BURST as usize);
    // Nobody read the events: the channel filled and the rest were dropped and counted.
    assert!(stats.events_dropped > 0, "{stats:?}");
    let mut queued = 0;
    while backend.next_event(Duration::ZERO).is_some() {
        queued += 1;
    }
    assert!(queued <= EVENT_QUEUE, "{queued} events queued");
    assert!(
        grown < RSS_BOUND_KIB,
        "the flood grew the process by {grown} KiB (bound {RSS_BOUND_KIB} KiB)"
    );
    // The device still serves: a report after the flood is answered Ok.
    let report = Message::Report(Report {
        kind: ReportKind::Miss,
        reason: None,
        app_id: 1,
        task_id: 0,
        resource_id: 1,
        version: 1,
        latency_ns: 1,
    });
    assert_eq!(driver.control(report, 7), Status::Ok);
    assert!(backend.is_running());
}
