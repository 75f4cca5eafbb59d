//! The driver against the hostile device model: the good path here, the attacks the device
//! (the host) can mount through the rings and the shared window in the submodules.

mod cache;
mod device;
mod floors;
mod messages;
mod nocache;
mod parallel;
mod rings;
mod tree;

use std::vec::Vec;

use crate::{
    counters::Counters,
    driver::BrokenReason,
    msg::RejectReason,
    testdev::{chunk_raw, manifest, test_key, TestPlatform},
    AppRegistry, ClaimError, Completion, Driver, DriverConfig, DriverState, Source,
};

const APP_A: u32 = 1;
const APP_B: u32 = 2;
const TASK_A: u64 = 10;
const TASK_B: u64 = 20;
const RES: u64 = 100;
const RES2: u64 = 101;
const RES_B: u64 = 200;

fn registry() -> AppRegistry {
    let mut r = AppRegistry::new();
    r.register_app(APP_A);
    r.register_app(APP_B);
    r.allow(APP_A, TASK_A, RES).unwrap();
    r.allow(APP_A, TASK_A, RES2).unwrap();
    r.allow(APP_B, TASK_B, RES_B).unwrap();
    r
}

fn config(mode: Completion) -> DriverConfig {
    let mut c = DriverConfig::new(TestPlatform::window());
    c.completion = mode;
    c.staging_buffers = 16;
    c.ctrl_chains = 16;
    c.store_budget = 4 << 20;
    c
}

fn setup_with(mode: Completion) -> (TestPlatform, Driver<TestPlatform>) {
    let dev = TestPlatform::new();
    let pubkey = dev.dev().key.verifying_key().to_sec1_bytes();
    let d = Driver::new(dev.clone(), config(mode), &pubkey, registry()).expect("driver up");
    dev.dev().irq = Some(d.interrupt_handle());
    (dev, d)
}

fn setup() -> (TestPlatform, Driver<TestPlatform>) {
    setup_with(Completion::Interrupt)
}

fn content(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ salt)
        .collect()
}

/// Delivers a good bundle for app A.
fn stage(dev: &TestPlatform, res: u64, version: u64, data: &[u8]) -> Vec<u8> {
    let b = dev.dev().spec(APP_A, TASK_A, res, version, data).build();
    dev.dev().deliver(&b);
    b
}

/// Polls (so everything delivered is processed), then reads the reject counter.
fn rejected(d: &mut Driver<TestPlatform>, reason: RejectReason) -> u64 {
    d.poll();
    d.counters().rejected[reason.raw() as usize]
}

fn assert_clean(c: &Counters) {
    assert_eq!(c.malformed, 0, "{c:?}");
    assert_eq!(c.rejected_total(), 0, "{c:?}");
}

#[test]
fn hello_carries_the_session_nonce_and_epoch() {
    let (dev, d) = setup();
    let (nonce, epoch) = d.session();
    let dv = dev.dev();
    assert_eq!(dv.received.len(), 1);
    assert_eq!((dv.nonce, dv.epoch), (nonce, epoch));
    assert_ne!(nonce, [0; 32]);
    assert_eq!(epoch, 1);
    // Bring-up spins for the Hello Ack (no IRQ handler yet): no sleep until the deadline.
    assert!(
        dv.now - 1_000_000 < 1_000_000,
        "bring-up took {} ns",
        dv.now
    );
    assert_eq!(d.state(), DriverState::Ready);
    // VERSION_1 plus both device bits were negotiated.
    assert_eq!(dv.driver_features, dv.device_features);
}

#[test]
fn prefetched_bundle_is_claimed_byte_for_byte() {
    let (dev, mut d) = setup();
    let data = content(3000, 7);
    stage(&dev, RES, 1, &data);
    assert!(d.available(APP_A, TASK_A, RES));
    let exits = d.counters().register_accesses;
    let r = d.claim(APP_A, TASK_A, RES).unwrap();
    assert_eq!(
        d.counters().register_accesses,
        exits,
        "a staged claim causes no VM exit"
    );
    assert_eq!(r.content, data);
    assert_eq!(
        (r.app_id, r.task_id, r.resource_id, r.version),
        (APP_A, TASK_A, RES, 1)
    );
    assert_eq!(r.source, Source::Prefetched);
    // A claim leaves the resource cached: the second one is a cache hit, same bytes, and
    // another resource still misses.
    assert!(d.available(APP_A, TASK_A, RES));
    let again = d.claim(APP_A, TASK_A, RES).unwrap();
    assert_eq!(
        (again.source, again.content.clone()),
        (Source::Cached, r.content.clone())
    );
    assert_eq!(d.claim(APP_A, TASK_A, RES2), Err(ClaimError::NotStaged));
    let c = d.counters();
    assert_clean(&c);
    assert_eq!((c.accepted, c.hits, c.cache_hits, c.misses), (1, 1, 1, 1));
    // The hits and the miss are reported once the reports are kicked.
    d.flush();
    let kinds = dev.dev().report_kinds();
    assert_eq!(kinds, vec![1, 6, 2], "ClaimHit, CacheHit, Miss");
}

#[test]
fn chunked_bundle_is_reassembled_in_private_memory() {
    let (dev, mut d) = setup();
    // 13 chunks (the model delivers them all before the driver polls: 16 buffers posted).
    dev.dev().chunk_len = 16_000;
    let data = content(200_000, 3);
    stage(&dev, RES, 1, &data);
    let r = d.claim(APP_A, TASK_A, RES).unwrap();
    assert_eq!(r.content, data);
    assert_clean(&d.counters());
}

#[test]
fn demand_fetch_serves_a_miss() {
    let (dev, mut d) = setup();
    let data = content(70_000, 9);
    dev.dev().serve(APP_A, TASK_A, RES2, 4, &data);
    let r = d.claim_or_fetch(APP_A, TASK_A, RES2, 3).unwrap();
    assert_eq!(r.content, data);
    assert_eq!((r.version, r.source), (4, Source::Demanded));
    let c = d.counters();
    assert_clean(&c);
    assert_eq!((c.misses, c.demands_served), (1, 1));
    let dv = dev.dev();
    let demand = dv
        .received
        .iter()
        .find(|m| m.kind == virtio_prefetch_wire::MessageKind::Demand.raw())
        .unwrap();
    assert_eq!(dv.demand_of(demand), Some((APP_A, TASK_A, RES2, 3)));
    assert!(dv.report_kinds().contains(&5), "DemandServed reported");
}

#[test]
fn demand_refused_by_the_device_is_a_clear_error() {
    let (dev, mut d) = setup();
    dev.dev().demand_status = 2; // UnknownResource
    assert_eq!(
        d.claim_or_fetch(APP_A, TASK_A, RES, 0),
        Err(ClaimError::Refused(2))
    );
    assert_eq!(d.state(), DriverState::Ready);
    assert_eq!(d.counters().demands_failed, 1);
}

#[test]
fn demand_answered_with_another_resource_is_rejected() {
    let (dev, mut d) = setup();
    dev.dev().deliver_demands = false;
    dev.dev().on_demand = Some((APP_A, TASK_A, RES2));
    let err = d.claim_or_fetch(APP_A, TASK_A, RES, 0).unwrap_err();
    assert_eq!(err, ClaimError::Rejected(RejectReason::WrongTask));
    assert!(!d.available(APP_A, TASK_A, RES2));
}

#[test]
fn polling_mode_works_without_interrupts() {
    let (dev, mut d) = setup_with(Completion::Polling);
    dev.dev().irq = None;
    assert!(dev.dev().avail_no_interrupt(1));
    let data = content(1000, 1);
    dev.dev().serve(APP_A, TASK_A, RES, 1, &data);
    assert_eq!(
        d.claim_or_fetch(APP_A, TASK_A, RES, 0).unwrap().content,
        data
    );
    assert_eq!(d.counters().interrupts, 0);
}

#[test]
fn requests_arrive_and_completions_go_out() {
    let (dev, mut d) = setup();
    dev.dev().send_request(77, 5, APP_A, 3, b"args");
    let r = d.next_request().unwrap();
    assert_eq!(
        (r.request_id, r.session_id, r.app_id, r.request_type),
        (77, 5, APP_A, 3)
    );
    assert_eq!(r.args, b"args");
    assert!(d.next_request().is_none());
    let done = crate::RequestCompletion {
        request_id: 77,
        status: 0,
        total_ns: 1234,
        tasks: vec![crate::TaskTiming {
            task_id: TASK_A,
            hits: 1,
            ..Default::default()
        }],
    };
    d.complete_request(&done).unwrap();
    assert_eq!(dev.dev().completions(), vec![(77, 1)]);
}
