//! 6d: app B cannot claim (nor demand-fetch) app A's resource, staged or not; A still can.

use see_e2e::{
    guest::{field, field_u64},
    kvm_available,
};

use see_e2e::rig::{Options, Res, Rig, OP_AWAIT, OP_PROBE, OP_RUN};

#[test]
fn app_b_cannot_claim_app_a_resource() {
    if !kvm_available() {
        return;
    }
    let a = Res::data(1, 7, 3, 1, 4096);
    let b_own = Res::data(2, 9, 5, 1, 4096);
    let mut rig = Rig::start(&Options {
        resources: vec![a.clone(), b_own],
        ..Options::default()
    });
    rig.prefetch(&a);
    rig.dispatch(1, OP_AWAIT, &[7, 3]);
    rig.guest.wait_line("staged res=3", |l| {
        l.starts_with("see: staged app=1 task=7 res=3")
    });

    // App 2 asks for app 1's task and resource: not visible, claim and fetch refused.
    rig.dispatch(2, OP_PROBE, &[7, 3]);
    let probe = rig
        .guest
        .wait_line("probe app=2", |l| l.starts_with("see: probe app=2 "));
    assert_eq!(field_u64(&probe, "available"), 0, "{probe}");
    assert_eq!(field(&probe, "claim"), "denied", "{probe}");
    assert_eq!(field(&probe, "fetch"), "denied", "{probe}");

    // The refusal left the resource staged for its owner.
    rig.dispatch(1, OP_RUN, &[7]);
    let claim = rig.guest.wait_line("claim res=3", |l| {
        l.starts_with("see: claim app=1 task=7 res=3 ")
    });
    assert_eq!(field(&claim, "sha384"), a.sha384(), "{claim}");
    assert_eq!(field_u64(&claim, "staged"), 1, "{claim}");
    rig.stop();
}
