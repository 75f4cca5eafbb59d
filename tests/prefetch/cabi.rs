//! The claim API under its C-ABI names, in the guest: the serve app's
//! `OP_C_CLAIM` calls `see_prefetch_available` and `see_claim_prefetch` as `extern "C"`
//! functions on the driver the kernel installed for them. A prefetched resource comes out byte
//! for byte; a buffer too small gets `SEE_E_TOO_SMALL` with the length needed and the resource
//! stays staged; a resource that is not staged falls back to a demand fetch (as
//! guest-driver/include/see_prefetch.h documents); one the store lacks is `SEE_E_REFUSED`, and
//! another app's `SEE_E_DENIED`.

use see_e2e::{
    guest::{field, field_u64},
    kvm_available,
};
use see_prefetch_backend::BackendEvent;

use see_e2e::rig::{Options, Res, Rig, OP_AWAIT, OP_C_CLAIM};

const SEE_OK: i64 = 0;
const SEE_E_DENIED: i64 = -3;
const SEE_E_TOO_SMALL: i64 = -4;
const SEE_E_REFUSED: i64 = -5;

/// One C-ABI claim of (task, res) as `app` into a buffer of `cap` bytes: its console line.
fn c_claim(rig: &mut Rig, app: u32, task: u64, res: u64, cap: u64) -> String {
    rig.dispatch(app, OP_C_CLAIM, &[task, res, cap]);
    rig.guest.wait_line(&format!("cabi res={res}"), |l| {
        l.starts_with(&format!("see: cabi app={app} task={task} res={res} "))
    })
}

fn rc(line: &str) -> i64 {
    field(line, "rc")
        .parse()
        .unwrap_or_else(|_| panic!("rc= is not a number: {line}"))
}

#[test]
fn the_c_abi_claims_a_prefetched_resource_and_falls_back_or_fails_as_documented() {
    if !kvm_available() {
        return;
    }
    let staged = Res::data(1, 7, 3, 1, 64 * 1024);
    let unstaged = Res::data(1, 7, 4, 1, 16 * 1024);
    let others = Res::data(2, 9, 6, 1, 4096);
    let mut rig = Rig::start(&Options {
        resources: vec![staged.clone(), unstaged.clone(), others],
        // Allowed, but the store does not hold it: the demand is refused.
        extra_allow: vec![(1, 7, 5)],
        ..Options::default()
    });
    rig.prefetch(&staged);
    rig.dispatch(1, OP_AWAIT, &[7, 3]);
    rig.guest.wait_line("staged res=3", |l| {
        l.starts_with("see: staged app=1 task=7 res=3")
    });

    // Too small a buffer: the length needed, nothing written, still staged.
    let line = c_claim(&mut rig, 1, 7, 3, 100);
    assert_eq!(rc(&line), SEE_E_TOO_SMALL, "{line}");
    assert_eq!(field(&line, "code"), "SEE_E_TOO_SMALL", "{line}");
    assert_eq!(field_u64(&line, "len"), 64 * 1024, "{line}");
    assert_eq!(field_u64(&line, "available"), 1, "{line}");
    assert_eq!(field_u64(&line, "available_after"), 1, "{line}");

    // The staged claim: byte for byte, and still in the verified cache afterwards.
    let line = c_claim(&mut rig, 1, 7, 3, 1 << 20);
    assert_eq!(rc(&line), SEE_OK, "{line}");
    assert_eq!(field_u64(&line, "available"), 1, "{line}");
    assert_eq!(field_u64(&line, "len"), 64 * 1024, "{line}");
    assert_eq!(field(&line, "sha384"), staged.sha384(), "{line}");
    assert_eq!(field_u64(&line, "available_after"), 1, "{line}");
    // A second claim is served from the cache (a copy into the caller's buffer), same bytes.
    let line = c_claim(&mut rig, 1, 7, 3, 1 << 20);
    assert_eq!(rc(&line), SEE_OK, "{line}");
    assert_eq!(field(&line, "sha384"), staged.sha384(), "{line}");

    // Not staged: see_claim_prefetch demand-fetches it (see_prefetch.h), byte for byte.
    let line = c_claim(&mut rig, 1, 7, 4, 1 << 20);
    assert_eq!(rc(&line), SEE_OK, "{line}");
    assert_eq!(field_u64(&line, "available"), 0, "{line}");
    assert_eq!(field(&line, "sha384"), unstaged.sha384(), "{line}");
    rig.wait_event("Demand of resource 4", |e| {
        matches!(
            e,
            BackendEvent::Demand {
                resource_id: 4,
                served: true,
                ..
            }
        )
    });

    // Not staged and not in the store: the demand is refused.
    let line = c_claim(&mut rig, 1, 7, 5, 4096);
    assert_eq!(rc(&line), SEE_E_REFUSED, "{line}");
    assert_eq!(field(&line, "code"), "SEE_E_REFUSED", "{line}");
    assert_eq!(field(&line, "sha384"), "-", "{line}");

    // App 1 asks for app 2's resource: denied, without a demand.
    let line = c_claim(&mut rig, 1, 9, 6, 4096);
    assert_eq!(rc(&line), SEE_E_DENIED, "{line}");
    assert_eq!(field(&line, "code"), "SEE_E_DENIED", "{line}");

    let console = rig.stop();
    let counters = see_e2e::guest::line(&console, "see: counters ");
    // One staged hit (the TOO_SMALL attempt leaves it staged), one cache hit, one demand
    // served.
    assert_eq!(field_u64(counters, "hits"), 1, "{counters}");
    assert_eq!(field_u64(counters, "cache_hits"), 1, "{counters}");
    assert_eq!(field_u64(counters, "demands"), 1, "{counters}");
}
