//! The kernel heap: a linked-list allocator over the RAM above the kernel image.

use core::fmt;

use linked_list_allocator::LockedHeap;

use crate::memmap::{MemoryMap, MAPPED_LIMIT};

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

/// Where the heap lives.
#[derive(Clone, Copy, Debug)]
pub struct HeapInfo {
    /// First byte.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
}

/// No RAM for a heap.
#[derive(Debug)]
pub struct NoHeapRam {
    kernel_end: u64,
}

impl fmt::Display for NoHeapRam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no E820 RAM region holds the kernel end {:#x} with room for a heap: give the VM more memory",
            self.kernel_end
        )
    }
}

/// Puts the heap in the RAM region that holds the end of the kernel, from there to its end.
pub fn init(map: &MemoryMap) -> Result<HeapInfo, NoHeapRam> {
    let (_, kernel_end) = crate::boot::kernel_range();
    let region = map
        .ram()
        .find(|r| r.contains(kernel_end, 0) && r.end() > kernel_end)
        .ok_or(NoHeapRam { kernel_end })?;
    let start = kernel_end.next_multiple_of(4096);
    let end = region.end().min(MAPPED_LIMIT) & !0xfff;
    if end <= start + 4096 {
        return Err(NoHeapRam { kernel_end });
    }
    let info = HeapInfo {
        start,
        size: end - start,
    };
    // SAFETY: the range is E820 RAM above the kernel image, identity-mapped, used by nothing
    // else, and `init` runs once (from kernel_main).
    unsafe { ALLOCATOR.lock().init(start as *mut u8, info.size as usize) };
    Ok(info)
}

/// Bytes currently allocated.
pub fn used() -> usize {
    ALLOCATOR.lock().used()
}
