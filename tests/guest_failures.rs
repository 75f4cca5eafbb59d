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
