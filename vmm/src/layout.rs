//! The guest-physical memory map (docs/ARCHITECTURE.md) and the E820 table built from it.

use linux_loader::loader::elf::start_info::hvm_memmap_table_entry;

/// The boot GDT the vCPU's segment registers are loaded from.
pub const BOOT_GDT_ADDR: u64 = 0x500;
/// `hvm_start_info`.
pub const START_INFO_ADDR: u64 = 0x6000;
/// The E820 table referenced by `hvm_start_info.memmap_paddr`.
pub const MEMMAP_ADDR: u64 = 0x7000;
/// The kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Largest command line, NUL included.
pub const CMDLINE_MAX: usize = 4096;
/// End of the low RAM (start of the legacy hole: EBDA, VGA, BIOS).
pub const LOW_RAM_END: u64 = 0x9_fc00;
/// Start of high RAM; the kernel loads here.
pub const HIGH_RAM_START: u64 = 0x10_0000;
/// The shared window.
pub const SHARED_WINDOW_ADDR: u64 = 0xC000_0000;
/// First virtio-mmio device.
pub const VIRTIO_MMIO_BASE: u64 = 0xD000_0000;
/// Size of one virtio-mmio device window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// GSI of virtio-mmio device 0; device n uses `VIRTIO_MMIO_GSI_BASE + n`.
pub const VIRTIO_MMIO_GSI_BASE: u32 = 5;
/// Most virtio-mmio devices (GSI 5..=23 on the 24-pin I/O APIC).
pub const VIRTIO_MMIO_MAX_DEVICES: u32 = 19;
/// The KVM TSS region (needed by Intel VMX, unused by the guest), below the I/O APIC.
pub const KVM_TSS_ADDR: u64 = 0xFFFB_D000;

/// E820 usable RAM.
pub const E820_RAM: u32 = 1;
/// E820 reserved.
pub const E820_RESERVED: u32 = 2;
/// E820 type of the SEE shared window.
pub const E820_SEE_SHARED: u32 = 0x5EE0;

// The map's invariants, checked at compile time.
const _: () = {
    use crate::config::{MAX_MEMORY_MIB, MAX_SHARED_MIB};
    // Boot structures sit in low RAM without overlapping each other.
    assert!(BOOT_GDT_ADDR + 32 <= START_INFO_ADDR);
    assert!(START_INFO_ADDR + 56 <= MEMMAP_ADDR);
    assert!(MEMMAP_ADDR + 24 * 4 <= CMDLINE_ADDR);
    assert!(CMDLINE_ADDR + CMDLINE_MAX as u64 <= LOW_RAM_END);
    // RAM, the shared window and the virtio-mmio devices never overlap.
    assert!((MAX_MEMORY_MIB as u64) << 20 <= SHARED_WINDOW_ADDR);
    assert!(SHARED_WINDOW_ADDR + ((MAX_SHARED_MIB as u64) << 20) <= VIRTIO_MMIO_BASE);
    assert!(VIRTIO_MMIO_BASE + VIRTIO_MMIO_SIZE * VIRTIO_MMIO_MAX_DEVICES as u64 <= 0xFEC0_0000);
    assert!(VIRTIO_MMIO_GSI_BASE + VIRTIO_MMIO_MAX_DEVICES <= 24);
};

fn entry(addr: u64, size: u64, type_: u32) -> hvm_memmap_table_entry {
    hvm_memmap_table_entry {
        addr,
        size,
        type_,
        reserved: 0,
    }
}

/// The E820 map for `ram` bytes of private RAM and a shared window of `shared` bytes.
/// `ram` must be above 1 MiB and end below the shared window (the config checks this).
pub fn e820_map(ram: u64, shared: u64) -> Vec<hvm_memmap_table_entry> {
    vec![
        entry(0, LOW_RAM_END, E820_RAM),
        entry(LOW_RAM_END, HIGH_RAM_START - LOW_RAM_END, E820_RESERVED),
        entry(HIGH_RAM_START, ram - HIGH_RAM_START, E820_RAM),
        entry(SHARED_WINDOW_ADDR, shared, E820_SEE_SHARED),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_is_sorted_disjoint_and_covers_ram() {
        let ram = 128 << 20;
        let map = e820_map(ram, 16 << 20);
        for pair in map.windows(2) {
            assert!(pair[0].addr + pair[0].size <= pair[1].addr, "{pair:?}");
        }
        let ram_total: u64 = map
            .iter()
            .filter(|e| e.type_ == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert_eq!(ram_total, ram - (HIGH_RAM_START - LOW_RAM_END));
        let shared: Vec<_> = map.iter().filter(|e| e.type_ == E820_SEE_SHARED).collect();
        assert_eq!(shared.len(), 1);
        assert_eq!(
            (shared[0].addr, shared[0].size),
            (SHARED_WINDOW_ADDR, 16 << 20)
        );
    }
}
