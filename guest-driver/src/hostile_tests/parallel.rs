//! Parallel demands ([`Driver::claim_each`]): a batch demands everything it misses at once,
//! within the bound, hands resources over in arrival order, and fails at once when the device
//! is lost mid-batch.

use super::*;

const MANY: [u64; 5] = [300, 301, 302, 303, 304];
const TASK_P: u64 = 30;

fn parallel_setup(max_demands: u16) -> (TestPlatform, Driver<TestPlatform>) {
    let dev = TestPlatform::new();
    let pubkey = dev.dev().key.verifying_key().to_sec1_bytes();
    let mut r = registry();
    for res in MANY {
        r.allow(APP_A, TASK_P, res).unwrap();
    }
    let mut c = config(Completion::Interrupt);
    c.max_demands = max_demands;
    let d = Driver::new(dev.clone(), c, &pubkey, r).expect("driver up");
    dev.dev().irq = Some(d.interrupt_handle());
    for (i, res) in MANY.into_iter().enumerate() {
        dev.dev()
            .serve(APP_A, TASK_P, res, 1, &content(100 + i, i as u8));
    }
    (dev, d)
}

fn wanted() -> Vec<(u64, u64)> {
    MANY.iter().map(|&r| (TASK_P, r)).collect()
}

#[test]
fn out_of_order_arrival_is_handed_over_as_it_comes() {
    let (dev, mut d) = parallel_setup(8);
    dev.dev().reverse_demands = true;
    // The first one is cached already: handed over before anything is demanded.
    stage_as(&dev, APP_A, TASK_P, MANY[0], &content(100, 0));
    let mut order = Vec::new();
    d.claim_each(APP_A, &wanted(), 0, |i, r| {
        assert_eq!(r.content, content(100 + i, i as u8));
        order.push((i, r.source));
    })
    .unwrap();
    // All four missing ones were demanded in one go and arrived last-first.
    assert_eq!(dev.dev().max_demands_per_kick, 4);
    assert_eq!(
        order,
        [
            (0, Source::Prefetched),
            (4, Source::Demanded),
            (3, Source::Demanded),
            (2, Source::Demanded),
            (1, Source::Demanded),
        ]
    );
    let c = d.counters();
    assert_eq!((c.hits, c.misses, c.demands_served), (1, 4, 4));
    // Everything is cached now.
    let mut again = Vec::new();
    d.claim_each(APP_A, &wanted(), 0, |i, r| again.push((i, r.source)))
        .unwrap();
    assert!(again.iter().all(|&(_, s)| s == Source::Cached), "{again:?}");
    assert_eq!(again.len(), 5);
}

#[test]
fn outstanding_demands_are_bounded() {
    let (dev, mut d) = parallel_setup(2);
    let mut got = Vec::new();
    d.claim_each(APP_A, &wanted(), 0, |i, _| got.push(i))
        .unwrap();
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2, 3, 4]);
    // Never more than two Demands outstanding: the device saw them at most two at a time.
    assert_eq!(dev.dev().max_demands_per_kick, 2);
    let demands = dev
        .dev()
        .received
        .iter()
        .filter(|m| m.kind == virtio_prefetch_wire::MessageKind::Demand.raw())
        .count();
    assert_eq!(demands, 5);
}

#[test]
fn a_device_lost_mid_batch_fails_it_at_once() {
    // Two outstanding at a time: the first two arrive, the device dies before the next two.
    let (dev, mut d) = parallel_setup(2);
    dev.dev().die_after_demands = Some(2);
    let start = dev.dev().now;
    let mut got = Vec::new();
    let r = d.claim_each(APP_A, &wanted(), 0, |i, _| got.push(i));
    assert!(matches!(r, Err(ClaimError::DeviceBroken(_))), "{r:?}");
    assert_eq!(got.len(), 2, "the two that arrived were handed over");
    assert!(
        dev.dev().now - start < 1_000_000_000,
        "failed at once, not at the deadline"
    );
    let c = d.counters();
    assert_eq!((c.demands_served, c.demands_failed), (2, 2));
    assert!(d.claim_each(APP_A, &wanted(), 0, |_, _| {}).is_err());
}

#[test]
fn a_batch_with_a_forbidden_entry_demands_nothing() {
    let (dev, mut d) = parallel_setup(8);
    let mut w = wanted();
    w.push((TASK_B, RES_B));
    let r = d.claim_each(APP_A, &w, 0, |_, _| panic!("nothing is handed over"));
    assert!(matches!(r, Err(ClaimError::AccessDenied { .. })), "{r:?}");
    assert!(dev
        .dev()
        .received
        .iter()
        .all(|m| m.kind != virtio_prefetch_wire::MessageKind::Demand.raw()));
}

fn stage_as(dev: &TestPlatform, app: u32, task: u64, res: u64, data: &[u8]) {
    let b = dev.dev().spec(app, task, res, 1, data).build();
    dev.dev().deliver(&b);
}
