//! 6a and 6b: a demand fetch and a claim checked byte for byte; a prefetched resource is
//! staged before the task asks.

use see_e2e::{
    guest::{field, field_u64},
    kvm_available,
};

use see_e2e::rig::{Options, Res, Rig, OP_AWAIT, OP_RUN};

/// The guest's `see: claim` line for (task, resource).
fn claim_line(rig: &mut Rig, task: u64, res: u64) -> String {
    rig.guest
        .wait_line(&format!("claim task={task} res={res}"), |l| {
            l.starts_with("see: claim ")
                && l.contains(&format!(" task={task} "))
                && l.contains(&format!(" res={res} "))
        })
}

fn check(line: &str, r: &Res, staged: bool) {
    assert_eq!(field_u64(line, "app"), u64::from(r.app), "{line}");
    assert_eq!(field_u64(line, "ver"), r.version, "{line}");
    assert_eq!(field_u64(line, "len"), r.content.len() as u64, "{line}");
    assert_eq!(field(line, "sha384"), r.sha384(), "content differs: {line}");
    assert_eq!(field_u64(line, "staged"), u64::from(staged), "{line}");
}

fn demand_and_prefetch(polling: bool) {
    if !kvm_available() {
        return;
    }
    let demanded = Res::data(1, 7, 3, 2, 64 * 1024);
    let prefetched = Res::data(1, 8, 4, 1, 200 * 1024 + 17);
    let mut rig = Rig::start(&Options {
        resources: vec![demanded.clone(), prefetched.clone()],
        polling,
        ..Options::default()
    });
    // 6a: nothing staged for task 7, so its claim falls back to a demand fetch.
    rig.dispatch(1, OP_RUN, &[7]);
    let line = claim_line(&mut rig, 7, 3);
    check(&line, &demanded, false);

    // 6b: order the prefetch, let the guest report it staged, and only then run the task.
    rig.prefetch(&prefetched);
    rig.dispatch(1, OP_AWAIT, &[8, 4]);
    rig.guest.wait_line("staged res=4", |l| {
        l.starts_with("see: staged app=1 task=8 res=4")
    });
    rig.dispatch(1, OP_RUN, &[8]);
    let line = claim_line(&mut rig, 8, 4);
    check(&line, &prefetched, true);

    let console = rig.stop();
    let counters = see_e2e::guest::line(&console, "see: counters ");
    assert_eq!(field_u64(counters, "rejected"), 0, "{counters}");
    assert_eq!(field_u64(counters, "hits"), 1, "{counters}");
    assert_eq!(field_u64(counters, "demands"), 1, "{counters}");
}

#[test]
fn demand_fetch_and_staged_claim_byte_for_byte_interrupts() {
    demand_and_prefetch(false);
}

#[test]
fn demand_fetch_and_staged_claim_byte_for_byte_polling() {
    demand_and_prefetch(true);
}
