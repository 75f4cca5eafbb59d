//! The IDT, the assembly entry stubs for every vector the kernel handles, and the common
//! dispatch into Rust.
//!
//! Each stub pushes a zero error code where the CPU pushes none, then the vector number, and
//! jumps to a common stub that saves the general-purpose registers and calls
//! [`see_interrupt_dispatch`] with a pointer to the saved [`InterruptFrame`]. The target has no
//! red zone and no SSE state, so nothing else needs saving.

use core::arch::global_asm;

use spin::Once;
use x86_64::{
    instructions::{segmentation::Segment, tables::lidt},
    structures::DescriptorTablePointer,
    VirtAddr,
};

global_asm!(
    r#"
    .macro ISR_NOERR vec
    .global see_isr_\vec
see_isr_\vec:
    push 0
    push \vec
    jmp see_isr_common
    .endm

    .macro ISR_ERR vec
    .global see_isr_\vec
see_isr_\vec:
    push \vec
    jmp see_isr_common
    .endm

    .section .text
    /* #UD: the ring-3 exit trap of usermode.rs (`ud2` at see_user_exit, from ring 3) goes
     * straight back to see_user_return, a handful of instructions instead of the full
     * dispatch (under PVM each ring-0 instruction is emulated; this halves a ring-3 call).
     * Every other #UD takes the common path. */
    .global see_isr_6
see_isr_6:
    test byte ptr [rsp + 8], 3
    jz 1f
    push rax
    lea rax, [rip + see_user_exit]
    cmp [rsp + 8], rax
    pop rax
    je see_user_return
1:
    push 0
    push 6
    jmp see_isr_common

    .irp v, 0,1,2,3,4,5,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
    ISR_NOERR \v
    .endr
    .irp v, 8,10,11,12,13,14,17,21,29,30
    ISR_ERR \v
    .endr
    .irp v, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,254,255
    ISR_NOERR \v
    .endr

see_isr_common:
    push rax
    push rcx
    push rdx
    push rbx
    push rbp
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    cld
    call see_interrupt_dispatch
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rbp
    pop rbx
    pop rdx
    pop rcx
    pop rax
    add rsp, 16
    iretq

    .section .rodata
    .balign 8
    .global see_isr_table
see_isr_table:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad see_isr_\v
    .endr
    .irp v, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55
    .quad see_isr_\v
    .endr
    .global see_isr_spurious
see_isr_spurious:
    .quad see_isr_255
    .global see_isr_timer
see_isr_timer:
    .quad see_isr_254
"#
);

/// Number of vectors with a stub in `see_isr_table` (exceptions and device interrupts).
pub const TABLE_VECTORS: usize = 56;
/// The local APIC's spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// The local APIC timer's vector (TSC-deadline mode, used to bound halts).
pub const TIMER_VECTOR: u8 = 0xfe;

extern "C" {
    static see_isr_table: [u64; TABLE_VECTORS];
    static see_isr_spurious: u64;
    static see_isr_timer: u64;
}

/// The registers saved by the entry stubs, lowest address first.
#[repr(C)]
#[derive(Debug)]
#[allow(missing_docs)]
pub struct InterruptFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// A 64-bit interrupt gate.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    flags: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    fn new(handler: u64, selector: u16, ist: u8) -> Self {
        Self {
            offset_low: handler as u16,
            selector,
            ist,
            flags: 0x8E, // present, DPL 0, 64-bit interrupt gate (IF cleared on entry)
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: Once<Idt> = Once::new();

#[unsafe(no_mangle)]
extern "C" fn see_interrupt_dispatch(frame: &mut InterruptFrame) {
    super::dispatch(frame);
}

/// Builds and loads the IDT. Double faults run on their own stack (IST 1).
pub fn init() {
    let cs = x86_64::instructions::segmentation::CS::get_reg();
    let idt = IDT.call_once(|| {
        let mut gates = [Gate::default(); 256];
        // SAFETY: the table is defined in the assembly above and never written.
        let table = unsafe { &see_isr_table };
        for (v, &handler) in table.iter().enumerate() {
            let ist = if v == 8 {
                crate::gdt::DOUBLE_FAULT_IST as u8 + 1
            } else {
                0
            };
            gates[v] = Gate::new(handler, cs.0, ist);
        }
        // SAFETY: as above.
        let spurious = unsafe { see_isr_spurious };
        gates[usize::from(SPURIOUS_VECTOR)] = Gate::new(spurious, cs.0, 0);
        // SAFETY: as above.
        let timer = unsafe { see_isr_timer };
        gates[usize::from(TIMER_VECTOR)] = Gate::new(timer, cs.0, 0);
        Idt(gates)
    });
    let pointer = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::from_ptr(idt),
    };
    // SAFETY: the IDT is 'static and every present gate points at a stub above.
    unsafe { lidt(&pointer) };
}
