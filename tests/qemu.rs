//! The guest image under QEMU's `microvm` machine with KVM: another standard PVH loader (the
//! qboot firmware puts the boot information and the command line in reserved low memory, the
//! E820 table is unsorted, and there is no shared window and no virtio device) must bring the
//! kernel to its ready line and to a clean exit through QEMU's `isa-debug-exit` device on the
//! exit port.

use std::path::Path;

use see_abi::{
    exit,
    ports::{qemu_debug_exit_status, EXIT_PORT},
};
use see_e2e::{kernel_image, kvm_available, qemu_bin, Outcome, Vmm};

/// Boots the image with `append` as its command line on a vCPU of model `cpu`.
fn boot(qemu: &Path, cpu: &str, append: &str) -> Outcome {
    Vmm::bare(qemu)
        .args([
            "-M",
            "microvm,x-option-roms=off,isa-serial=on,rtc=off",
            "-enable-kvm",
            // The PVM hosts these tests run on refuse IA32_ARCH_CAPABILITIES (MSR 0x10a),
            // which QEMU 7.2 sets for `-cpu host`; the guest never reads it.
            "-cpu",
            cpu,
            "-m",
            "128",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-serial",
            "stdio",
            "-device",
            &format!("isa-debug-exit,iobase={EXIT_PORT:#x},iosize=4"),
            "-append",
            append,
            "-kernel",
        ])
        .arg(kernel_image())
        .run()
}

fn qemu() -> Option<std::path::PathBuf> {
    if !kvm_available() {
        return None;
    }
    qemu_bin()
}

/// The exit status QEMU reports when the guest wrote `code` to the exit port.
fn guest_exit(code: u8) -> u8 {
    u8::try_from(qemu_debug_exit_status(code)).expect("a guest code below 128")
}

#[test]
fn boots_to_ready_under_qemu_microvm() {
    let Some(qemu) = qemu() else { return };
    let out = boot(&qemu, "host,-arch-capabilities", "see.selftest=0");
    out.assert_code(guest_exit(exit::SUCCESS))
        .assert_stdout("SEE kernel")
        .assert_stdout("see: ready in")
        .assert_stdout("see: shared window: none")
        .assert_stdout("see: cmdline: \"see.selftest=0\"")
        .assert_stdout("see: done in");
}

#[test]
fn self_tests_pass_under_qemu_microvm() {
    let Some(qemu) = qemu() else { return };
    let out = boot(&qemu, "host,-arch-capabilities", "see.selftest=1");
    out.assert_code(guest_exit(exit::SUCCESS))
        .assert_stdout("see: self-test e820: ok")
        .assert_stdout("see: self-test interrupts: ok")
        .assert_stdout("see: self-tests passed");
}

#[test]
fn the_serve_app_without_a_device_fails_cleanly_under_qemu() {
    let Some(qemu) = qemu() else { return };
    let out = boot(
        &qemu,
        "host,-arch-capabilities",
        "see.selftest=0 see.app=serve",
    );
    out.assert_code(guest_exit(exit::APP_FAILURE))
        .assert_stdout("see: ready in")
        .assert_stdout("no virtio_mmio.device on the command line");
}

#[test]
fn boots_without_kvmclock_on_the_tsc() {
    let Some(qemu) = qemu() else { return };
    // No kvmclock: the TSC's frequency from the hypervisor's CPUID timing leaf (QEMU offers it
    // with an invariant TSC), or else measured against the PIT.
    for (cpu, source) in [
        (
            "host,-arch-capabilities,-kvmclock,+invtsc",
            "(TSC, frequency from CPUID)",
        ),
        (
            "host,-arch-capabilities,-kvmclock",
            "(TSC, calibrated against the PIT)",
        ),
    ] {
        let out = boot(&qemu, cpu, "see.selftest=1");
        out.assert_code(guest_exit(exit::SUCCESS))
            .assert_stdout(source)
            .assert_stdout("see: self-test timer: ok")
            .assert_stdout("see: self-test halt: ok")
            .assert_stdout("see: self-tests passed");
    }
}

#[test]
fn a_hostile_layout_ends_the_guest_with_bad_layout_under_qemu() {
    let Some(qemu) = qemu() else { return };
    // QEMU's E820 never overlaps (a large -m puts RAM above 4 GiB, not over the devices), but
    // the loader also writes the command line: a device announced over the kernel image.
    let out = boot(
        &qemu,
        "host,-arch-capabilities",
        "see.selftest=0 virtio_mmio.device=4K@0x100000:5",
    );
    out.assert_code(guest_exit(exit::BAD_LAYOUT))
        .assert_stdout(
            "see: bad boot layout: a command-line virtio-mmio device 0x100000..0x101000 overlaps the kernel image",
        )
        .assert_stdout("refusing to run");
    assert!(
        !out.stdout.contains("see: ready in"),
        "the guest got to ready on a bad layout:\n{}",
        out.stdout
    );
}

#[test]
fn no_rdrand_or_rdseed_refuses_a_session_unless_the_fallback_is_on() {
    let Some(qemu) = qemu() else { return };
    let cpu = "host,-arch-capabilities,-rdrand,-rdseed";
    let out = boot(&qemu, cpu, "see.selftest=0 see.app=serve");
    if out.stdout.contains("no virtio_mmio.device") {
        // The entropy check passed: this host's KVM shows the guest the host's CPUID (PVM runs
        // CPUID natively without CPUID faulting), so -rdrand cannot hide RDRAND here. The
        // decision itself is unit-tested in see-abi (entropy::tests).
        eprintln!("skipped: this host's KVM does not let QEMU hide RDRAND/RDSEED from the guest");
        return;
    }
    out.assert_code(guest_exit(exit::APP_FAILURE))
        .assert_stdout("neither RDRAND nor RDSEED")
        .assert_stdout("refusing to create a prefetch session");
    let out = boot(
        &qemu,
        cpu,
        "see.selftest=0 see.app=serve see.insecure_entropy=1",
    );
    out.assert_code(guest_exit(exit::APP_FAILURE))
        .assert_stdout("see: WARNING: INSECURE ENTROPY")
        .assert_stdout("no virtio_mmio.device on the command line");
}
