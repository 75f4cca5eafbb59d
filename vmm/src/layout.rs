//! The guest-physical memory map (docs/ARCHITECTURE.md) and the E820 table built from it. The
//! addresses the guest relies on are the contract's ([`see_abi::memory`]); where the boot
//! structures go is this VMM's choice (the guest accepts any PVH layout).

use linux_loader::loader::elf::start_info::hvm_memmap_table_entry;

/// The boot GDT the vCPU's segment registers are loaded from.
pub const BOOT_GDT_ADDR: u64 = 0x500;
/// `hvm_start_info`.
pub const START_INFO_ADDR: u64 = 0x6000;
/// The E820 table referenced by `hvm_start_info.memmap_paddr`.
pub const MEMMAP_ADDR: u64 = 0x7000;
/// The kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Largest command line, NUL included: the guest's bound ([`see_abi::bootinfo::MAX_CMDLINE`],
/// 64 KiB), room for an app registry (`see.allow`) of thousands of entries.
pub const CMDLINE_MAX: usize = see_abi::bootinfo::MAX_CMDLINE;
/// End of the low RAM (start of the legacy hole: EBDA, VGA, BIOS).
pub const LOW_RAM_END: u64 = 0x9_fc00;
/// The KVM TSS region (needed by Intel VMX, unused by the guest): three pages above the local
/// APIC, below 4 GiB.
pub const KVM_TSS_ADDR: u64 = 0xFFFB_D000;

pub use see_abi::memory::{
    E820_RAM, E820_RESERVED, E820_SEE_SHARED, HIGH_RAM_START, SHARED_WINDOW_BASE,
};

// The map's invariants, checked at compile time.
const _: () = {
    // Boot structures sit in low RAM without overlapping each other.
    assert!(BOOT_GDT_ADDR + 32 <= START_INFO_ADDR);
    assert!(START_INFO_ADDR + 56 <= MEMMAP_ADDR);
    assert!(MEMMAP_ADDR + 24 * 4 <= CMDLINE_ADDR);
    assert!(CMDLINE_ADDR + CMDLINE_MAX as u64 <= LOW_RAM_END);
    // RAM, the shared window and the devices never overlap (see_abi::memory checks it); the
    // TSS lies above them.
    assert!(see_abi::memory::LAPIC_BASE + see_abi::memory::APIC_SIZE <= KVM_TSS_ADDR);
    assert!(KVM_TSS_ADDR + 3 * 4096 <= see_abi::memory::MAPPED_LIMIT);
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
        entry(SHARED_WINDOW_BASE, shared, E820_SEE_SHARED),
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
            (SHARED_WINDOW_BASE, 16 << 20)
        );
    }
}
