//! A guest that fails surfaces as a VMM exit code with the guest's message on the console.

use see_e2e::{kvm_available, Vmm};

#[test]
fn guest_panic_exits_101_with_the_message() {
    if !kvm_available() {
        return;
    }
    Vmm::boot()
        .args(["--cmdline", "see.test=panic"])
        .run()
        .assert_code(see_abi::exit::PANIC)
        .assert_stdout("see: PANIC: panicked at")
        .assert_stdout("see.test=panic: panicking on request");
}

#[test]
fn guest_exception_exits_102_with_vector_and_address() {
    if !kvm_available() {
        return;
    }
    Vmm::boot()
        .args(["--cmdline", "see.test=fault"])
        .run()
        .assert_code(see_abi::exit::EXCEPTION)
        .assert_stdout("see: EXCEPTION vector 14 (#PF page fault)")
        .assert_stdout("cr2=0x5ee0dead0000");
}

#[test]
fn selftest_failure_exits_103() {
    if !kvm_available() {
        return;
    }
    Vmm::boot()
        .args(["--cmdline", "see.test=selftest-fail"])
        .run()
        .assert_code(see_abi::exit::SELFTEST_FAILURE)
        .assert_stdout("see: self-test injected-failure: FAILED")
        .assert_stdout("see: 1 self-test(s) FAILED");
}

#[test]
fn unknown_app_exits_104() {
    if !kvm_available() {
        return;
    }
    Vmm::boot()
        .args(["--cmdline", "see.selftest=0 see.app=nope"])
        .run()
        .assert_code(see_abi::exit::APP_FAILURE)
        .assert_stdout("no guest app named \"nope\"");
}

#[test]
fn a_device_over_the_shared_window_or_the_heap_is_a_bad_layout_105() {
    if !kvm_available() {
        return;
    }
    // The command line is the loader's, like the E820 table: a device announced over the
    // shared window (or over private RAM) would turn register accesses into shared or private
    // memory writes, so the guest refuses to run on every boot, self-tests or not.
    for (device, what) in [
        (
            "virtio_mmio.device=4K@0xc0000000:5",
            "overlaps the shared window 0xc0000000..",
        ),
        // 64 MiB: inside the heap of the default 128 MiB guest, well past the kernel image.
        ("virtio_mmio.device=4K@0x4000000:5", "overlaps the heap"),
    ] {
        Vmm::boot()
            .args(["--cmdline", &format!("see.selftest=0 {device}")])
            .run()
            .assert_code(see_abi::exit::BAD_LAYOUT)
            .assert_stdout("see: bad boot layout: a command-line virtio-mmio device")
            .assert_stdout(what)
            .assert_stdout("refusing to run");
    }
}
