//! The kernel heap: a linked-list allocator over the RAM above the kernel image.

use linked_list_allocator::LockedHeap;
use see_abi::layout::Span;

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

/// Sets the heap up over `span`, the range the boot layout check placed
/// ([`see_abi::layout::check`]: page-aligned E820 RAM after the kernel image, below the
/// identity map's end, apart from the shared window and every device).
pub fn init(span: Span) -> HeapInfo {
    let info = HeapInfo {
        start: span.start,
        size: span.len,
    };
    // SAFETY: the layout check placed `span` in identity-mapped E820 RAM above the kernel
    // image, overlapping no shared window or device range; nothing else uses it, and `init`
    // runs once (from kernel_main).
    unsafe {
        ALLOCATOR
            .lock()
            .init(span.start as *mut u8, span.len as usize)
    };
    info
}

/// Bytes currently allocated.
pub fn used() -> usize {
    ALLOCATOR.lock().used()
}
