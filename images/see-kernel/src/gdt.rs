//! The kernel's own GDT with a TSS, so that a double fault runs on a stack of its own and an
//! interrupt in ring 3 switches to a ring-0 stack, plus the ring-3 segments (see usermode.rs).

use spin::Once;
use x86_64::{
    instructions::{
        segmentation::{Segment, CS, DS, ES, SS},
        tables::load_tss,
    },
    structures::{
        gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector},
        tss::TaskStateSegment,
    },
    VirtAddr,
};

/// Interrupt stack table slot used for double faults.
pub const DOUBLE_FAULT_IST: u16 = 0;
const IST_STACK_SIZE: usize = 16 * 1024;

/// Only its address is used: the CPU writes it.
#[repr(align(16))]
#[allow(dead_code)]
struct Stack<const N: usize>([u8; N]);

static mut DOUBLE_FAULT_STACK: Stack<IST_STACK_SIZE> = Stack([0; IST_STACK_SIZE]);
static TSS: Once<TaskStateSegment> = Once::new();
static mut RING0_STACK: Stack<RING0_STACK_SIZE> = Stack([0; RING0_STACK_SIZE]);
static GDT: Once<(GlobalDescriptorTable, [SegmentSelector; 5])> = Once::new();

/// Stack the CPU switches to when an interrupt or exception arrives in ring 3.
const RING0_STACK_SIZE: usize = 64 * 1024;

/// Loads the GDT, reloads the segment registers and the task register.
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        let stack = &raw mut DOUBLE_FAULT_STACK;
        tss.interrupt_stack_table[usize::from(DOUBLE_FAULT_IST)] =
            VirtAddr::from_ptr(stack) + IST_STACK_SIZE as u64;
        let ring0 = &raw mut RING0_STACK;
        tss.privilege_stack_table[0] = VirtAddr::from_ptr(ring0) + RING0_STACK_SIZE as u64;
        tss
    });
    let (gdt, [code, data, tss_sel, ..]) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss_sel = gdt.append(Descriptor::tss_segment(tss));
        let user_data = gdt.append(Descriptor::user_data_segment());
        let user_code = gdt.append(Descriptor::user_code_segment());
        (gdt, [code, data, tss_sel, user_data, user_code])
    });
    gdt.load();
    // SAFETY: the selectors index the GDT just loaded, which lives for the whole run.
    unsafe {
        CS::set_reg(*code);
        DS::set_reg(*data);
        ES::set_reg(*data);
        SS::set_reg(*data);
        load_tss(*tss_sel);
    }
}

/// The ring-3 code and data selectors (RPL 3), for entering user mode.
pub fn user_selectors() -> (u16, u16) {
    match GDT.get() {
        Some((_, [.., user_data, user_code])) => (user_code.0, user_data.0),
        None => (0, 0),
    }
}
