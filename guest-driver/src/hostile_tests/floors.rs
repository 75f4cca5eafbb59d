//! Floors snapshots (SPEC.md section 8): a new boot gets its version floors only from a valid
//! snapshot of its own session, refuses every bundle before one, and refuses expired, foreign,
//! tampered and older snapshots.

use std::vec;

use super::*;
use crate::testdev::{floors_snapshot, FLOORS_EXPIRES};
use virtio_prefetch_wire::Floor;

/// A driver "booted" against a device whose snapshots carry `floors`; `prepare` adjusts the
/// device (and the config) before bring-up.
fn boot(
    floors: &[(u64, u64)],
    prepare: impl FnOnce(&mut crate::testdev::Dev, &mut DriverConfig),
) -> (TestPlatform, Driver<TestPlatform>) {
    let dev = TestPlatform::new();
    let mut config = config(Completion::Interrupt);
    {
        let mut dv = dev.dev();
        dv.floors = floors
            .iter()
            .map(|&(resource_id, min_version)| Floor {
                resource_id,
                min_version,
            })
            .collect();
        prepare(&mut dv, &mut config);
    }
    let pubkey = dev.dev().key.verifying_key().to_sec1_bytes();
    let mut d = Driver::new(dev.clone(), config, &pubkey, registry()).expect("driver up");
    dev.dev().irq = Some(d.interrupt_handle());
    d.poll();
    (dev, d)
}

#[test]
fn a_new_boot_takes_its_floors_from_the_snapshot() {
    // The previous boot accepted version 5; this boot's RAM knows nothing of it.
    let (dev, mut d) = boot(&[(RES, 5), (RES2, 2)], |_, _| {});
    assert_eq!(d.counters().floors_snapshots, 1);
    stage(&dev, RES, 4, &content(40, 1));
    assert_eq!(rejected(&mut d, RejectReason::Rollback), 1);
    assert!(!d.available(APP_A, TASK_A, RES));
    stage(&dev, RES, 5, &content(40, 2));
    assert_eq!(d.claim(APP_A, TASK_A, RES).unwrap().version, 5);
    // A resource without a floor takes any version.
    let (dev, mut d) = boot(&[(RES, 5)], |_, _| {});
    stage(&dev, RES2, 1, &content(40, 3));
    assert!(d.available(APP_A, TASK_A, RES2));
}

#[test]
fn without_a_snapshot_every_bundle_is_refused() {
    let (dev, mut d) = boot(&[], |dv, _| dv.send_floors = false);
    stage(&dev, RES, 1, &content(40, 1));
    assert_eq!(rejected(&mut d, RejectReason::NoFloors), 1);
    assert!(!d.available(APP_A, TASK_A, RES));
    // A demand fails at once with the reason.
    dev.dev().serve(APP_A, TASK_A, RES2, 1, &content(40, 2));
    assert_eq!(
        d.claim_or_fetch(APP_A, TASK_A, RES2, 0),
        Err(ClaimError::Rejected(RejectReason::NoFloors))
    );
    // A snapshot arriving later opens the session.
    let snapshot = dev.dev().floors_snapshot();
    dev.dev().deliver(&snapshot);
    stage(&dev, RES, 1, &content(40, 3));
    assert!(d.available(APP_A, TASK_A, RES));
    assert_eq!(d.counters().floors_snapshots, 1);
}

#[test]
fn an_expired_snapshot_is_refused() {
    // The measured lower bound on the time is past the snapshot's expiry (a frozen signer).
    let (dev, mut d) = boot(&[(RES, 5)], |_, c| c.min_time_s = FLOORS_EXPIRES);
    assert_eq!(rejected(&mut d, RejectReason::StaleFloors), 1);
    assert_eq!(d.counters().floors_snapshots, 0);
    stage(&dev, RES, 5, &content(40, 1));
    assert_eq!(rejected(&mut d, RejectReason::NoFloors), 1);
    // One second before the bound's end is still valid.
    let (dev, mut d) = boot(&[(RES, 5)], |_, c| c.min_time_s = FLOORS_EXPIRES - 1);
    stage(&dev, RES, 5, &content(40, 1));
    assert!(d.available(APP_A, TASK_A, RES));
}

#[test]
fn a_snapshot_older_than_one_seen_since_boot_is_refused() {
    let (dev, mut d) = boot(&[(RES, 5)], |dv, _| dv.floors_serial = 7);
    // The next session's snapshot has a lower serial (a signer restored from a backup).
    {
        let mut dv = dev.dev();
        dv.floors_serial = 6;
        dv.floors = vec![];
    }
    d.reset().unwrap();
    d.poll();
    assert_eq!(rejected(&mut d, RejectReason::StaleFloors), 1);
    // One that expired at or before the issue time of the one accepted is refused too.
    {
        let mut dv = dev.dev();
        dv.floors_serial = 7;
        dv.floors_expires = FLOORS_EXPIRES - 60;
    }
    d.reset().unwrap();
    d.poll();
    assert_eq!(rejected(&mut d, RejectReason::StaleFloors), 2);
    // Same serial, fresh: accepted; the floor learnt in the first session still holds.
    dev.dev().floors_expires = FLOORS_EXPIRES;
    d.reset().unwrap();
    d.poll();
    assert_eq!(d.counters().floors_snapshots, 2);
    stage(&dev, RES, 4, &content(40, 1));
    assert_eq!(rejected(&mut d, RejectReason::Rollback), 1);
}

#[test]
fn a_snapshot_for_another_session_is_refused() {
    let (dev, mut d) = boot(&[], |dv, _| dv.send_floors = false);
    let (nonce, epoch) = d.session();
    let key = dev.dev().key.clone();
    let mut other = nonce;
    other[0] ^= 1;
    dev.dev()
        .deliver(&floors_snapshot(&key, other, epoch, 1, FLOORS_EXPIRES, &[]));
    dev.dev().deliver(&floors_snapshot(
        &key,
        nonce,
        epoch + 1,
        1,
        FLOORS_EXPIRES,
        &[],
    ));
    assert_eq!(rejected(&mut d, RejectReason::WrongSession), 2);
    stage(&dev, RES, 1, &content(40, 1));
    assert_eq!(rejected(&mut d, RejectReason::NoFloors), 1);
}

#[test]
fn a_tampered_or_foreign_snapshot_is_refused() {
    let (dev, mut d) = boot(&[], |dv, _| dv.send_floors = false);
    let (nonce, epoch) = d.session();
    let key = dev.dev().key.clone();
    let floors = [Floor {
        resource_id: RES,
        min_version: 9,
    }];
    // A lowered floor under the PTO's signature.
    let mut lowered = floors_snapshot(&key, nonce, epoch, 1, FLOORS_EXPIRES, &floors);
    let at = virtio_prefetch_wire::FloorsHeader::LEN + 8;
    lowered[at] = 1;
    dev.dev().deliver(&lowered);
    // A later expiry under the PTO's signature.
    let mut extended = floors_snapshot(&key, nonce, epoch, 1, FLOORS_EXPIRES, &floors);
    extended[79] = 0x7f;
    dev.dev().deliver(&extended);
    // A snapshot signed by another key.
    let foreign = floors_snapshot(
        &test_key("not the pto"),
        nonce,
        epoch,
        1,
        FLOORS_EXPIRES,
        &[],
    );
    dev.dev().deliver(&foreign);
    assert_eq!(rejected(&mut d, RejectReason::BadSignature), 3);
    assert_eq!(d.counters().floors_snapshots, 0);
    stage(&dev, RES, 1, &content(40, 1));
    assert_eq!(rejected(&mut d, RejectReason::NoFloors), 1);
    // The genuine one is accepted and its floor applies.
    let genuine = floors_snapshot(&key, nonce, epoch, 1, FLOORS_EXPIRES, &floors);
    dev.dev().deliver(&genuine);
    stage(&dev, RES, 8, &content(40, 2));
    assert_eq!(rejected(&mut d, RejectReason::Rollback), 1);
}
