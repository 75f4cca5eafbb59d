//! 6c: what a hostile host can do to bundles. Each tampered bundle is rejected, counted by
//! reason (the guest's Report reaches the backend, and the guest's reject counters show it), and
//! never claimable (the genuine copy, cached after its claim, is evicted by the host first);
//! shared memory rewritten after the guest copied a bundle changes nothing.
//! A bundle for another task is tried twice: for a task no app may claim (the registry refuses
//! it), and, validly signed, for another task the guest does allow, answering a demand of the
//! first (the demand check refuses it: `WrongTask`, SPEC.md section 6).

use p384::{
    elliptic_curve::Generate,
    pkcs8::{EncodePrivateKey, LineEnding},
    SecretKey,
};
use see_e2e::{
    guest::{field, field_u64},
    kvm_available,
};
use see_prefetch_backend::{BackendEvent, Eviction, Tamper};
use virtio_prefetch_wire::{RejectReason, ReportKind};

use see_e2e::rig::{Options, Res, Rig, OP_AWAIT, OP_C_CLAIM, OP_PROBE, OP_RESET, OP_RUN};

/// True for the backend's event of a guest Report rejecting `res` for `reason`.
fn is_reject(e: &BackendEvent, res: u64, reason: RejectReason) -> bool {
    matches!(e, BackendEvent::Report { reason: Some(r), resource_id, .. }
        if *r == reason && *resource_id == res)
}

/// Orders a prefetch of `r` under `tamper`, waits for the guest's reject Report with `reason`,
/// and checks that the owner cannot claim it.
fn rejected(rig: &mut Rig, r: &Res, tamper: Tamper, reason: RejectReason) {
    rig.tamper(tamper);
    rig.prefetch(r);
    rig.wait_event(&format!("Report Reject {reason:?} for {}", r.id), |e| {
        is_reject(e, r.id, reason)
    });
    rig.tamper(Tamper::None);
    rig.dispatch(r.app, OP_PROBE, &[r.task, r.id]);
    let probe = rig.guest.wait_line("probe", |l| {
        l.starts_with(&format!(
            "see: probe app={} task={} res={} ",
            r.app, r.task, r.id
        ))
    });
    assert_eq!(field_u64(&probe, "available"), 0, "{tamper:?}: {probe}");
    assert_eq!(field(&probe, "claim"), "not-staged", "{tamper:?}: {probe}");
}

fn rejects_line(console: &str) -> String {
    console
        .lines()
        .find(|l| l.starts_with("see: rejects "))
        .expect("rejects line")
        .to_string()
}

#[test]
fn tampered_bundles_are_rejected_by_reason_and_never_claimable() {
    if !kvm_available() {
        return;
    }
    // Version 1 stays in the store for the rollback; version 2 is what the backend serves.
    let older = Res::data(1, 7, 3, 1, 16 * 1024);
    let r = Res::data(1, 7, 3, 2, 16 * 1024);
    let other = Res::data(1, 8, 4, 1, 16 * 1024);
    let mut rig = Rig::start(&Options {
        resources: vec![older, r.clone(), other.clone()],
        ..Options::default()
    });
    rejected(&mut rig, &r, Tamper::ForeignKey, RejectReason::BadSignature);
    rejected(
        &mut rig,
        &r,
        Tamper::FlipHeaderBit,
        RejectReason::BadSignature,
    );
    rejected(
        &mut rig,
        &r,
        Tamper::FlipContentBit,
        RejectReason::DigestMismatch,
    );
    rejected(&mut rig, &r, Tamper::WrongTask, RejectReason::WrongTask);

    // A good delivery, staged and claimed; then its replay and an older version are refused.
    rig.prefetch(&r);
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
    // The claimed copy stays in the guest's verified cache: the host evicts it (SPEC.md
    // section 5, Evict), so that what follows can only be claimable if a tampered bundle got
    // in. A task can no longer claim it afterwards.
    rig.backend
        .evict(Eviction {
            app_id: 1,
            resource_id: 3,
        })
        .expect("evict sent");
    rig.wait_event("Report Evict for 3", |e| {
        matches!(
            e,
            BackendEvent::Report {
                kind: ReportKind::Evict,
                resource_id: 3,
                ..
            }
        )
    });
    rejected(&mut rig, &r, Tamper::ReplayLast, RejectReason::Replay);
    rejected(&mut rig, &r, Tamper::Rollback, RejectReason::Rollback);

    // The host rewrites a staging buffer after the guest verified the bundle in it (the
    // backend does it when it next stages something: `other`'s delivery); the guest's private
    // copy is unchanged. The tamper is set and the guest told to wait before the prefetch is
    // ordered, so that no later host command runs the backend again between the delivery and
    // the guest's copy (the backend rewrites at its next run, not when the buffer comes back).
    rig.tamper(Tamper::RewriteAfterDelivery);
    rig.dispatch(1, OP_AWAIT, &[7, 3]);
    rig.guest.wait_line("awaiting res=3", |l| {
        l.starts_with("see: awaiting app=1 task=7 res=3")
    });
    rig.prefetch(&r);
    rig.guest.wait_line("staged res=3", |l| {
        l.starts_with("see: staged app=1 task=7 res=3")
    });
    rig.tamper(Tamper::None);
    rig.prefetch(&other);
    rig.wait_event("Staged resource 4", |e| {
        matches!(e, BackendEvent::Staged { resource_id: 4, .. })
    });
    // The rewrite is done (at the latest, the run that staged `other` began with it), and
    // before the claim.
    assert_eq!(
        rig.backend.stats().rewrites,
        1,
        "the host never rewrote the buffer: this test would prove nothing"
    );
    rig.dispatch(1, OP_RUN, &[7]);
    let claim = rig.guest.wait_line("second claim res=3", |l| {
        l.starts_with("see: claim app=1 task=7 res=3 ") && l.contains(" staged=1 ")
    });
    assert_eq!(field(&claim, "sha384"), r.sha384(), "rewritten: {claim}");

    let rejects = rejects_line(&rig.stop());
    for (name, n) in [
        ("bad_signature", 2),
        ("digest_mismatch", 1),
        ("wrong_task", 1),
        ("replay", 1),
        ("rollback", 1),
        ("malformed", 0),
    ] {
        assert_eq!(field_u64(&rejects, name), n, "{name}: {rejects}");
    }
}

/// A secret key the image does not embed (PKCS#8 PEM in `dir`).
fn foreign_key(dir: &std::path::Path) -> std::path::PathBuf {
    let secret = SecretKey::try_generate().expect("system RNG");
    let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("encode key");
    let path = dir.join("foreign.key");
    std::fs::write(&path, pem.as_bytes()).expect("write key");
    path
}

#[test]
fn a_backend_with_a_foreign_key_cannot_stage_or_serve() {
    if !kvm_available() {
        return;
    }
    let keydir = tempfile::tempdir().expect("tempdir");
    let r = Res::data(1, 7, 3, 1, 4096);
    let mut rig = Rig::start(&Options {
        resources: vec![r.clone()],
        signing_key: Some(foreign_key(keydir.path())),
        ..Options::default()
    });
    // The session's floors snapshot, signed with that key, is refused first; the guest then
    // accepts no bundle of the session (fail closed, SPEC.md section 8).
    rig.wait_event("Report Reject BadSignature for the floors snapshot", |e| {
        is_reject(e, 0, RejectReason::BadSignature)
    });
    rig.prefetch(&r);
    rig.wait_event("Report Reject NoFloors", |e| {
        is_reject(e, r.id, RejectReason::NoFloors)
    });
    // The task's claim falls back to a demand fetch, whose bundle is refused too: exit 104.
    rig.dispatch(1, OP_RUN, &[7]);
    let out = rig.guest.finish();
    out.assert_code(see_abi::exit::APP_FAILURE)
        .assert_stdout("see: claim-failed app=1 task=7 res=3")
        .assert_stdout("bad_signature=1")
        .assert_stdout("no_floors=2");
    assert!(!out.stdout.contains("see: claim app="), "{}", out.stdout);
}

#[test]
fn a_bundle_from_an_earlier_session_is_refused() {
    if !kvm_available() {
        return;
    }
    let r = Res::data(1, 7, 3, 1, 8 * 1024);
    let mut rig = Rig::start(&Options {
        resources: vec![r.clone()],
        ..Options::default()
    });
    // Session 1: a good bundle arrives and is claimed (the backend keeps its bytes).
    rig.prefetch(&r);
    rig.dispatch(1, OP_AWAIT, &[7, 3]);
    rig.guest.wait_line("staged res=3", |l| {
        l.starts_with("see: staged app=1 task=7 res=3")
    });
    rig.dispatch(1, OP_RUN, &[7]);
    rig.guest.wait_line("claim res=3", |l| {
        l.starts_with("see: claim app=1 task=7 res=3 ")
    });
    // Session 2 (fresh nonce, next epoch): the host replays session 1's bundle.
    rig.dispatch(1, OP_RESET, &[]);
    let reset = rig
        .guest
        .wait_line("reset", |l| l.starts_with("see: reset "));
    let epoch = field_u64(&reset, "epoch");
    rig.wait_event(
        "the new session's Hello",
        |e| matches!(e, BackendEvent::Hello { epoch: e, .. } if *e == epoch),
    );
    rejected(&mut rig, &r, Tamper::ReplayLast, RejectReason::WrongSession);
    // The honest bundle of the new session is accepted and claimable.
    rig.prefetch(&r);
    rig.dispatch(1, OP_RUN, &[7]);
    let claim = rig.guest.wait_line("claim res=3", |l| {
        l.starts_with("see: claim app=1 task=7 res=3 ")
    });
    assert_eq!(field(&claim, "sha384"), r.sha384(), "{claim}");
    let rejects = rejects_line(&rig.stop());
    assert_eq!(field_u64(&rejects, "wrong_session"), 1, "{rejects}");
}

/// One probe of (task, res) as app 1: its console line.
fn probe(rig: &mut Rig, task: u64, res: u64) -> String {
    rig.dispatch(1, OP_PROBE, &[task, res]);
    rig.guest.wait_line(&format!("probe task={task}"), |l| {
        l.starts_with(&format!("see: probe app=1 task={task} res={res} "))
    })
}

#[test]
fn a_demand_answered_for_another_allowed_task_is_rejected_as_wrong_task() {
    if !kvm_available() {
        return;
    }
    // Tasks 7 (A) and 8 (B) of app 1 may both claim resource 3, so the registry passes a
    // bundle for either: only the check that a demanded bundle names the demanded (app, task,
    // resource) (SPEC.md section 6, rule 3) can refuse B's bundle as the answer to A's demand.
    let r = Res::data(1, 7, 3, 1, 16 * 1024);
    let mut rig = Rig::start(&Options {
        resources: vec![r.clone()],
        extra_allow: vec![(1, 8, 3)],
        ..Options::default()
    });
    rig.tamper(Tamper::SignForTask(8));
    // Through the C ABI, so the failed demand is an error code and the app serves on.
    rig.dispatch(1, OP_C_CLAIM, &[7, 3, 1 << 20]);
    let line = rig.guest.wait_line("cabi res=3", |l| {
        l.starts_with("see: cabi app=1 task=7 res=3 ")
    });
    assert_eq!(field(&line, "code"), "SEE_E_REJECTED", "{line}");
    assert_eq!(field(&line, "sha384"), "-", "{line}");
    let staged = rig.wait_event("Staged for task 8", |e| {
        matches!(e, BackendEvent::Staged { resource_id: 3, .. })
    });
    assert!(
        matches!(staged, BackendEvent::Staged { task_id: 8, demand_cookie: c, .. } if c != 0),
        "the backend did not answer the demand with a bundle for task 8: {staged:?}"
    );
    let report = rig.wait_event("Report Reject WrongTask", |e| {
        is_reject(e, r.id, RejectReason::WrongTask)
    });
    assert!(
        matches!(report, BackendEvent::Report { task_id: 8, .. }),
        "{report:?}"
    );
    rig.tamper(Tamper::None);
    // Claimable neither by A nor by B.
    for task in [7, 8] {
        let p = probe(&mut rig, task, 3);
        assert_eq!(field_u64(&p, "available"), 0, "{p}");
        assert_eq!(field(&p, "claim"), "not-staged", "{p}");
    }
    // A's honest demand still gets the real bytes.
    rig.dispatch(1, OP_C_CLAIM, &[7, 3, 1 << 20]);
    let line = rig.guest.wait_line("second cabi res=3", |l| {
        l.starts_with("see: cabi app=1 task=7 res=3 ") && l.contains(" code=SEE_OK ")
    });
    assert_eq!(field(&line, "sha384"), r.sha384(), "{line}");
    let rejects = rejects_line(&rig.stop());
    for (name, n) in [("wrong_task", 1), ("unexpected", 0), ("bad_signature", 0)] {
        assert_eq!(field_u64(&rejects, name), n, "{name}: {rejects}");
    }
}
