//! The local APIC in x2APIC mode (MSR access: no instruction emulation on the exit path).

use x86_64::registers::model_specific::Msr;

use super::{idt::SPURIOUS_VECTOR, IrqError};

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const X2APIC_ID: u32 = 0x802;
const X2APIC_TPR: u32 = 0x808;
const X2APIC_EOI: u32 = 0x80b;
const X2APIC_SVR: u32 = 0x80f;
const X2APIC_LVT_LINT0: u32 = 0x835;
const X2APIC_LVT_TIMER: u32 = 0x832;
const IA32_TSC_DEADLINE: u32 = 0x6e0;
const LVT_TIMER_TSC_DEADLINE: u64 = 0b10 << 17;
const SVR_ENABLE: u64 = 1 << 8;
const LVT_MASKED: u64 = 1 << 16;

/// Switches the local APIC to x2APIC mode, enables it, masks LINT0 (the legacy PIC's virtual
/// wire) and returns this CPU's APIC ID.
pub fn init() -> Result<u32, IrqError> {
    if core::arch::x86_64::__cpuid(1).ecx & (1 << 21) == 0 {
        return Err(IrqError::NoX2Apic);
    }
    // SAFETY: x2APIC is supported (checked above); these MSR writes only configure the local
    // APIC of this CPU, whose interrupts all go through the IDT already loaded.
    unsafe {
        let mut base = Msr::new(IA32_APIC_BASE);
        let value = base.read();
        base.write(value | APIC_BASE_ENABLE | APIC_BASE_X2APIC);
        Msr::new(X2APIC_TPR).write(0);
        Msr::new(X2APIC_LVT_LINT0).write(LVT_MASKED);
        Msr::new(X2APIC_SVR).write(SVR_ENABLE | u64::from(SPURIOUS_VECTOR));
        Ok(Msr::new(X2APIC_ID).read() as u32)
    }
}

/// Signals the end of the interrupt being handled.
pub fn eoi() {
    // SAFETY: writing 0 to the EOI register only retires the in-service interrupt.
    unsafe { Msr::new(X2APIC_EOI).write(0) }
}

/// True when the CPU offers the TSC-deadline mode of the local APIC timer.
pub fn has_tsc_deadline() -> bool {
    core::arch::x86_64::__cpuid(1).ecx & (1 << 24) != 0
}

/// Arms the local APIC timer to interrupt on `vector` when the TSC reaches `deadline`
/// (TSC-deadline mode); a deadline of 0 disarms it. The caller checked [`has_tsc_deadline`].
pub fn arm_tsc_deadline(vector: u8, deadline: u64) {
    // SAFETY: x2APIC mode is enabled by `init`, and TSC-deadline mode is supported (the
    // caller checked CPUID); these MSRs only program this CPU's timer interrupt.
    unsafe {
        Msr::new(X2APIC_LVT_TIMER).write(LVT_TIMER_TSC_DEADLINE | u64::from(vector));
        Msr::new(IA32_TSC_DEADLINE).write(deadline);
    }
}
