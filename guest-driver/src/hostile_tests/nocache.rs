//! The naive baseline's driver (`cache: false`, `max_demands: 1`): a claim consumes the
//! resource, a demanded bundle is not kept, and a batch demands one resource at a time.

use super::*;

const MANY: [u64; 4] = [400, 401, 402, 403];
const TASK_N: u64 = 40;

fn nocache_setup(max_demands: u16) -> (TestPlatform, Driver<TestPlatform>) {
    let dev = TestPlatform::new();
    let pubkey = dev.dev().key.verifying_key().to_sec1_bytes();
    let mut r = registry();
    for res in MANY {
        r.allow(APP_A, TASK_N, res).unwrap();
    }
    let mut c = config(Completion::Interrupt);
    c.cache = false;
    c.max_demands = max_demands;
    let d = Driver::new(dev.clone(), c, &pubkey, r).expect("driver up");
    dev.dev().irq = Some(d.interrupt_handle());
    for (i, res) in MANY.into_iter().enumerate() {
        dev.dev()
            .serve(APP_A, TASK_N, res, 1, &content(50 + i, i as u8));
    }
    (dev, d)
}

fn demands_sent(dev: &TestPlatform) -> usize {
    dev.dev()
        .received
        .iter()
        .filter(|m| m.kind == virtio_prefetch_wire::MessageKind::Demand.raw())
        .count()
}

#[test]
fn without_the_cache_a_claim_consumes_and_a_demand_is_not_kept() {
    let (dev, mut d) = nocache_setup(8);
    let data = content(120, 7);
    stage(&dev, RES, 1, &data);
    let first = d.claim(APP_A, TASK_A, RES).unwrap();
    assert_eq!(
        (first.source, first.content.to_vec()),
        (Source::Prefetched, data.clone())
    );
    // Consumed: gone from the store, so the next claim misses.
    assert!(!d.available(APP_A, TASK_A, RES));
    assert!(matches!(
        d.claim(APP_A, TASK_A, RES),
        Err(ClaimError::NotStaged)
    ));
    assert_eq!(d.store.len(), 0);
    // A demanded bundle is handed over and dropped: asking again demands again.
    let id = MANY[0];
    for _ in 0..2 {
        let r = d.claim_or_fetch(APP_A, TASK_N, id, 0).unwrap();
        assert_eq!(r.source, Source::Demanded);
        assert!(!d.available(APP_A, TASK_N, id));
    }
    assert_eq!(d.store.len(), 0);
    let c = d.counters();
    assert_eq!((c.hits, c.cache_hits, c.demands_served), (1, 0, 2), "{c:?}");
    assert_eq!(demands_sent(&dev), 2);
    // The share handed out earlier is still readable.
    assert_eq!(first.content, data);
}

#[test]
fn without_the_cache_a_batch_demands_serially_and_every_time() {
    let (dev, mut d) = nocache_setup(1);
    let wanted: Vec<(u64, u64)> = MANY.iter().map(|&r| (TASK_N, r)).collect();
    for round in 1..=2 {
        let mut got = Vec::new();
        d.claim_each(APP_A, &wanted, 0, |i, r| {
            assert_eq!(r.content, content(50 + i, i as u8));
            got.push((i, r.source));
        })
        .unwrap();
        // One at a time, so in the order asked; none served from a cache.
        assert_eq!(
            got,
            (0..MANY.len())
                .map(|i| (i, Source::Demanded))
                .collect::<Vec<_>>()
        );
        assert_eq!(demands_sent(&dev), MANY.len() * round);
        assert_eq!(d.store.len(), 0);
    }
    // Never more than one Demand outstanding.
    assert_eq!(dev.dev().max_demands_per_kick, 1);
    assert_eq!(d.counters().cache_hits, 0);
}

#[test]
fn with_the_cache_the_same_batch_is_served_from_it() {
    // The control: the same device and batch with the cache on demand each resource once.
    let (dev, mut d) = nocache_setup(1);
    d.config.cache = true;
    let wanted: Vec<(u64, u64)> = MANY.iter().map(|&r| (TASK_N, r)).collect();
    for _ in 0..2 {
        d.claim_each(APP_A, &wanted, 0, |_, _| {}).unwrap();
    }
    assert_eq!(demands_sent(&dev), MANY.len());
    assert_eq!(d.counters().cache_hits, MANY.len() as u64);
}
