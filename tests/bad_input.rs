//! Each bad input gets a clear message and exit code 1 (2 for command-line usage errors),
//! never a panic. Inputs checked before KVM is opened run without KVM too.

use see_e2e::{elf_without_pvh_note, kernel_image, kvm_available, vmm_bin, Sandbox, Vmm};

fn vmm_with_kernel(kernel: &std::path::Path) -> Vmm {
    Vmm::bare(vmm_bin()).arg("--kernel").arg(kernel)
}

#[test]
fn missing_kernel() {
    vmm_with_kernel("/nonexistent/see-kernel".as_ref())
        .run()
        .assert_code(see_abi::exit::VMM_ERROR)
        .assert_stderr("kernel /nonexistent/see-kernel not found")
        .assert_stderr("cargo xtask image");
}

#[test]
fn unreadable_kernel() {
    let sandbox = Sandbox::new();
    let kernel = sandbox.file(
        "locked-kernel",
        &std::fs::read(kernel_image()).unwrap(),
        0o000,
    );
    sandbox
        .vmm(&kernel)
        .run()
        .assert_code(see_abi::exit::VMM_ERROR)
        .assert_stderr("cannot read kernel")
        .assert_stderr("Permission denied")
        .assert_stderr("check its permissions");
}

#[test]
fn kernel_that_is_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    vmm_with_kernel(dir.path())
        .run()
        .assert_code(see_abi::exit::VMM_ERROR)
        .assert_stderr("cannot read kernel");
}

#[test]
fn kernel_that_is_not_an_elf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script");
    std::fs::write(&path, "#!/bin/sh\necho not a kernel\n").unwrap();
    vmm_with_kernel(&path)
        .run()
        .assert_code(see_abi::exit::VMM_ERROR)
        .assert_stderr("is not an ELF file");
}

#[test]
fn elf_without_a_pvh_note() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.elf");
    std::fs::write(&path, elf_without_pvh_note()).unwrap();
    vmm_with_kernel(&path)
        .run()
        .assert_code(see_abi::exit::VMM_ERROR)
        .assert_stderr("has no PVH entry note");
}

#[test]
fn memory_too_small() {
    Vmm::boot()
        .args(["--memory", "16"])
        .run()
        .assert_code(see_abi::exit::VMM_ERROR)
        .assert_stderr("--memory 16 MiB is too small")
        .assert_stderr("at least 32 MiB");
}

#[test]
fn memory_too_large() {
    Vmm::boot()
        .args(["--memory", "4096"])
        .run()
        .assert_code(see_abi::exit::VMM_ERROR)
        .assert_stderr("--memory 4096 MiB is too large")
        .assert_stderr("at most 3072 MiB");
}

#[test]
fn shared_window_out_of_range() {
    Vmm::boot()
        .args(["--shared-mem", "512"])
        .run()
        .assert_code(see_abi::exit::VMM_ERROR)
        .assert_stderr("--shared-mem 512 MiB is out of range");
}

#[test]
fn kvm_device_absent() {
    Vmm::boot()
        .args(["--kvm-device", "/nonexistent/kvm"])
        .run()
        .assert_code(see_abi::exit::VMM_ERROR)
        .assert_stderr("/nonexistent/kvm does not exist: this machine has no KVM");
}

#[test]
fn kvm_device_not_accessible() {
    let sandbox = Sandbox::new();
    let kvm = sandbox.file("kvm", b"", 0o000);
    sandbox
        .vmm(&sandbox.path("see-kernel"))
        .arg("--kvm-device")
        .arg(&kvm)
        .run()
        .assert_code(see_abi::exit::VMM_ERROR)
        .assert_stderr("Permission denied")
        .assert_stderr("give this user read-write access");
}

#[test]
fn kvm_device_that_is_not_kvm() {
    Vmm::boot()
        .args(["--kvm-device", "/dev/null"])
        .run()
        .assert_code(see_abi::exit::VMM_ERROR)
        .assert_stderr("/dev/null is not a KVM device");
}

#[test]
fn usage_errors_exit_2() {
    Vmm::bare(vmm_bin())
        .run()
        .assert_code(see_abi::exit::USAGE)
        .assert_stderr("--kernel");
    Vmm::boot()
        .args(["--serial", "tcp:1234"])
        .run()
        .assert_code(see_abi::exit::USAGE)
        .assert_stderr("use stdout, off or file:PATH");
    Vmm::boot()
        .args(["--memory", "lots"])
        .run()
        .assert_code(see_abi::exit::USAGE);
}

#[test]
fn unwritable_serial_file() {
    if !kvm_available() {
        return;
    }
    Vmm::boot()
        .args(["--serial", "file:/nonexistent/dir/console.log"])
        .run()
        .assert_code(see_abi::exit::VMM_ERROR)
        .assert_stderr("cannot create the serial output file /nonexistent/dir/console.log");
}
