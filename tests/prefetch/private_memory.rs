//! 6e: the backend cannot touch private guest memory. The guest (on purpose) points a staging
//! descriptor at a private heap buffer; the backend, which was given only the shared window,
//! refuses it (event and counter), writes nothing there, and the guest keeps working. The
//! hostile ops exist only in the test image: the default image answers them as unknown.

use see_e2e::{
    guest::{field, field_u64},
    kvm_available,
};
use see_prefetch_backend::{BackendEvent, QueueName};

use see_e2e::rig::{Options, Res, Rig, OP_AWAIT, OP_BAD_DESCRIPTOR, OP_RUN, OP_VICTIM};

#[test]
fn a_descriptor_into_private_ram_is_refused_and_the_guest_keeps_working() {
    if !kvm_available() {
        return;
    }
    let r = Res::data(1, 7, 3, 1, 100 * 1024);
    let warm_up = Res::data(1, 7, 2, 1, 1024);
    let mut rig = Rig::start(&Options {
        resources: vec![r.clone(), warm_up.clone()],
        test_image: true,
        ..Options::default()
    });
    // The session's floors snapshot takes the first staging buffer; a bundle staged and
    // verified after it means the device holds no buffer in flight, so the buffer the guest
    // corrupts next is the one the device takes next.
    rig.prefetch(&warm_up);
    rig.dispatch(1, OP_AWAIT, &[7, 2]);
    rig.guest.wait_line("staged res=2", |l| {
        l.starts_with("see: staged app=1 task=7 res=2")
    });
    rig.dispatch(1, OP_BAD_DESCRIPTOR, &[]);
    let line = rig
        .guest
        .wait_line("bad-descriptor", |l| l.starts_with("see: bad-descriptor "));
    let addr = u64::from_str_radix(field(&line, "addr").trim_start_matches("0x"), 16)
        .unwrap_or_else(|e| panic!("addr in {line:?}: {e}"));
    assert!(addr < 0xC000_0000, "the victim must be private RAM: {line}");

    rig.prefetch(&r);
    let refused = rig.wait_event("Refused", |e| matches!(e, BackendEvent::Refused { .. }));
    assert_eq!(
        refused,
        BackendEvent::Refused {
            queue: QueueName::Staging,
            addr,
            len: field_u64(&line, "len") as u32,
        }
    );
    assert!(rig.backend.stats().refused_descriptors >= 1);

    // The bundle still arrives (in the next buffer) and is claimed intact.
    rig.dispatch(1, OP_AWAIT, &[7, 3]);
    rig.guest.wait_line("staged res=3", |l| {
        l.starts_with("see: staged app=1 task=7 res=3")
    });
    rig.dispatch(1, OP_RUN, &[7]);
    let claim = rig.guest.wait_line("claim res=3", |l| {
        l.starts_with("see: claim app=1 task=7 res=3 ")
    });
    assert_eq!(field(&claim, "sha384"), r.sha384(), "{claim}");
    assert_eq!(field_u64(&claim, "staged"), 1, "{claim}");

    rig.dispatch(1, OP_VICTIM, &[]);
    let victim = rig
        .guest
        .wait_line("victim", |l| l.starts_with("see: victim "));
    assert_eq!(victim, "see: victim intact=1");
    let console = rig.stop();
    let counters = see_e2e::guest::line(&console, "see: counters ");
    // The refused buffer came back empty: counted as malformed, then reposted.
    assert_eq!(field_u64(counters, "malformed"), 1, "{counters}");
    assert_eq!(field_u64(counters, "rejected"), 0, "{counters}");
}

#[test]
fn the_default_image_has_no_hostile_ops() {
    if !kvm_available() {
        return;
    }
    let r = Res::data(1, 7, 3, 1, 4096);
    let mut rig = Rig::start(&Options {
        resources: vec![r.clone()],
        ..Options::default()
    });
    for op in [OP_BAD_DESCRIPTOR, OP_VICTIM] {
        rig.dispatch(1, op, &[]);
        let line = rig.guest.wait_line("unknown operation", |l| {
            l.contains(&format!("has unknown operation {op}"))
        });
        assert!(line.ends_with("ignored"), "{line}");
    }
    // And it serves on.
    rig.prefetch(&r);
    rig.dispatch(1, OP_RUN, &[7]);
    let claim = rig.guest.wait_line("claim res=3", |l| {
        l.starts_with("see: claim app=1 task=7 res=3 ")
    });
    assert_eq!(field(&claim, "sha384"), r.sha384(), "{claim}");
    let console = rig.stop();
    assert!(!console.contains("see: bad-descriptor"), "{console}");
}

/// The hostile ops' console text: in the test image's code, not in the default image's.
const HOSTILE_MARKER: &[u8] = b"see: bad-descriptor head=";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn only_the_test_image_contains_the_hostile_ops() {
    let default = std::fs::read(see_e2e::kernel_image()).expect("the default image");
    assert!(
        !contains(&default, HOSTILE_MARKER),
        "the default image contains the hostile ops: the `test-ops` feature leaked into it"
    );
    let test = std::fs::read(see_e2e::test_kernel_image()).expect("the test image");
    assert!(
        contains(&test, HOSTILE_MARKER),
        "the control: the test image has the hostile ops, so the marker must be found"
    );
}
