//! 6f: the backend goes away while the guest runs: the guest reports the failure and the VM
//! ends with the app-failure status (104) within the deadline; nothing hangs.

use see_e2e::{backend_bin, guest::Guest, kvm_available, pto_keys, Vmm};
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
        .assert_code(104)
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
    out.assert_code(104);
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
    DiskStore::open(&store)
        .and_then(|s| s.add(r.id, r.version, ResourceKind::Data, r.app, &r.content))
        .unwrap_or_else(|e| panic!("store: {e}"));
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
        .assert_code(104)
        .assert_stdout("see: prefetch device failed");
}
