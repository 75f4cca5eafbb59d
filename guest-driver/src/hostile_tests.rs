//! The driver against the hostile device model: the good path, then every attack the device
//! (the host) can mount through the rings and the shared window.

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
    let r = d.claim(APP_A, TASK_A, RES).unwrap();
    assert_eq!(r.content, data);
    assert_eq!(
        (r.app_id, r.task_id, r.resource_id, r.version),
        (APP_A, TASK_A, RES, 1)
    );
    assert_eq!(r.source, Source::Prefetched);
    // A claim moves the resource: the second one misses.
    assert!(!d.available(APP_A, TASK_A, RES));
    assert_eq!(d.claim(APP_A, TASK_A, RES), Err(ClaimError::NotStaged));
    let c = d.counters();
    assert_clean(&c);
    assert_eq!((c.accepted, c.hits, c.misses), (1, 1, 1));
    // The hit and the miss are reported once the reports are kicked.
    d.flush();
    let kinds = dev.dev().report_kinds();
    assert_eq!(kinds, vec![1, 2], "ClaimHit then Miss");
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

// ---- ring attacks ----

#[test]
fn used_id_out_of_range_is_dropped() {
    let (dev, mut d) = setup();
    dev.dev().push_used(1, 9999, 10);
    d.poll();
    assert_eq!(d.counters().malformed, 1);
    assert_eq!(d.state(), DriverState::Ready);
    let data = content(100, 2);
    stage(&dev, RES, 1, &data);
    assert_eq!(d.claim(APP_A, TASK_A, RES).unwrap().content, data);
}

#[test]
fn used_id_not_outstanding_is_dropped() {
    let (dev, mut d) = setup();
    let data = content(100, 2);
    let b = dev.dev().spec(APP_A, TASK_A, RES, 1, &data).build();
    let m = dev.dev().chunk_msg(&b);
    let (id, _) = dev.dev().stage_raw(&m, m.len() as u32).unwrap();
    // The device returns the same buffer a second time in the same batch.
    dev.dev().push_used(1, u32::from(id), m.len() as u32);
    d.poll();
    assert_eq!(d.counters().malformed, 1);
    assert_eq!(d.counters().rejected_total(), 0);
    assert_eq!(d.state(), DriverState::Ready);
    assert_eq!(d.claim(APP_A, TASK_A, RES).unwrap().content, data);
}

#[test]
fn used_length_beyond_the_buffer_is_dropped_and_the_buffer_recycled() {
    let (dev, mut d) = setup();
    let b = dev
        .dev()
        .spec(APP_A, TASK_A, RES, 1, &content(100, 1))
        .build();
    // More attacks than there are staging buffers: each buffer must come back.
    for _ in 0..40 {
        let m = dev.dev().chunk_msg(&b);
        let cap = dev.dev().next_staging_len();
        dev.dev().stage_raw(&m, cap + 1).unwrap();
        d.poll();
    }
    assert_eq!(d.counters().malformed, 40);
    assert!(!d.available(APP_A, TASK_A, RES));
    let data = content(100, 5);
    stage(&dev, RES, 1, &data);
    assert_eq!(d.claim(APP_A, TASK_A, RES).unwrap().content, data);
}

#[test]
fn used_index_jump_breaks_the_device_until_reset() {
    let (dev, mut d) = setup();
    stage(&dev, RES, 1, &content(10, 1));
    let next = dev.dev().used_idx[1].wrapping_add(17);
    dev.dev().set_used_idx(1, next);
    assert!(
        !d.available(APP_A, TASK_A, RES),
        "broken: false at once, store discarded"
    );
    assert!(matches!(
        d.state(),
        DriverState::Broken(BrokenReason::Protocol(_))
    ));
    assert!(matches!(
        d.claim(APP_A, TASK_A, RES),
        Err(ClaimError::DeviceBroken(_))
    ));
    let before = dev.dev().now;
    assert!(matches!(
        d.claim_or_fetch(APP_A, TASK_A, RES, 0),
        Err(ClaimError::DeviceBroken(_))
    ));
    assert!(dev.dev().now - before < 10_000, "failed at once, no wait");
    let (old_nonce, _) = d.session();
    d.reset().unwrap();
    let (nonce, epoch) = d.session();
    assert_ne!(nonce, old_nonce);
    assert_eq!(epoch, 2);
    let data = content(10, 2);
    stage(&dev, RES, 2, &data);
    assert_eq!(d.claim(APP_A, TASK_A, RES).unwrap().content, data);
}

// ---- message attacks ----

#[test]
fn truncated_and_oversized_chunks_are_dropped() {
    let (dev, mut d) = setup();
    let b = dev
        .dev()
        .spec(APP_A, TASK_A, RES, 1, &content(500, 1))
        .build();
    let m = dev.dev().chunk_msg(&b);
    // The device says it wrote fewer bytes than the chunk header claims.
    dev.dev().stage_raw(&m, (m.len() - 1) as u32).unwrap();
    // Shorter than a chunk header at all.
    dev.dev().stage_raw(&m, 10).unwrap();
    d.poll();
    assert_eq!(d.counters().malformed, 2);
    // An object larger than the driver accepts: refused before any copy.
    let big = chunk_raw(1, u32::MAX, 0, &[0; 64]);
    dev.dev().stage_raw(&big, big.len() as u32).unwrap();
    d.poll();
    assert_eq!(rejected(&mut d, RejectReason::TooLarge), 1);
    // A stream whose total length changes mid-object, and a chunk of no open stream.
    for m in [
        chunk_raw(2, 300, 0, &[0; 64]),
        chunk_raw(2, 400, 64, &[0; 64]),
        chunk_raw(3, 300, 64, &[0; 64]),
    ] {
        dev.dev().stage_raw(&m, m.len() as u32).unwrap();
    }
    d.poll();
    assert_eq!(d.counters().malformed, 4);
    assert!(!d.available(APP_A, TASK_A, RES));
    assert_eq!(d.state(), DriverState::Ready);
}

#[test]
fn wrong_magic_is_dropped() {
    let (dev, mut d) = setup();
    let b = dev
        .dev()
        .spec(APP_A, TASK_A, RES, 1, &content(50, 1))
        .build();
    let mut m = dev.dev().chunk_msg(&b);
    m[0] ^= 0xff;
    dev.dev().stage_raw(&m, m.len() as u32).unwrap();
    // A complete object whose bundle magic is wrong.
    let mut bad = b.clone();
    bad[1] ^= 1;
    dev.dev().deliver(&bad);
    d.poll();
    assert_eq!(d.counters().malformed, 1);
    assert_eq!(rejected(&mut d, RejectReason::Malformed), 1);
    assert!(!d.available(APP_A, TASK_A, RES));
}

#[test]
fn bundle_signed_with_another_key_is_rejected() {
    let (dev, mut d) = setup();
    let mut spec = dev.dev().spec(APP_A, TASK_A, RES, 1, &content(50, 1));
    spec.key = test_key("not the pto");
    dev.dev().deliver(&spec.build());
    assert!(!d.available(APP_A, TASK_A, RES));
    assert_eq!(rejected(&mut d, RejectReason::BadSignature), 1);
    d.flush();
    assert!(dev.dev().report_kinds().contains(&4), "Reject reported");
}

#[test]
fn flipped_header_bit_is_rejected() {
    let (dev, mut d) = setup();
    // Top bit of resource_version, after signing: passes every cheap check, fails the
    // signature.
    let spec = dev.dev().spec(APP_A, TASK_A, RES, 1, &content(50, 1));
    let b = spec.build_with(|h| h.resource_version ^= 1 << 63);
    dev.dev().deliver(&b);
    assert!(!d.available(APP_A, TASK_A, RES));
    assert_eq!(rejected(&mut d, RejectReason::BadSignature), 1);
    assert_eq!(d.counters().accepted, 0);
}

#[test]
fn flipped_content_bit_is_rejected() {
    let (dev, mut d) = setup();
    let mut b = dev
        .dev()
        .spec(APP_A, TASK_A, RES, 1, &content(50, 1))
        .build();
    let last = b.len() - 1;
    b[last] ^= 1;
    dev.dev().deliver(&b);
    assert!(!d.available(APP_A, TASK_A, RES));
    assert_eq!(rejected(&mut d, RejectReason::DigestMismatch), 1);
}

#[test]
fn replayed_bundle_is_rejected() {
    let (dev, mut d) = setup();
    let data = content(50, 1);
    let b = stage(&dev, RES, 1, &data);
    assert_eq!(d.claim(APP_A, TASK_A, RES).unwrap().content, data);
    dev.dev().deliver(&b);
    assert!(!d.available(APP_A, TASK_A, RES));
    assert_eq!(rejected(&mut d, RejectReason::Replay), 1);
}

#[test]
fn bundle_from_another_session_is_rejected() {
    let (dev, mut d) = setup();
    let old = dev
        .dev()
        .spec(APP_A, TASK_A, RES, 1, &content(50, 1))
        .build();
    d.reset().unwrap();
    dev.dev().deliver(&old);
    assert!(!d.available(APP_A, TASK_A, RES));
    assert_eq!(rejected(&mut d, RejectReason::WrongSession), 1);
    let mut spec = dev.dev().spec(APP_A, TASK_A, RES, 1, &content(50, 1));
    spec.nonce[0] ^= 1;
    dev.dev().deliver(&spec.build());
    let mut spec = dev.dev().spec(APP_A, TASK_A, RES, 1, &content(50, 1));
    spec.epoch += 1;
    dev.dev().deliver(&spec.build());
    assert_eq!(rejected(&mut d, RejectReason::WrongSession), 3);
}

#[test]
fn bundle_for_another_task_is_rejected() {
    let (dev, mut d) = setup();
    // A task the registry does not know, and app A's name on app B's task.
    let b = dev
        .dev()
        .spec(APP_A, TASK_A + 1, RES, 1, &content(50, 1))
        .build();
    dev.dev().deliver(&b);
    let b = dev
        .dev()
        .spec(APP_A, TASK_B, RES_B, 1, &content(50, 1))
        .build();
    dev.dev().deliver(&b);
    d.poll();
    assert_eq!(rejected(&mut d, RejectReason::WrongTask), 2);
    assert!(!d.available(APP_A, TASK_A + 1, RES));
    assert!(!d.available(APP_B, TASK_B, RES_B));
    assert!(!d.available(APP_A, TASK_B, RES_B));
}

#[test]
fn rollback_is_rejected_even_across_a_reset() {
    let (dev, mut d) = setup();
    stage(&dev, RES, 5, &content(50, 1));
    assert_eq!(d.claim(APP_A, TASK_A, RES).unwrap().version, 5);
    stage(&dev, RES, 4, &content(50, 2));
    assert!(!d.available(APP_A, TASK_A, RES));
    assert_eq!(rejected(&mut d, RejectReason::Rollback), 1);
    d.reset().unwrap();
    stage(&dev, RES, 3, &content(50, 3));
    assert!(!d.available(APP_A, TASK_A, RES));
    assert_eq!(rejected(&mut d, RejectReason::Rollback), 2);
    // The same version again is fine (a re-prefetch after a claim).
    stage(&dev, RES, 5, &content(50, 4));
    assert!(d.available(APP_A, TASK_A, RES));
}

#[test]
fn rewriting_the_staging_buffer_after_the_copy_changes_nothing() {
    let (dev, mut d) = setup();
    let data = content(3000, 8);
    let b = dev.dev().spec(APP_A, TASK_A, RES, 1, &data).build();
    let m = dev.dev().chunk_msg(&b);
    // Arm the hook: right after the driver copies the payload, the device overwrites it
    // (and the chunk header) in shared memory.
    let addr = dev.dev().next_staging_addr();
    let payload_at = addr + crate::msg::CHUNK_PREFIX as u64;
    dev.dev().after_copy = Some((payload_at, vec![0x55; m.len()]));
    dev.dev().stage_raw(&m, m.len() as u32).unwrap();
    let r = d.claim(APP_A, TASK_A, RES).unwrap();
    assert!(dev.dev().after_copy.is_none(), "the rewrite happened");
    assert_eq!(dev.dev().read(payload_at, 4), &[0x55; 4]);
    assert_eq!(r.content, data);
    assert_clean(&d.counters());
}

#[test]
fn app_b_cannot_claim_app_a_resource() {
    let (dev, mut d) = setup();
    let data = content(64, 1);
    stage(&dev, RES, 1, &data);
    assert!(!d.available(APP_B, TASK_A, RES));
    let denied = ClaimError::AccessDenied {
        app_id: APP_B,
        task_id: TASK_A,
        resource_id: RES,
    };
    assert_eq!(d.claim(APP_B, TASK_A, RES), Err(denied.clone()));
    // No demand fetch for a resource the app may not have.
    assert_eq!(d.claim_or_fetch(APP_B, TASK_A, RES, 0), Err(denied));
    // Still there for its owner.
    assert_eq!(d.claim(APP_A, TASK_A, RES).unwrap().content, data);
}

// ---- a device that goes away ----

#[test]
fn device_gone_mid_demand_fails_by_the_deadline() {
    let (dev, mut d) = setup();
    stage(&dev, RES2, 1, &content(10, 1));
    dev.dev().answer = false;
    let start = dev.dev().now;
    assert_eq!(
        d.claim_or_fetch(APP_A, TASK_A, RES, 0),
        Err(ClaimError::Timeout)
    );
    let waited = dev.dev().now - start;
    assert!(
        (1_000_000_000..2_000_000_000).contains(&waited),
        "waited {waited} ns"
    );
    assert_eq!(d.state(), DriverState::Broken(BrokenReason::DeadlineMissed));
    // Everything fails at once now, and the staged bundle is gone.
    assert!(!d.available(APP_A, TASK_A, RES2));
    let t = dev.dev().now;
    assert!(matches!(
        d.claim_or_fetch(APP_A, TASK_A, RES2, 0),
        Err(ClaimError::DeviceBroken(_))
    ));
    assert!(dev.dev().now - t < 10_000);
}

#[test]
fn acked_demand_that_never_arrives_fails_by_the_deadline() {
    let (dev, mut d) = setup();
    dev.dev().deliver_demands = false;
    assert_eq!(
        d.claim_or_fetch(APP_A, TASK_A, RES, 0),
        Err(ClaimError::Timeout)
    );
    assert_eq!(d.counters().demands_failed, 1);
}

#[test]
fn needs_reset_fails_everything_at_once() {
    let (dev, mut d) = setup();
    stage(&dev, RES, 1, &content(10, 1));
    dev.dev().needs_reset();
    assert!(!d.available(APP_A, TASK_A, RES));
    assert_eq!(d.state(), DriverState::Broken(BrokenReason::NeedsReset));
    assert!(matches!(
        d.claim(APP_A, TASK_A, RES),
        Err(ClaimError::DeviceBroken(_))
    ));
    // A reset against a device that still does not answer fails cleanly too.
    dev.dev().answer = false;
    assert!(d.reset().is_err());
    assert!(!d.available(APP_A, TASK_A, RES));
}

// ---- bring-up against a wrong or hostile device ----

fn init_err(tweak: impl FnOnce(&mut crate::testdev::Dev)) -> crate::InitError {
    let dev = TestPlatform::new();
    tweak(&mut dev.dev());
    let key = dev.dev().key.verifying_key().to_sec1_bytes();
    Driver::new(dev.clone(), config(Completion::Interrupt), &key, registry()).unwrap_err()
}

#[test]
fn bring_up_refuses_a_wrong_device() {
    use crate::mmio::TransportError as T;
    assert_eq!(
        init_err(|d| d.magic = 0),
        crate::InitError::Transport(T::BadMagic(0))
    );
    assert_eq!(
        init_err(|d| d.version = 1),
        crate::InitError::Transport(T::BadVersion(1))
    );
    assert!(matches!(
        init_err(|d| d.device_id = 2),
        crate::InitError::Transport(T::WrongDevice { found: 2, .. })
    ));
    assert_eq!(
        init_err(|d| d.device_features = 0),
        crate::InitError::Transport(T::MissingFeatures { missing: 1 << 32 })
    );
    assert_eq!(
        init_err(|d| d.refuse_features = true),
        crate::InitError::Transport(T::FeaturesRejected)
    );
    assert!(matches!(
        init_err(|d| d.queue_max = 4),
        crate::InitError::Transport(T::Queue { queue: 0, .. })
    ));
    // A device that never acknowledges Hello: a clear error by the deadline, no hang.
    assert!(matches!(
        init_err(|d| d.answer = false),
        crate::InitError::Hello(ClaimError::Timeout)
    ));
    assert!(matches!(
        init_err(|d| d.hello_status = 6),
        crate::InitError::Hello(ClaimError::Refused(6))
    ));
}

#[test]
fn bring_up_refuses_a_bad_key_and_a_small_window() {
    let dev = TestPlatform::new();
    let err = Driver::new(
        dev.clone(),
        config(Completion::Interrupt),
        &[4; 97],
        registry(),
    );
    assert_eq!(err.unwrap_err(), crate::InitError::BadKey);
    let key = dev.dev().key.verifying_key().to_sec1_bytes();
    let mut c = config(Completion::Interrupt);
    c.window.size = 64 << 10;
    assert!(matches!(
        Driver::new(dev.clone(), c, &key, registry()),
        Err(crate::InitError::Window(_))
    ));
    let mut c = config(Completion::Interrupt);
    c.staging_buffers = 3;
    assert!(matches!(
        Driver::new(dev, c, &key, registry()),
        Err(crate::InitError::Config(_))
    ));
}

#[test]
fn c_abi_claims_into_a_caller_buffer() {
    use crate::ffi::*;
    let (dev, d) = setup();
    let data = content(5000, 4);
    stage(&dev, RES, 1, &data);
    dev.dev().serve(APP_A, TASK_A, RES2, 1, &content(10, 1));
    assert!(install(d).is_none());
    // The embedder reaches the whole driver through the global.
    let requests = with_installed(|d| {
        let d = d.as_any().downcast_mut::<Driver<TestPlatform>>().unwrap();
        d.next_request().is_none()
    });
    assert_eq!(requests, Some(true));
    assert!(see_prefetch_available(APP_A, TASK_A, RES));
    assert!(!see_prefetch_available(APP_B, TASK_A, RES));
    let mut buf = vec![0u8; 100];
    let mut len = 0usize;
    // SAFETY: buf and len are valid for the sizes given.
    let rc =
        unsafe { see_claim_prefetch(APP_A, TASK_A, RES, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!((rc, len), (SEE_E_TOO_SMALL, 5000));
    assert!(
        see_prefetch_available(APP_A, TASK_A, RES),
        "still staged after TOO_SMALL"
    );
    // SAFETY: as above, null out_len is refused before any write.
    let rc = unsafe {
        see_claim_prefetch(
            APP_A,
            TASK_A,
            RES,
            buf.as_mut_ptr(),
            100,
            core::ptr::null_mut(),
        )
    };
    assert_eq!(rc, SEE_E_INVALID);
    // SAFETY: as above.
    let rc =
        unsafe { see_claim_prefetch(APP_B, TASK_A, RES, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!(rc, SEE_E_DENIED);
    buf.resize(8192, 0);
    // SAFETY: as above.
    let rc =
        unsafe { see_claim_prefetch(APP_A, TASK_A, RES, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!((rc, len), (SEE_OK, 5000));
    assert_eq!(&buf[..5000], &data[..]);
    // A miss falls back to a demand fetch.
    // SAFETY: as above.
    let rc =
        unsafe { see_claim_prefetch(APP_A, TASK_A, RES2, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!((rc, len), (SEE_OK, 10));
    // The device dies: false and a clear error at once.
    dev.dev().needs_reset();
    assert!(!see_prefetch_available(APP_A, TASK_A, RES2));
    // SAFETY: as above.
    let rc =
        unsafe { see_claim_prefetch(APP_A, TASK_A, RES2, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!((rc, len), (SEE_E_BROKEN, 0));
    assert!(uninstall().is_some());
    assert!(!see_prefetch_available(APP_A, TASK_A, RES));
}

#[test]
fn manifest_covers_unsigned_bundles_of_this_session_only() {
    let (dev, mut d) = setup();
    let key = dev.dev().key.clone();
    let (nonce, epoch) = d.session();
    let in_manifest = |res: u64, salt: u8, seq: u64| {
        let mut s = dev.dev().spec(APP_A, TASK_A, res, 1, &content(100, salt));
        s.in_manifest = true;
        s.seq = seq;
        s
    };
    // An unsigned bundle before any manifest lists it: refused.
    let early = in_manifest(RES, 9, 1).build();
    dev.dev().deliver(&early);
    assert_eq!(rejected(&mut d, RejectReason::NotInManifest), 1);
    // The manifest takes sequence number 10, its bundles 11 and 12 (one sequence space).
    let (b0, b1) = (in_manifest(RES, 0, 11), in_manifest(RES2, 1, 12));
    let entries = [b0.statement_digest(), b1.statement_digest()];
    dev.dev()
        .deliver(&manifest(&test_key("other"), nonce, epoch, 10, &entries));
    assert_eq!(rejected(&mut d, RejectReason::BadSignature), 1);
    dev.dev()
        .deliver(&manifest(&key, [9; 32], epoch, 10, &entries));
    assert_eq!(rejected(&mut d, RejectReason::WrongSession), 1);
    dev.dev()
        .deliver(&manifest(&key, nonce, epoch, 10, &entries));
    d.poll();
    assert_eq!(d.counters().manifests, 1);
    dev.dev().deliver(&b0.build());
    dev.dev().deliver(&b1.build());
    assert_eq!(
        d.claim(APP_A, TASK_A, RES).unwrap().content,
        content(100, 0)
    );
    assert_eq!(
        d.claim(APP_A, TASK_A, RES2).unwrap().content,
        content(100, 1)
    );
    // Not listed (another content, so another statement): refused.
    let unlisted = in_manifest(RES, 7, 13).build();
    dev.dev().deliver(&unlisted);
    assert_eq!(rejected(&mut d, RejectReason::NotInManifest), 2);
    // A listed statement cannot be replayed (its sequence number is spent), nor the manifest.
    dev.dev().deliver(&b0.build());
    dev.dev()
        .deliver(&manifest(&key, nonce, epoch, 10, &entries));
    assert_eq!(rejected(&mut d, RejectReason::Replay), 2);
    assert_eq!(d.counters().accepted, 2);
}

#[test]
fn a_prefetch_that_overtakes_the_demand_serves_it() {
    let (dev, mut d) = setup();
    let data = content(500, 6);
    dev.dev().serve(APP_A, TASK_A, RES, 2, &data);
    dev.dev().demand_as_prefetch = true;
    let start = dev.dev().now;
    let r = d.claim_or_fetch(APP_A, TASK_A, RES, 2).unwrap();
    assert_eq!(r.content, data);
    assert!(
        dev.dev().now - start < 1_000_000,
        "no wait for the deadline"
    );
    assert!(!d.available(APP_A, TASK_A, RES), "moved out of the store");
}

#[test]
fn interrupts_are_counted_and_acknowledged() {
    let (dev, mut d) = setup();
    stage(&dev, RES, 1, &content(10, 1));
    assert!(dev.dev().isr != 0);
    assert!(d.available(APP_A, TASK_A, RES));
    assert_eq!(dev.dev().isr, 0, "InterruptStatus acknowledged in poll");
    assert!(d.counters().interrupts >= 1);
}

/// Random garbage in every place the device controls: the driver never panics, never
/// accepts anything, and either stays usable or is cleanly broken.
#[test]
fn random_device_garbage_never_panics_or_verifies() {
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut usable, mut broken) = (0, 0);
    for round in 0..200 {
        let (dev, mut d) = setup();
        for _ in 0..20 {
            if d.state() != DriverState::Ready {
                break; // the driver reset the device: its rings are gone
            }
            let r = next();
            let q = (r % 3) as usize;
            match (r >> 8) % 4 {
                0 => {
                    // Random used element.
                    let (id, len) = ((next() % 40) as u32, (next() % 70_000) as u32);
                    dev.dev().push_used(q, id, len);
                }
                1 => {
                    // Random bytes in a staging buffer, used with a random length.
                    let n = (next() % 300) as usize;
                    let bytes: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                    let len = (next() % 400) as u32;
                    let _ = dev.dev().stage_raw(&bytes, len);
                }
                2 => {
                    // A well-formed chunk header around random object bytes.
                    let n = 1 + (next() % 600) as usize;
                    let mut obj: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                    if next() % 2 == 0 && n >= 4 {
                        obj[..4].copy_from_slice(&0x4245_4553u32.to_le_bytes());
                    }
                    dev.dev().deliver(&obj);
                }
                _ => {
                    // A used index moved by a random amount.
                    let idx = dev.dev().used_idx[q].wrapping_add((next() % 5) as u16);
                    dev.dev().set_used_idx(q, idx);
                }
            }
            d.poll();
        }
        let c = d.counters();
        assert_eq!(c.accepted, 0, "round {round}: garbage verified");
        assert!(!d.available(APP_A, TASK_A, RES));
        if d.state() == DriverState::Ready {
            usable += 1;
            // Still usable: a good bundle goes through (buffers were recycled). The ring may
            // be short of buffers if the device kept some; deliver only if one is posted.
            let data = content(64, round as u8);
            let b = dev.dev().spec(APP_A, TASK_A, RES, 1, &data).build();
            let m = dev.dev().chunk_msg(&b);
            dev.dev().stage_raw(&m, m.len() as u32).unwrap();
            let got = d.claim(APP_A, TASK_A, RES).map(|r| r.content);
            assert_eq!(
                got,
                Ok(data),
                "round {round}: {:?} {:?}",
                d.state(),
                d.counters()
            );
        } else {
            broken += 1;
            assert!(matches!(
                d.claim(APP_A, TASK_A, RES),
                Err(ClaimError::DeviceBroken(_))
            ));
        }
    }
    // Both outcomes were exercised.
    assert!(
        usable > 20 && broken > 20,
        "usable {usable}, broken {broken}"
    );
}
