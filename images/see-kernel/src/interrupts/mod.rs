//! Interrupts and exceptions: the IDT, exception reports, device interrupt registration
//! (I/O APIC -> local APIC -> handler) and probes that deliberately take and catch a fault.
//!
//! An unexpected exception prints the vector, error code, RIP and CR2 on the serial console and
//! ends the VM with status 102. A device driver registers a handler for its GSI with
//! [`register_irq`]; the handler runs with interrupts disabled and the EOI is sent for it.

mod apic;
mod idt;
mod ioapic;

use core::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
};

use spin::{Mutex, Once};
use x86_64::instructions::{interrupts, port::Port};

pub use idt::InterruptFrame;

use crate::exit::{self, Status};

/// The vector of GSI 0; GSI n uses vector `IRQ_VECTOR_BASE + n`.
pub const IRQ_VECTOR_BASE: u8 = 32;
/// GSIs the kernel can route (the in-kernel I/O APIC of KVM has 24 pins).
pub const MAX_GSIS: usize = 24;

/// A device interrupt handler. It runs with interrupts disabled; it must not print.
pub type IrqHandler = fn();

/// Why an interrupt could not be registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqError {
    /// The CPU offers no x2APIC.
    NoX2Apic,
    /// The GSI is beyond the I/O APIC's pins.
    NoSuchGsi(u32),
    /// Another handler owns the GSI.
    Busy(u32),
}

impl fmt::Display for IrqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoX2Apic => write!(f, "the CPU has no x2APIC: the VMM must expose it in CPUID"),
            Self::NoSuchGsi(g) => write!(f, "GSI {g} is beyond the I/O APIC (0..{MAX_GSIS})"),
            Self::Busy(g) => write!(f, "GSI {g} already has a handler"),
        }
    }
}

struct Controllers {
    apic_id: u32,
    pins: u8,
}

static CONTROLLERS: Once<Result<Controllers, IrqError>> = Once::new();
static HANDLERS: Mutex<[Option<IrqHandler>; MAX_GSIS]> = Mutex::new([None; MAX_GSIS]);

/// Loads the IDT. Device interrupts stay off until [`register_irq`].
pub fn init() {
    idt::init();
}

fn controllers() -> Result<&'static Controllers, IrqError> {
    CONTROLLERS
        .call_once(|| {
            // Mask the legacy PICs: every device interrupt goes through the I/O APIC.
            // SAFETY: the PIC data ports; masking all lines has no other effect.
            unsafe {
                Port::<u8>::new(0x21).write(0xff);
                Port::<u8>::new(0xa1).write(0xff);
            }
            let apic_id = apic::init()?;
            Ok(Controllers {
                apic_id,
                pins: ioapic::pins().min(MAX_GSIS as u8),
            })
        })
        .as_ref()
        .map_err(|e| *e)
}

/// Routes `gsi` to this CPU and calls `handler` for each interrupt. Returns the vector.
/// Interrupts must still be enabled by the caller (`x86_64::instructions::interrupts::enable`).
pub fn register_irq(gsi: u32, handler: IrqHandler) -> Result<u8, IrqError> {
    let c = controllers()?;
    if gsi >= u32::from(c.pins) {
        return Err(IrqError::NoSuchGsi(gsi));
    }
    let vector = IRQ_VECTOR_BASE + gsi as u8;
    interrupts::without_interrupts(|| {
        let mut handlers = HANDLERS.lock();
        let slot = &mut handlers[gsi as usize];
        if slot.is_some() {
            return Err(IrqError::Busy(gsi));
        }
        *slot = Some(handler);
        ioapic::route(gsi as u8, vector, c.apic_id);
        Ok(vector)
    })
}

/// Masks `gsi` and forgets its handler.
pub fn unregister_irq(gsi: u32) {
    if gsi as usize >= MAX_GSIS || controllers().is_err() {
        return;
    }
    interrupts::without_interrupts(|| {
        ioapic::mask(gsi as u8);
        HANDLERS.lock()[gsi as usize] = None;
    });
}

/// A fault taken and caught by a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaughtFault {
    /// The exception vector.
    pub vector: u8,
    /// The error code (0 for vectors without one).
    pub error_code: u64,
    /// CR2 at the time of the fault (the faulting address of a page fault).
    pub cr2: u64,
}

/// Where execution resumes after an expected fault; 0 when no probe is armed.
#[unsafe(no_mangle)]
static see_fault_recovery: AtomicU64 = AtomicU64::new(0);
/// The last caught fault: vector + 1 (0 = none), error code, CR2.
static CAUGHT: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

fn take_caught() -> Option<CaughtFault> {
    let v = CAUGHT[0].swap(0, Ordering::SeqCst);
    (v != 0).then(|| CaughtFault {
        vector: (v - 1) as u8,
        error_code: CAUGHT[1].load(Ordering::SeqCst),
        cr2: CAUGHT[2].load(Ordering::SeqCst),
    })
}

/// Reads 8 bytes at `addr`, catching the fault if the address is not mapped.
pub fn probe_read(addr: u64) -> Result<u64, CaughtFault> {
    take_caught();
    let value: u64;
    // SAFETY: arms the recovery address and reads; a fault resumes at label 2 with every
    // register restored by the exception handler (value then stays 0); without a fault the
    // probe disarms itself. The caller passes an address whose read has no side effects.
    // (ud2/int3 probes would be simpler, but KVM's instruction emulator, which runs this
    // kernel under PVM, cannot emulate them.)
    unsafe {
        core::arch::asm!(
            "lea {tmp}, [rip + 2f]",
            "mov qword ptr [rip + see_fault_recovery], {tmp}",
            "xor {val:e}, {val:e}",
            "mov {val}, qword ptr [{addr}]",
            "2:",
            "mov qword ptr [rip + see_fault_recovery], 0",
            addr = in(reg) addr,
            tmp = out(reg) _,
            val = out(reg) value,
        );
    }
    take_caught().map_or(Ok(value), Err)
}

fn exception_name(vector: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE divide error",
        "#DB debug",
        "NMI",
        "#BP breakpoint",
        "#OF overflow",
        "#BR bound range",
        "#UD invalid opcode",
        "#NM device not available",
        "#DF double fault",
        "coprocessor segment overrun",
        "#TS invalid TSS",
        "#NP segment not present",
        "#SS stack fault",
        "#GP general protection",
        "#PF page fault",
        "reserved",
        "#MF x87 error",
        "#AC alignment check",
        "#MC machine check",
        "#XM SIMD error",
        "#VE virtualization",
        "#CP control protection",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "#HV hypervisor injection",
        "#VC VMM communication",
        "#SX security",
        "reserved",
    ];
    NAMES.get(vector as usize).copied().unwrap_or("?")
}

fn dispatch(frame: &mut InterruptFrame) {
    let vector = frame.vector;
    if vector == 6 && crate::usermode::on_invalid_opcode(frame) {
        return;
    }
    if vector < 32 {
        let cr2 = x86_64::registers::control::Cr2::read_raw();
        let recovery = see_fault_recovery.swap(0, Ordering::SeqCst);
        if recovery != 0 {
            CAUGHT[1].store(frame.error_code, Ordering::SeqCst);
            CAUGHT[2].store(cr2, Ordering::SeqCst);
            CAUGHT[0].store(vector + 1, Ordering::SeqCst);
            frame.rip = recovery;
            return;
        }
        crate::console::print_emergency(format_args!(
            "see: EXCEPTION vector {vector} ({}) error_code={:#x} rip={:#x} cr2={cr2:#x} rsp={:#x}\n",
            exception_name(vector),
            frame.error_code,
            frame.rip,
            frame.rsp,
        ));
        exit::exit(Status::Exception);
    }
    if vector == u64::from(idt::SPURIOUS_VECTOR) {
        return; // no EOI for a spurious interrupt
    }
    if vector == u64::from(idt::TIMER_VECTOR) {
        apic::eoi(); // the timer only ends a halt (`halt_until`)
        return;
    }
    let gsi = (vector - u64::from(IRQ_VECTOR_BASE)) as usize;
    let handler = HANDLERS.lock().get(gsi).copied().flatten();
    if let Some(handler) = handler {
        handler();
    }
    apic::eoi();
}

/// Halts the CPU until any interrupt arrives or the TSC reaches `deadline_tsc`, whichever comes
/// first, unless `wake` is already true (checked with interrupts disabled, so an interrupt that
/// sets it cannot slip in between the check and the halt). Returns at once when the deadline
/// has passed. Without the local APIC (no x2APIC) or its TSC-deadline timer, it spins with
/// `pause` instead, checking `wake` and the TSC.
pub fn halt_until(deadline_tsc: u64, wake: &core::sync::atomic::AtomicBool) {
    if crate::usermode::in_user_mode() {
        return crate::usermode::halt_until(deadline_tsc, wake);
    }
    let can_halt = controllers().is_ok() && apic::has_tsc_deadline();
    if !can_halt {
        while !wake.load(Ordering::Acquire) && crate::time::tsc() < deadline_tsc {
            core::hint::spin_loop();
        }
        return;
    }
    interrupts::disable();
    if !wake.load(Ordering::Acquire) && crate::time::tsc() < deadline_tsc {
        apic::arm_tsc_deadline(idt::TIMER_VECTOR, deadline_tsc);
        // `sti; hlt` is atomic with respect to interrupts: a pending one wakes the halt.
        interrupts::enable_and_hlt();
        interrupts::disable();
        apic::arm_tsc_deadline(idt::TIMER_VECTOR, 0);
    }
    interrupts::enable();
}
