//! Rollback protection across a reboot (SPEC.md section 8): the backend's
//! floors file, raised when it signs a version, reaches a freshly booted guest in a signed
//! snapshot for its new session, so a host that offers an older version after a reboot is
//! refused; and an expired snapshot is refused, leaving the guest closed to every bundle.

use see_e2e::{
    guest::{field, field_u64},
    kvm_available,
};
use see_prefetch_backend::{floors::Floors, BackendEvent};
use virtio_prefetch_wire::{Floor, RejectReason};

use see_e2e::rig::{Options, Res, Rig, OP_AWAIT, OP_PROBE};

fn is_reject(e: &BackendEvent, res: u64, reason: RejectReason) -> bool {
    matches!(e, BackendEvent::Report { reason: Some(r), resource_id, .. }
        if *r == reason && *resource_id == res)
}

fn line<'a>(console: &'a str, prefix: &str) -> &'a str {
    console
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in\n{console}"))
}

#[test]
fn a_version_seen_before_a_reboot_cannot_be_rolled_back_after_it() {
    if !kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let floors = dir.path().join("floors.json");
    // Boot 1: the host serves version 2; the guest verifies it, the backend records the floor.
    let v2 = Res::data(1, 7, 3, 2, 8 * 1024);
    let mut rig = Rig::start(&Options {
        resources: vec![v2.clone()],
        floors: Some(floors.clone()),
        ..Options::default()
    });
    rig.prefetch(&v2);
    rig.dispatch(1, OP_AWAIT, &[7, 3]);
    rig.guest.wait_line("staged res=3", |l| {
        l.starts_with("see: staged app=1 task=7 res=3")
    });
    let console = rig.stop();
    assert_eq!(
        field_u64(line(&console, "see: counters "), "floors"),
        1,
        "{console}"
    );
    assert_eq!(
        Floors::open(&floors).unwrap().view().floors,
        [Floor {
            resource_id: 3,
            min_version: 2
        }],
        "the floor of resource 3 persisted"
    );
    // Boot 2: a fresh guest (nothing in RAM) and a host whose store offers only version 1.
    let v1 = Res::data(1, 7, 3, 1, 8 * 1024);
    let mut rig = Rig::start(&Options {
        resources: vec![v1.clone()],
        floors: Some(floors),
        ..Options::default()
    });
    rig.prefetch(&v1);
    rig.wait_event("Report Reject Rollback for resource 3", |e| {
        is_reject(e, 3, RejectReason::Rollback)
    });
    rig.dispatch(1, OP_PROBE, &[7, 3]);
    let probe = rig
        .guest
        .wait_line("probe", |l| l.starts_with("see: probe app=1 task=7 res=3 "));
    assert_eq!(field_u64(probe.as_str(), "available"), 0, "{probe}");
    assert_eq!(field(probe.as_str(), "claim"), "not-staged", "{probe}");
    let console = rig.stop();
    let rejects = line(&console, "see: rejects ");
    assert_eq!(field_u64(rejects, "rollback"), 1, "{rejects}");
    assert_eq!(field_u64(rejects, "no_floors"), 0, "{rejects}");
}

#[test]
fn an_expired_snapshot_is_refused_and_the_guest_stays_closed() {
    if !kvm_available() {
        return;
    }
    // The measured lower bound on the time lies past any snapshot this backend signs (valid
    // for a day): a frozen signer's view, as far as the guest can tell.
    let far_future = see_prefetch_backend::floors::now_s() + 10 * 365 * 24 * 3600;
    let r = Res::data(1, 7, 3, 1, 4 * 1024);
    let mut rig = Rig::start(&Options {
        resources: vec![r.clone()],
        cmdline: format!("{}={far_future}", see_abi::cmdline::MIN_EPOCH),
        ..Options::default()
    });
    rig.wait_event("Report Reject StaleFloors", |e| {
        is_reject(e, 0, RejectReason::StaleFloors)
    });
    rig.prefetch(&r);
    rig.wait_event("Report Reject NoFloors for resource 3", |e| {
        is_reject(e, 3, RejectReason::NoFloors)
    });
    let console = rig.stop();
    let rejects = line(&console, "see: rejects ");
    assert_eq!(field_u64(rejects, "stale_floors"), 1, "{rejects}");
    assert_eq!(field_u64(rejects, "no_floors"), 1, "{rejects}");
    assert_eq!(
        field_u64(line(&console, "see: counters "), "accepted"),
        0,
        "{console}"
    );
}
