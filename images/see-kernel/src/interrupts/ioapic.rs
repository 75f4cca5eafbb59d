//! The I/O APIC at [`see_abi::memory::IOAPIC_BASE`] (KVM's in-kernel one), programmed with
//! plain volatile moves.

const IOAPIC_BASE: usize = see_abi::memory::IOAPIC_BASE as usize;
const IOREGSEL: usize = 0x00;
const IOWIN: usize = 0x10;
const IOAPICVER: u32 = 0x01;
const REDTBL: u32 = 0x10;
const MASKED: u32 = 1 << 16;

fn write(reg: u32, value: u32) {
    // SAFETY: the I/O APIC registers are identity-mapped (uncached) and belong to this driver;
    // callers run with interrupts disabled, so the select/window pair is not interleaved.
    unsafe {
        core::ptr::write_volatile((IOAPIC_BASE + IOREGSEL) as *mut u32, reg);
        core::ptr::write_volatile((IOAPIC_BASE + IOWIN) as *mut u32, value);
    }
}

fn read(reg: u32) -> u32 {
    // SAFETY: as in `write`.
    unsafe {
        core::ptr::write_volatile((IOAPIC_BASE + IOREGSEL) as *mut u32, reg);
        core::ptr::read_volatile((IOAPIC_BASE + IOWIN) as *const u32)
    }
}

/// Number of input pins.
pub fn pins() -> u8 {
    (((read(IOAPICVER) >> 16) & 0xff) + 1) as u8
}

/// Routes `pin` to `vector` on the CPU with APIC ID `dest`: fixed delivery, physical
/// destination, edge-triggered, active high, unmasked.
pub fn route(pin: u8, vector: u8, dest: u32) {
    let reg = REDTBL + 2 * u32::from(pin);
    write(reg, MASKED);
    write(reg + 1, dest << 24);
    write(reg, u32::from(vector));
}

/// Masks `pin`.
pub fn mask(pin: u8) {
    write(REDTBL + 2 * u32::from(pin), MASKED);
}
