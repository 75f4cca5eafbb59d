//! Ending the VM and reporting boot progress to the VMM.
//!
//! Port 0x501 ends the VM: the value written (masked to 0..=255) becomes the VMM's exit code.
//! Port 0x80 takes one-byte boot progress codes, which the VMM timestamps.

use x86_64::instructions::port::Port;

const EXIT_PORT: u16 = 0x501;
const PROGRESS_PORT: u16 = 0x80;

/// Boot progress codes written to port 0x80 (see docs/ARCHITECTURE.md).
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
pub enum Progress {
    /// The 64-bit Rust entry is reached.
    Entry = 0x01,
    /// The kernel is initialised and ready.
    Ready = 0x02,
    /// Every self-test passed.
    SelfTestsPassed = 0x03,
}

/// How the VM ends (the VMM's exit code).
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
pub enum Status {
    /// Everything went well.
    Success = 0,
    /// The kernel panicked.
    Panic = 101,
    /// An unexpected CPU exception.
    Exception = 102,
    /// A self-test failed.
    SelfTestFailure = 103,
    /// A guest app failed.
    AppFailure = 104,
}

/// Reports a boot milestone to the VMM.
pub fn progress(code: Progress) {
    if crate::usermode::in_user_mode() {
        return; // boot progress is reported from ring 0 only
    }
    // SAFETY: port 0x80 is the VMM's progress port; the write has no memory effects.
    unsafe { Port::<u8>::new(PROGRESS_PORT).write(code as u8) }
}

/// Ends the VM with `status` (from ring 0 or ring 3).
pub fn exit(status: Status) -> ! {
    if crate::usermode::in_user_mode() {
        crate::usermode::exit(status as u32);
    } else {
        exit_port(status as u32);
    }
    // A VMM without an exit port: stop here.
    loop {
        x86_64::instructions::interrupts::disable();
        if crate::usermode::in_user_mode() {
            core::hint::spin_loop(); // hlt is a ring-0 instruction
        } else {
            x86_64::instructions::hlt();
        }
    }
}

/// Writes `status` to the exit port (ring 0 only): the VMM ends the VM.
pub fn exit_port(status: u32) {
    // SAFETY: port 0x501 is the VMM's exit port; the write stops this vCPU for good.
    unsafe { Port::<u32>::new(EXIT_PORT).write(status) }
}
