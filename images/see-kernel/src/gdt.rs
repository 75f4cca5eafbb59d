//! The kernel's own GDT with a TSS, so that a double fault runs on a stack of its own.

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
struct Stack([u8; IST_STACK_SIZE]);

static mut DOUBLE_FAULT_STACK: Stack = Stack([0; IST_STACK_SIZE]);
static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<(GlobalDescriptorTable, [SegmentSelector; 3])> = Once::new();

/// Loads the GDT, reloads the segment registers and the task register.
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        let stack = &raw mut DOUBLE_FAULT_STACK;
        tss.interrupt_stack_table[usize::from(DOUBLE_FAULT_IST)] =
            VirtAddr::from_ptr(stack) + IST_STACK_SIZE as u64;
        tss
    });
    let (gdt, [code, data, tss_sel]) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss_sel = gdt.append(Descriptor::tss_segment(tss));
        (gdt, [code, data, tss_sel])
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
