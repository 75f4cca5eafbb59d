//! The kernel's side of the virtio-prefetch driver: register access, the shared window, the
//! clock, halting until an interrupt, and randomness (`see_guest_driver::Platform`).

use core::sync::atomic::{AtomicBool, Ordering};

use crate::{interrupts, memmap::Region, time};

/// Set by the device's interrupt handler, cleared when a wait consumes it.
pub static DEVICE_INTERRUPT: AtomicBool = AtomicBool::new(false);

/// The virtio-mmio register block of the device and the shared window, both identity-mapped.
#[derive(Debug)]
pub struct KernelPlatform {
    mmio_base: u64,
    window: Region,
}

impl KernelPlatform {
    /// The device's registers at `mmio_base` (4 KiB) and the shared window from the memory map.
    pub fn new(mmio_base: u64, window: Region) -> Self {
        Self { mmio_base, window }
    }

    fn register(&self, offset: usize) -> Option<u64> {
        (offset < 0x1000 && offset.is_multiple_of(4)).then(|| self.mmio_base + offset as u64)
    }
}

/// Copies `len` bytes with `rep movsb`: one instruction, so the compiler can neither elide nor
/// split it, and KVM's instruction emulator moves the whole block in one go.
///
/// # Safety
///
/// `src..src+len` must be readable and `dst..dst+len` writable, and they must not overlap.
unsafe fn copy_bytes(dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: the caller guarantees both ranges; the direction flag is clear (the ABI and the
    // interrupt entry keep it so).
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rcx") len => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        );
    }
}

impl see_guest_driver::Platform for KernelPlatform {
    fn mmio_read32(&self, offset: usize) -> u32 {
        match self.register(offset) {
            // SAFETY: an aligned register of the device's 4 KiB MMIO block, identity-mapped
            // and uncached-by-exit (every access is a VM exit handled by the VMM).
            Some(addr) => unsafe { (addr as *const u32).read_volatile() },
            None => 0,
        }
    }

    fn mmio_write32(&self, offset: usize, value: u32) {
        if let Some(addr) = self.register(offset) {
            // SAFETY: as in `mmio_read32`.
            unsafe { (addr as *mut u32).write_volatile(value) }
        }
    }

    fn shared_read(&self, gpa: u64, dst: &mut [u8]) {
        if !self.window.contains(gpa, dst.len() as u64) {
            dst.fill(0); // the driver never asks for this; never read outside the window
            return;
        }
        // SAFETY: the range lies inside the shared window, which is identity-mapped RAM and
        // disjoint from `dst` (private memory).
        unsafe { copy_bytes(dst.as_mut_ptr(), gpa as *const u8, dst.len()) }
    }

    fn shared_write(&self, gpa: u64, src: &[u8]) {
        if !self.window.contains(gpa, src.len() as u64) {
            return;
        }
        // SAFETY: as in `shared_read`, in the other direction.
        unsafe { copy_bytes(gpa as *mut u8, src.as_ptr(), src.len()) }
    }

    fn now_ns(&self) -> u64 {
        time::monotonic_ns()
    }

    fn wait_for_event(&mut self, deadline_ns: u64) {
        let now = time::monotonic_ns();
        if DEVICE_INTERRUPT.swap(false, Ordering::AcqRel) || deadline_ns <= now {
            return;
        }
        let ticks = ((deadline_ns - now) as u128 * u128::from(time::tsc_hz()) / 1_000_000_000)
            .min(u128::from(u64::MAX / 2)) as u64;
        interrupts::halt_until(time::tsc().saturating_add(ticks), &DEVICE_INTERRUPT);
        DEVICE_INTERRUPT.store(false, Ordering::Release);
    }

    fn fill_random(&mut self, buf: &mut [u8]) {
        super::entropy::fill(buf);
    }

    fn interrupt_age_ns(&mut self) -> Option<u64> {
        super::profile::interrupt_age_ns()
    }
}
