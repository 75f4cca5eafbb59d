//! The verified cache (LRU within the budget, shared by an app's tasks, access control on every
//! claim, version floors) and the host's Evict, including hostile ones: unknown resources,
//! another app's resources, a resource a task is reading, a flood.

use super::*;

const TASK_A2: u64 = 11;
const RES3: u64 = 102;

/// A driver whose cache holds `budget` bytes; APP_A's tasks TASK_A and TASK_A2 may both claim
/// RES, RES2 and RES3; APP_B's TASK_B may claim RES_B.
fn cache_setup(budget: u64) -> (TestPlatform, Driver<TestPlatform>) {
    let dev = TestPlatform::new();
    let pubkey = dev.dev().key.verifying_key().to_sec1_bytes();
    let mut r = registry();
    for res in [RES, RES2, RES3] {
        r.allow(APP_A, TASK_A, res).unwrap();
        r.allow(APP_A, TASK_A2, res).unwrap();
    }
    let mut c = config(Completion::Interrupt);
    c.store_budget = budget;
    let d = Driver::new(dev.clone(), c, &pubkey, r).expect("driver up");
    dev.dev().irq = Some(d.interrupt_handle());
    (dev, d)
}

fn stage_for(dev: &TestPlatform, app: u32, task: u64, res: u64, version: u64, data: &[u8]) {
    let b = dev.dev().spec(app, task, res, version, data).build();
    dev.dev().deliver(&b);
}

/// Sends an Evict, polling first when no request buffer is posted.
fn evict(dev: &TestPlatform, d: &mut Driver<TestPlatform>, app: u32, res: u64) {
    if !dev.dev().send_evict(app, res) {
        d.poll();
        assert!(dev.dev().send_evict(app, res), "a request buffer reposted");
    }
    d.poll();
}

#[test]
fn cache_evicts_the_least_recently_used_within_the_budget() {
    let (dev, mut d) = cache_setup(250);
    stage(&dev, RES, 1, &content(100, 1));
    stage(&dev, RES2, 1, &content(100, 2));
    // Claiming RES makes RES2 the least recently used.
    assert_eq!(
        d.claim(APP_A, TASK_A, RES).unwrap().source,
        Source::Prefetched
    );
    stage(&dev, RES3, 1, &content(100, 3));
    d.poll();
    assert!(d.available(APP_A, TASK_A, RES));
    assert!(!d.available(APP_A, TASK_A, RES2), "the LRU entry went");
    assert!(d.available(APP_A, TASK_A, RES3));
    let c = d.counters();
    assert_eq!((c.accepted, c.evicted, c.hits), (3, 1, 1));
    d.flush();
    // ClaimHit (RES), then Evict (RES2).
    assert_eq!(dev.dev().report_kinds(), vec![1, 3]);
    // The claimed copy is still served, from the cache.
    let r = d.claim(APP_A, TASK_A, RES).unwrap();
    assert_eq!(
        (r.source, r.content.to_vec()),
        (Source::Cached, content(100, 1))
    );
    assert_eq!(d.counters().cache_hits, 1);
}

#[test]
fn cache_is_shared_by_an_apps_tasks_and_refused_to_other_apps() {
    let (dev, mut d) = cache_setup(4 << 20);
    let data = content(300, 9);
    stage(&dev, RES, 1, &data);
    stage_for(&dev, APP_B, TASK_B, RES_B, 1, &content(10, 1));
    // Sent for TASK_A, claimed first by TASK_A2 of the same app: a staged hit.
    let first = d.claim(APP_A, TASK_A2, RES).unwrap();
    assert_eq!((first.source, first.task_id), (Source::Prefetched, TASK_A2));
    let second = d.claim(APP_A, TASK_A, RES).unwrap();
    assert_eq!(second.source, Source::Cached);
    assert_eq!(second.content, data);
    // Another app never gets it, whatever task it names, and the entry stays.
    for task in [TASK_A, TASK_A2, TASK_B] {
        assert!(!d.available(APP_B, task, RES));
        assert!(matches!(
            d.claim(APP_B, task, RES),
            Err(ClaimError::AccessDenied { .. })
        ));
        assert!(matches!(
            d.claim_or_fetch(APP_B, task, RES, 0),
            Err(ClaimError::AccessDenied { .. })
        ));
    }
    // And APP_A cannot reach APP_B's cached resource.
    assert!(matches!(
        d.claim(APP_A, TASK_B, RES_B),
        Err(ClaimError::AccessDenied { .. })
    ));
    assert!(d.available(APP_A, TASK_A, RES));
    assert!(d.available(APP_B, TASK_B, RES_B));
}

#[test]
fn demanded_bundles_enter_the_cache() {
    let (dev, mut d) = cache_setup(4 << 20);
    let data = content(200, 4);
    dev.dev().serve(APP_A, TASK_A, RES, 1, &data);
    let r = d.claim_or_fetch(APP_A, TASK_A, RES, 0).unwrap();
    assert_eq!(
        (r.source, r.content.to_vec()),
        (Source::Demanded, data.clone())
    );
    let again = d.claim_or_fetch(APP_A, TASK_A2, RES, 0).unwrap();
    assert_eq!(again.source, Source::Cached);
    let c = d.counters();
    assert_eq!(
        (c.misses, c.demands_served, c.cache_hits, c.hits),
        (1, 1, 1, 0)
    );
    d.flush();
    // Miss, DemandServed, CacheHit.
    assert_eq!(dev.dev().report_kinds(), vec![2, 5, 6]);
}

#[test]
fn a_stale_version_is_refused_after_an_update() {
    let (dev, mut d) = cache_setup(4 << 20);
    stage(&dev, RES, 1, &content(50, 1));
    assert_eq!(d.claim(APP_A, TASK_A, RES).unwrap().version, 1);
    // The update arrives as a prefetch: it replaces the cached copy.
    stage(&dev, RES, 2, &content(50, 2));
    let r = d.claim(APP_A, TASK_A, RES).unwrap();
    assert_eq!((r.version, r.content.to_vec()), (2, content(50, 2)));
    // A task that needs version 3 never gets the cached version 2: it is dropped and
    // version 3 is demand-fetched.
    dev.dev().serve(APP_A, TASK_A, RES, 3, &content(50, 3));
    let r = d.claim_or_fetch(APP_A, TASK_A, RES, 3).unwrap();
    assert_eq!((r.version, r.source), (3, Source::Demanded));
    // The old bytes cannot come back: version 2 is now a rollback.
    stage(&dev, RES, 2, &content(50, 2));
    assert_eq!(rejected(&mut d, RejectReason::Rollback), 1);
    assert_eq!(d.claim(APP_A, TASK_A, RES).unwrap().version, 3);
}

#[test]
fn host_evict_drops_only_the_named_apps_entry() {
    let (dev, mut d) = cache_setup(4 << 20);
    stage(&dev, RES, 5, &content(40, 1));
    stage_for(&dev, APP_B, TASK_B, RES_B, 1, &content(40, 2));
    // Unknown resource, another app's resource (both ways), an app that does not exist.
    evict(&dev, &mut d, APP_A, 999);
    evict(&dev, &mut d, APP_A, RES_B);
    evict(&dev, &mut d, APP_B, RES);
    evict(&dev, &mut d, 77, RES);
    let c = d.counters();
    assert_eq!((c.host_evicts, c.evicts_refused), (0, 4));
    assert!(d.available(APP_A, TASK_A, RES));
    assert!(d.available(APP_B, TASK_B, RES_B));
    // The owner's evict works, is reported, and keeps the version floor.
    evict(&dev, &mut d, APP_A, RES);
    assert!(!d.available(APP_A, TASK_A, RES));
    assert_eq!(d.counters().host_evicts, 1);
    d.flush();
    assert_eq!(dev.dev().report_kinds(), vec![3]);
    stage(&dev, RES, 4, &content(40, 3));
    assert_eq!(rejected(&mut d, RejectReason::Rollback), 1);
    assert!(d.available(APP_B, TASK_B, RES_B));
    assert_eq!(d.state(), DriverState::Ready);
}

#[test]
fn host_evict_of_a_resource_being_read_leaves_the_reader_intact() {
    let (dev, mut d) = cache_setup(4 << 20);
    let data = content(1000, 5);
    stage(&dev, RES, 1, &data);
    let reading = d.claim(APP_A, TASK_A, RES).unwrap();
    evict(&dev, &mut d, APP_A, RES);
    assert!(!d.available(APP_A, TASK_A, RES));
    // The task's share outlives the cache entry, bytes unchanged, and it is the only share.
    assert_eq!(reading.content, data);
    assert_eq!(reading.content.shares(), 1);
    // A later claim misses; a re-prefetch of the same version is accepted again.
    assert_eq!(d.claim(APP_A, TASK_A, RES), Err(ClaimError::NotStaged));
    stage(&dev, RES, 1, &data);
    assert!(d.available(APP_A, TASK_A, RES));
}

#[test]
fn an_evict_flood_changes_nothing_it_may_not() {
    let (dev, mut d) = cache_setup(4 << 20);
    let data = content(64, 6);
    stage(&dev, RES2, 1, &data);
    stage_for(&dev, APP_B, TASK_B, RES_B, 1, &content(64, 7));
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..5_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Random apps and ids, never (APP_A, RES2) or (APP_B, RES_B).
        let (app, res) = match i % 4 {
            0 => (APP_B, RES2),
            1 => (APP_A, RES_B),
            2 => (x as u32 | 4, x),
            _ => (APP_A, RES + (x % 3) * 2),
        };
        evict(&dev, &mut d, app, res);
    }
    // Malformed evicts (a reserved field set) are dropped and counted.
    let malformed_before = d.counters().malformed;
    let mut bad = std::vec![0u8; 32];
    virtio_prefetch_wire::Message::Evict(virtio_prefetch_wire::Evict {
        app_id: APP_A,
        resource_id: RES2,
    })
    .encode(0, &mut bad)
    .unwrap();
    bad[20] = 1;
    {
        let mut dv = dev.dev();
        let (head, chain) = dv.pop_avail(0).expect("a request buffer");
        dv.write(chain[0].addr, &bad);
        dv.push_used(0, u32::from(head), bad.len() as u32);
    }
    d.poll();
    let c = d.counters();
    assert_eq!(c.malformed, malformed_before + 1);
    assert_eq!((c.host_evicts, c.evicts_refused), (0, 5_000));
    assert_eq!(d.state(), DriverState::Ready);
    assert_eq!(d.claim(APP_A, TASK_A, RES2).unwrap().content, data);
    assert!(d.available(APP_B, TASK_B, RES_B));
    // Requests still flow after the flood.
    dev.dev().send_request(1, 1, APP_A, 0, b"");
    assert_eq!(d.next_request().map(|r| r.request_id), Some(1));
}

#[test]
fn a_host_evict_makes_room_before_the_bundle_sent_after_it() {
    let (dev, mut d) = cache_setup(100);
    stage(&dev, RES, 1, &content(60, 1));
    stage(&dev, RES2, 1, &content(40, 2));
    d.poll();
    // The host chooses RES2 (not the least recently used RES) and sends the bundle after
    // the Evict; both are in the rings when the driver next polls.
    assert!(dev.dev().send_evict(APP_A, RES2));
    let b = dev
        .dev()
        .spec(APP_A, TASK_A, RES3, 1, &content(40, 3))
        .build();
    dev.dev().deliver(&b);
    d.poll();
    assert!(
        d.available(APP_A, TASK_A, RES),
        "the guest's LRU did not have to choose"
    );
    assert!(!d.available(APP_A, TASK_A, RES2));
    assert!(d.available(APP_A, TASK_A, RES3));
    let c = d.counters();
    assert_eq!((c.host_evicts, c.evicted), (1, 1));
}

#[test]
fn peek_shows_a_staged_resource_without_claiming_it_and_keeps_the_access_rule() {
    let (dev, mut d) = cache_setup(4 << 20);
    let data = content(300, 5);
    stage(&dev, RES, 1, &data);
    stage_for(&dev, APP_B, TASK_B, RES_B, 1, &content(10, 1));
    d.poll();
    let seen = d.peek(APP_A, TASK_A, RES).expect("staged for APP_A");
    assert_eq!(
        (seen.content.to_vec(), seen.version, seen.source),
        (data.clone(), 1, Source::Prefetched)
    );
    // Nothing was claimed or reported: the first claim is still a staged hit.
    d.flush();
    assert!(dev.dev().report_kinds().is_empty());
    assert_eq!(d.counters().hits, 0);
    assert_eq!(
        d.claim(APP_A, TASK_A, RES).unwrap().source,
        Source::Prefetched
    );
    // Another app's resource, or one the registry does not give the task, is not shown.
    assert!(d.peek(APP_A, TASK_B, RES_B).is_none());
    assert!(d.peek(APP_B, TASK_B, RES).is_none());
    assert!(d.peek(APP_B, TASK_B, RES_B).is_some());
    // Gone after the host's Evict.
    evict(&dev, &mut d, APP_A, RES);
    assert!(d.peek(APP_A, TASK_A, RES).is_none());
}
