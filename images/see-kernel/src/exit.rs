//! Ending the VM and reporting boot progress to the VMM.
//!
//! The exit port ends the VM: the value written (masked to 0..=255) becomes the VMM's exit
//! code. The progress port takes one-byte boot progress codes, which the VMM timestamps. Ports
//! and codes are the contract's ([`see_abi::ports`], [`see_abi::exit`]).

use see_abi::ports::{EXIT_PORT, PROGRESS_PORT};
pub use see_abi::{exit::Status, ports::Progress};
use x86_64::instructions::port::Port;

/// Reports a boot milestone to the VMM.
pub fn progress(code: Progress) {
    if crate::usermode::in_user_mode() {
        return; // boot progress is reported from ring 0 only
    }
    // SAFETY: port 0x80 is the VMM's progress port; the write has no memory effects.
    unsafe { Port::<u8>::new(PROGRESS_PORT).write(code.code()) }
}

/// Ends the VM with `status` (from ring 0 or ring 3).
pub fn exit(status: Status) -> ! {
    if crate::usermode::in_user_mode() {
        crate::usermode::exit(u32::from(status.code()));
    } else {
        exit_port(u32::from(status.code()));
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
    // SAFETY: EXIT_PORT (0x501) is the VMM's exit port; the write stops this vCPU for good.
    unsafe { Port::<u32>::new(EXIT_PORT).write(status) }
}
