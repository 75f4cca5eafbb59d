//! The memory map handed over by the VMM, parsed once at boot ([`see_abi::bootinfo`] does the
//! defensive parsing) and kept for the kernel's lifetime. The shared window, the only memory a
//! device backend can see, is the E820 entry of type [`E820_SEE_SHARED`].

use spin::{
    mutex::{SpinMutex, SpinMutexGuard},
    Once,
};

use see_abi::bootinfo::MAX_CMDLINE;
pub use see_abi::bootinfo::{
    BootInfoError, MemoryMap, Region, E820_RAM, E820_SEE_SHARED, MAPPED_LIMIT,
};

static MAP: Once<MemoryMap<'static>> = Once::new();

/// The command line's copy (64 KiB: in .bss, never on the 64 KiB boot stack), lent to the
/// parser once and borrowed by [`MAP`] for the kernel's lifetime.
static CMDLINE: SpinMutex<[u8; MAX_CMDLINE]> = SpinMutex::new([0; MAX_CMDLINE]);

/// Parses the boot information at `start_info` (the EBX of the PVH entry); call it once, at
/// boot.
pub fn init(start_info: u64) -> Result<&'static MemoryMap<'static>, BootInfoError> {
    let cmdline =
        SpinMutexGuard::leak(CMDLINE.try_lock().expect("memmap::init runs once, at boot"));
    let map = see_abi::bootinfo::parse(
        start_info,
        &mut |addr, buf| {
            for (i, b) in buf.iter_mut().enumerate() {
                // SAFETY: bootinfo::parse asks only for ranges above 0 and below MAPPED_LIMIT,
                // which the kernel's static page tables identity-map, and none in a device
                // range (reads there would have side effects); a volatile byte read of mapped
                // memory.
                *b = unsafe { core::ptr::read_volatile((addr as *const u8).add(i)) };
            }
        },
        cmdline,
    )?;
    Ok(MAP.call_once(|| map))
}

/// The memory map; panics if [`init`] has not succeeded.
pub fn get() -> &'static MemoryMap<'static> {
    MAP.get().expect("memmap::init runs first")
}
