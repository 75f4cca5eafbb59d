//! Attacks with messages and bundles: malformed chunks, forged, replayed, foreign bundles.

use super::*;

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
    let claimed = d.claim(APP_A, TASK_A, RES).unwrap();
    assert_eq!(claimed.content, data);
    // The tree root the driver verified comes with it: apps need not hash the bytes again.
    let list = crate::testdev::tree_list(&data);
    let root = crate::testdev::tree_root(data.len() as u64, &list);
    assert_eq!(claimed.tree_root, root);
    dev.dev().deliver(&b);
    assert_eq!(rejected(&mut d, RejectReason::Replay), 1);
    // The claimed copy stays cached, untouched by the replay.
    let cached = d.claim(APP_A, TASK_A, RES).unwrap();
    assert_eq!((cached.source, d.counters().accepted), (Source::Cached, 1));
    assert_eq!(cached.content, data);
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
    assert_eq!(rejected(&mut d, RejectReason::Rollback), 1);
    // The cache still serves version 5, not the rolled-back bytes.
    let cached = d.claim(APP_A, TASK_A, RES).unwrap();
    assert_eq!(
        (cached.version, cached.content.to_vec()),
        (5, content(50, 1))
    );
    d.reset().unwrap();
    assert!(
        !d.available(APP_A, TASK_A, RES),
        "a reset empties the cache"
    );
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

#[test]
fn bundle_naming_no_pending_demand_is_unexpected() {
    let (dev, mut d) = setup();
    let b = dev
        .dev()
        .spec(APP_A, TASK_A, RES, 1, &content(50, 1))
        .cookie(77)
        .build();
    dev.dev().deliver(&b);
    assert_eq!(rejected(&mut d, RejectReason::Unexpected), 1);
    assert!(!d.available(APP_A, TASK_A, RES));
}

#[test]
fn over_budget_bundles_evict_the_oldest_and_report_it() {
    let dev = TestPlatform::new();
    let key = dev.dev().key.verifying_key().to_sec1_bytes();
    let mut c = config(Completion::Interrupt);
    c.store_budget = 100;
    let mut d = Driver::new(dev.clone(), c, &key, registry()).unwrap();
    stage(&dev, RES, 1, &content(64, 1));
    stage(&dev, RES2, 1, &content(64, 2));
    d.poll();
    assert_eq!(d.counters().evicted, 1);
    assert!(!d.available(APP_A, TASK_A, RES));
    assert!(d.available(APP_A, TASK_A, RES2));
    d.flush();
    assert_eq!(dev.dev().report_kinds(), vec![3], "Evict reported");
}
