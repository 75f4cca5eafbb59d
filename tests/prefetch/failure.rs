//! 6f: the backend goes away while the guest runs: the guest reports the failure and the VM
//! ends with the app-failure status (104) within the deadline; nothing hangs. The backend is
//! shut down in-process (idle, and during a demand fetch), and SIGKILLed as a process of its
//! own (the release binary while the guest is idle; `see-e2e-backend`, which dispatches the
//! request, while an 8 MiB demanded bundle streams).

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use see_e2e::{backend_bin, guest::Guest, kvm_available, pto_keys, Vmm, DEADLINE};
use see_prefetch_backend::store::DiskStore;
use virtio_prefetch_wire::ResourceKind;

use see_e2e::rig::{Options, Res, Rig, OP_AWAIT, OP_RUN};

#[test]
fn backend_gone_while_idle_ends_the_vm_with_104() {
    if !kvm_available() {
        return;
    }
    let r = Res::data(1, 7, 3, 1, 4096);
    let mut rig = Rig::start(&Options {
        resources: vec![r.clone()],
        ..Options::default()
    });
    rig.prefetch(&r);
    rig.dispatch(1, OP_AWAIT, &[7, 3]);
    rig.guest.wait_line("staged res=3", |l| {
        l.starts_with("see: staged app=1 task=7 res=3")
    });
    rig.backend.shutdown();
    rig.guest
        .finish()
        .assert_code(see_abi::exit::APP_FAILURE)
        .assert_stdout("see: prefetch device failed");
}

#[test]
fn backend_gone_during_a_demand_fetch_fails_the_task_with_104() {
    if !kvm_available() {
        return;
    }
    // A large resource, so the backend is still streaming it when it is shut down.
    let r = Res::data(1, 7, 3, 1, 8 * 1024 * 1024);
    let mut rig = Rig::start(&Options {
        resources: vec![r],
        ..Options::default()
    });
    rig.dispatch(1, OP_RUN, &[7]);
    rig.wait_event("Demand", |e| {
        matches!(e, see_prefetch_backend::BackendEvent::Demand { .. })
    });
    rig.backend.shutdown();
    let out = rig.guest.finish();
    // Either the demand failed (the usual case) or it completed just before the shutdown and
    // the next wait for a request saw the broken device; both end with 104 and say why.
    out.assert_code(see_abi::exit::APP_FAILURE);
    assert!(
        out.stdout.contains("see: claim-failed app=1 task=7 res=3")
            || out.stdout.contains("see: prefetch device failed"),
        "{}",
        out.stdout
    );
}

#[test]
fn backend_process_killed_with_sigkill_ends_the_vm_with_104() {
    if !kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let r = Res::data(1, 7, 3, 1, 4096);
    fill_store(&store, &r);
    let orders = dir.path().join("prefetch.txt");
    std::fs::write(&orders, "1 7 3\n").expect("prefetch list");
    let socket = dir.path().join("prefetch.sock");
    let mut backend = std::process::Command::new(backend_bin())
        .arg("--socket")
        .arg(&socket)
        .arg("--store")
        .arg(&store)
        .arg("--key")
        .arg(&pto_keys().0)
        .arg("--prefetch")
        .arg(&orders)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", backend_bin().display()));
    // The VMM retries its connection for a few seconds, so it may start before the socket.
    let vmm = Vmm::boot()
        .arg("--prefetch-socket")
        .arg(&socket)
        .arg("--cmdline")
        .arg("see.selftest=0 see.app=serve see.allow=1:7:3");
    let mut guest = Guest::spawn(vmm);
    guest.wait_line("\"prefetch device ready\"", |l| {
        l.starts_with("see: prefetch device ready")
    });
    backend.kill().expect("SIGKILL the backend");
    let _ = backend.wait();
    guest
        .finish()
        .assert_code(see_abi::exit::APP_FAILURE)
        .assert_stdout("see: prefetch device failed");
}

#[test]
fn backend_process_killed_with_sigkill_during_a_demand_fetch_fails_the_task_with_104() {
    if !kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    // 8 MiB: the backend is still streaming it (32 chunks of 256 KiB through 16 staging
    // buffers the guest must copy and repost) when it is killed.
    let r = Res::data(1, 7, 3, 1, 8 * 1024 * 1024);
    fill_store(&store, &r);
    let socket = dir.path().join("prefetch.sock");
    // The backend in a process of its own that dispatches OP_RUN for task 7 after the Hello.
    let mut backend = Command::new(env!("CARGO_BIN_EXE_see-e2e-backend"))
        .arg(&socket)
        .arg(&store)
        .arg(&pto_keys().0)
        .args(["1", &OP_RUN.to_string(), "7"])
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start see-e2e-backend");
    let (tx, events) = mpsc::channel();
    let stdout = backend.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let vmm = Vmm::boot()
        .arg("--prefetch-socket")
        .arg(&socket)
        .arg("--cmdline")
        .arg("see.selftest=0 see.app=serve see.allow=1:7:3");
    let mut guest = Guest::spawn(vmm);
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(line) if line.starts_with("event Demand ") => {
                assert!(line.contains("served: true"), "{line}");
                break;
            }
            Ok(line) => seen.push(line),
            Err(e) => panic!(
                "no Demand from the backend process ({e}); its lines: {seen:?}\n--- console\n{}",
                guest.transcript()
            ),
        }
    }
    // SIGKILL while the demanded bundle streams.
    backend.kill().expect("SIGKILL the backend");
    let killed = Instant::now();
    let status = backend.wait().expect("wait for the backend");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "{status:?}"
    );
    // Everything it printed before it died (the reader ends at end of file).
    let mut rest = Vec::new();
    while let Ok(line) = events.recv_timeout(Duration::from_secs(5)) {
        rest.push(line);
    }
    assert!(
        !rest.iter().any(|l| l.starts_with("event Staged ")),
        "the bundle was complete before the kill (the test proves nothing): {rest:?}"
    );
    let out = guest.finish();
    let ended = killed.elapsed();
    out.assert_code(see_abi::exit::APP_FAILURE)
        .assert_stdout("see: claim-failed app=1 task=7 res=3 error=")
        .assert_stdout("see: counters ");
    assert!(
        !out.stdout.contains("see: claim app=1 task=7 res=3 "),
        "the task got the resource: {}",
        out.stdout
    );
    let failed = see_e2e::guest::line(&out.stdout, "see: claim-failed app=1 task=7 res=3 ");
    // The VMM saw the socket close and set DEVICE_NEEDS_RESET: the driver fails the demand at
    // once as a broken device (not by running into its deadline).
    assert!(
        failed.contains("the prefetch device is unusable"),
        "not a clear device error: {failed}"
    );
    let counters = see_e2e::guest::line(&out.stdout, "see: counters ");
    assert_eq!(
        see_e2e::guest::field_u64(counters, "demands_failed"),
        1,
        "{counters}"
    );
    assert!(
        ended < Duration::from_secs(20),
        "the VM took {ended:?} to end after the kill"
    );
}

/// A disk store at `dir` holding `r`, for a backend process of its own.
fn fill_store(dir: &std::path::Path, r: &Res) {
    DiskStore::open(dir)
        .and_then(|s| s.add(r.id, r.version, ResourceKind::Data, r.app, &r.content))
        .unwrap_or_else(|e| panic!("store: {e}"));
}
