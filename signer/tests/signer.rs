//! The signer process end to end, through the daemon's client (`RemoteSigner`) on a real
//! socket: it signs what the store backs, refuses the rest with a typed reason, rate-limits,
//! records every signature in an anchored audit log, refuses a key file others may read, and
//! the client recovers when a killed signer comes back.

mod common;

use common::{statement, Fixture, SESSION};
use p384::ecdsa::{signature::Verifier, Signature};
use see_audit::TrustedKeys;
use see_prefetch_backend::{
    manifest::seal_batch,
    signer::{bundle_header, BundleSpec, SignError, StatementSigner},
};
use see_signer::{Refusal, RemoteSigner};
use virtio_prefetch_wire::BundleHeader;

fn refusal(result: Result<[u8; 96], SignError>) -> Refusal {
    match result {
        Err(SignError::Refused(reason)) => *reason.downcast::<Refusal>().expect("a Refusal"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn statements_the_store_backs_are_signed_and_audited() {
    let f = Fixture::new(0o600);
    // Fully confined: it refuses to run without Landlock and seccomp, and a syscall off a
    // thread's list would kill it (SIGSYS) before it answered.
    let signer = f.start(&["--require-sandbox"]);
    let client = RemoteSigner::new(&f.socket);
    let vk = *f.signing_key().verifying_key();
    let r = f.resource(3, 2);
    let tbs = statement(&r, 1);
    let sig = client.sign_statement(&tbs).expect("signed");
    vk.verify(&tbs, &Signature::from_slice(&sig).unwrap())
        .expect("verifies under the PTO key");
    // A manifest over two bundles, built as the device builds it.
    let (a, b) = (f.resource(3, 1), f.resource(7, 1));
    let headers: Vec<(BundleHeader, &[u8], &[u8])> = [&a, &b]
        .iter()
        .zip(3..)
        .map(|(r, seq)| {
            let spec = BundleSpec {
                resource: r,
                task_id: 9,
                demand_cookie: 0,
            };
            (
                bundle_header(&spec, &SESSION, seq),
                r.tree.list.as_slice(),
                r.content.as_slice(),
            )
        })
        .collect();
    let batch = seal_batch(&client, &SESSION, 2, headers).expect("manifest signed");
    let mut manifest_statement = batch.manifest.tbs_prefix().to_vec();
    batch
        .entries
        .iter()
        .for_each(|e| manifest_statement.extend_from_slice(e));
    let sig = Signature::from_slice(&batch.manifest.signature).unwrap();
    vk.verify(&manifest_statement, &sig)
        .expect("manifest verifies");

    let (status, stderr) = signer.stop();
    assert!(status.success(), "{status}: {stderr}");
    // Two signatures and the closing checkpoint, signed with the PTO key.
    let verified = see_audit::verify_file_anchored(&f.audit, &TrustedKeys::none().with(vk))
        .unwrap()
        .expect("the signer's audit log verifies");
    assert_eq!(verified.records, 3, "{verified:?}");
    verified.require_closed().expect("closed at SIGTERM");
    let log = std::fs::read_to_string(&f.audit).unwrap();
    assert!(
        log.contains(r#""resource":3"#) && log.contains(r#""version":2"#),
        "{log}"
    );
}

#[test]
fn statements_outside_the_policy_are_refused_with_their_reason() {
    let f = Fixture::new(0o600);
    let _signer = f.start(&[]);
    let client = RemoteSigner::new(&f.socket);
    let r = f.resource(3, 2);
    // Content the store does not hold under that name: a tree root that is not its bytes'.
    let mut forged = r.clone();
    forged.tree.root[0] ^= 1;
    assert_eq!(
        refusal(client.sign_statement(&statement(&forged, 1))),
        Refusal::HashMismatch {
            resource: 3,
            version: 2
        }
    );
    // A version never published, a resource never published.
    let mut newer = r.clone();
    newer.version = 3;
    assert_eq!(
        refusal(client.sign_statement(&statement(&newer, 1))),
        Refusal::UnknownResource {
            resource: 3,
            version: 3
        }
    );
    // Another app's claim on the resource.
    let mut other_app = r.clone();
    other_app.app_id = 2;
    assert!(matches!(
        refusal(client.sign_statement(&statement(&other_app, 1))),
        Refusal::MetadataMismatch { resource: 3, .. }
    ));
    // Not a statement at all.
    assert_eq!(
        refusal(client.sign_statement(&[0u8; 170])),
        Refusal::Malformed
    );
    assert_eq!(
        refusal(client.sign_statement(b"sign me")),
        Refusal::Malformed
    );
    // The connection survives refusals: a good statement is still signed.
    client.sign_statement(&statement(&r, 2)).expect("signed");
    // Published after the signer started: found once the index changes.
    see_prefetch_backend::store::DiskStore::open(&f.store)
        .unwrap()
        .add(
            3,
            3,
            virtio_prefetch_wire::ResourceKind::Data,
            1,
            b"three v3",
        )
        .unwrap();
    client
        .sign_statement(&statement(&f.resource(3, 3), 3))
        .expect("a newly published version is signed");
}

#[test]
fn the_rate_limit_refuses_past_the_burst() {
    let f = Fixture::new(0o600);
    let _signer = f.start(&["--rate", "0.001", "--burst", "3"]);
    let client = RemoteSigner::new(&f.socket);
    let r = f.resource(7, 1);
    for seq in 1..=3 {
        client
            .sign_statement(&statement(&r, seq))
            .expect("within the burst");
    }
    assert_eq!(
        refusal(client.sign_statement(&statement(&r, 4))),
        Refusal::RateLimited
    );
    // The global bucket holds across connections.
    let f = Fixture::new(0o600);
    let _signer = f.start(&["--global-rate", "0.001", "--global-burst", "2"]);
    let r = f.resource(7, 1);
    for seq in 1..=2 {
        RemoteSigner::new(&f.socket)
            .sign_statement(&statement(&r, seq))
            .expect("within the global burst");
    }
    assert_eq!(
        refusal(RemoteSigner::new(&f.socket).sign_statement(&statement(&r, 3))),
        Refusal::RateLimited
    );
}

#[test]
fn a_key_file_others_may_read_is_refused() {
    let f = Fixture::new(0o644);
    let out = f.command().output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("mode 0644") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    assert!(!f.socket.exists(), "it must not listen");
}

#[test]
fn a_key_owned_by_another_user_is_refused() {
    let f = Fixture::new(0o600);
    // SAFETY: geteuid has no arguments.
    let me = unsafe { libc::geteuid() };
    std::os::unix::fs::chown(&f.key_path, Some(me + 1), None).ok();
    let owner = std::fs::metadata(&f.key_path).map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if owner.ok() != Some(me + 1) {
        eprintln!("skipped: cannot chown the key file (not root)");
        return;
    }
    let out = f.command().output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("owned by uid"), "{stderr}");
}

#[test]
fn a_killed_signer_fails_signatures_until_it_comes_back() {
    let f = Fixture::new(0o600);
    let signer = f.start(&[]);
    let client = RemoteSigner::new(&f.socket);
    let r = f.resource(3, 1);
    client.sign_statement(&statement(&r, 1)).expect("signed");
    drop(signer); // SIGKILL
    for seq in 2..4 {
        assert!(
            matches!(
                client.sign_statement(&statement(&r, seq)),
                Err(SignError::Unavailable(_))
            ),
            "a dead signer is an error, not a hang or a panic"
        );
    }
    // The audit log of the killed signer is continued (not closed cleanly, still valid).
    let _signer = f.start(&[]);
    client
        .sign_statement(&statement(&r, 4))
        .expect("signs again once the signer is back");
}

#[test]
fn the_key_page_is_locked_and_left_out_of_core_dumps() {
    let f = Fixture::new(0o600);
    let signer = f.start(&[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", signer.pid())).unwrap();
    let locked_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmLck");
    assert!(locked_kb >= 4, "the key page is not locked: {status}");
    // Its smaps flag the key page `lo` (mlock) and `dd` (MADV_DONTDUMP).
    let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", signer.pid())).unwrap();
    assert!(
        smaps
            .lines()
            .any(|l| l.starts_with("VmFlags:") && l.contains(" dd") && l.contains(" lo")),
        "no locked, undumped mapping"
    );
}

/// A floors snapshot's statement with `floors` (resource, min version) as its entries; the
/// fields between the context and the entries (nonce, times, serial) do not concern the
/// signer's policy.
fn floors_statement(floors: &[(u64, u64)]) -> Vec<u8> {
    let mut s = virtio_prefetch_wire::FLOORS_CONTEXT.to_vec();
    s.resize(virtio_prefetch_wire::FLOORS_TBS_PREFIX_LEN, 0);
    for &(id, version) in floors {
        s.extend_from_slice(&id.to_le_bytes());
        s.extend_from_slice(&version.to_le_bytes());
    }
    s
}

#[test]
fn a_floors_snapshot_below_a_signed_version_is_refused() {
    let f = Fixture::new(0o600);
    let signer = f.start(&[]);
    let client = RemoteSigner::new(&f.socket);
    // Before anything is signed, any floors are acceptable.
    if let Err(e) = client.sign_floors(&floors_statement(&[])) {
        let (status, stderr) = signer.stop();
        panic!("{e:?}: {status}: {stderr}");
    }
    client
        .sign_statement(&statement(&f.resource(3, 2), 1))
        .expect("version 2 signed");
    // Lower than what was signed, or left out: a rollback.
    let rollback = Refusal::Rollback {
        resource: 3,
        version: 2,
    };
    assert_eq!(
        refusal(client.sign_floors(&floors_statement(&[(3, 1)]))),
        rollback
    );
    assert_eq!(
        refusal(client.sign_floors(&floors_statement(&[(7, 5)]))),
        rollback
    );
    // Not whole entries, or not a floors statement.
    let mut ragged = floors_statement(&[(3, 2)]);
    ragged.pop();
    assert_eq!(refusal(client.sign_floors(&ragged)), Refusal::Malformed);
    assert_eq!(
        refusal(client.sign_floors(&statement(&f.resource(3, 2), 1))),
        Refusal::Malformed
    );
    // At or above the signed version: signed, under the PTO key.
    let good = floors_statement(&[(3, 2), (7, 1)]);
    let sig = client.sign_floors(&good).expect("floors signed");
    f.signing_key()
        .verifying_key()
        .verify(&good, &Signature::from_slice(&sig).unwrap())
        .expect("verifies");
}

#[test]
fn a_forbidden_syscall_on_either_thread_kills_the_signer_with_sigsys() {
    use std::os::unix::process::ExitStatusExt;
    for thread in ["worker", "accept"] {
        let f = Fixture::new(0o600);
        let mut child = f
            .command()
            .env("SEE_SIGNER_TEST_FORBIDDEN_SYSCALL", thread)
            .spawn()
            .expect("see-signer starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("the {thread} thread's forbidden syscall did not end the signer");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(status.signal(), Some(libc::SIGSYS), "{thread}: {status}");
    }
}
