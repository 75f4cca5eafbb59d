//! Attacks on the rings: used ids, lengths and indices.

use super::*;

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
    assert!(dev.dev().now - before < 200_000, "failed at once, no wait");
    let (old_nonce, _) = d.session();
    d.reset().unwrap();
    let (nonce, epoch) = d.session();
    assert_ne!(nonce, old_nonce);
    assert_eq!(epoch, 2);
    let data = content(10, 2);
    stage(&dev, RES, 2, &data);
    assert_eq!(d.claim(APP_A, TASK_A, RES).unwrap().content, data);
}
