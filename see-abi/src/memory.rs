//! The guest-physical memory map (docs/ARCHITECTURE.md, "Guest-physical memory map"): where
//! the VMM puts the shared window and the devices, the E820 types the guest looks for, and the
//! limits of the VMM's options.
//!
//! Where the VMM puts its boot structures (`hvm_start_info`, the E820 table, the command line)
//! is not part of the contract: the guest accepts any layout a PVH loader produces
//! ([`crate::bootinfo`]).

/// E820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// E820 type of reserved memory (the legacy hole, firmware).
pub const E820_RESERVED: u32 = 2;
/// E820 type of the SEE shared window, the only memory a device backend can see.
pub const E820_SEE_SHARED: u32 = 0x5EE0;

/// Start of high RAM; the kernel ELF loads here.
pub const HIGH_RAM_START: u64 = 0x10_0000;
/// Where `see-vmm` puts the shared window.
pub const SHARED_WINDOW_BASE: u64 = 0xC000_0000;
/// First virtio-mmio device.
pub const VIRTIO_MMIO_BASE: u64 = 0xD000_0000;
/// Size of (and stride between) virtio-mmio device windows.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// GSI of virtio-mmio device 0; device n uses `VIRTIO_MMIO_GSI_BASE + n`.
pub const VIRTIO_MMIO_GSI_BASE: u32 = 5;
/// Most virtio-mmio devices (GSI 5..=23 on the 24-pin I/O APIC).
pub const VIRTIO_MMIO_MAX_DEVICES: u32 = 19;
/// The I/O APIC's register window (KVM in-kernel irqchip).
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
/// The local APIC's register window (KVM in-kernel irqchip).
pub const LAPIC_BASE: u64 = 0xFEE0_0000;
/// Size of each APIC register window.
pub const APIC_SIZE: u64 = 0x1000;
/// The guest identity-maps everything below this at boot (2 MiB pages) and nothing above.
pub const MAPPED_LIMIT: u64 = 1 << 32;

/// Smallest guest RAM in MiB (`see-vmm --memory`).
pub const MIN_MEMORY_MIB: u32 = 32;
/// Largest guest RAM in MiB: RAM must end below the shared window at 3 GiB.
pub const MAX_MEMORY_MIB: u32 = 3072;
/// Smallest shared window in MiB (`see-vmm --shared-mem`).
pub const MIN_SHARED_MIB: u32 = 1;
/// Largest shared window in MiB: it must end below the virtio-mmio devices.
pub const MAX_SHARED_MIB: u32 = 256;
/// Default shared window in MiB.
pub const DEFAULT_SHARED_MIB: u32 = 16;

/// The register window of virtio-mmio device `n`.
pub const fn virtio_mmio_base(n: u32) -> u64 {
    VIRTIO_MMIO_BASE + VIRTIO_MMIO_SIZE * n as u64
}

/// A range of device registers: reading it has side effects, so no boot structure may lie
/// there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRange {
    /// What it is, for error messages.
    pub name: &'static str,
    /// First address.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Every fixed device range of the map.
pub const DEVICE_RANGES: [DeviceRange; 3] = [
    DeviceRange {
        name: "the virtio-mmio devices",
        base: VIRTIO_MMIO_BASE,
        len: VIRTIO_MMIO_SIZE * VIRTIO_MMIO_MAX_DEVICES as u64,
    },
    DeviceRange {
        name: "the I/O APIC",
        base: IOAPIC_BASE,
        len: APIC_SIZE,
    },
    DeviceRange {
        name: "the local APIC",
        base: LAPIC_BASE,
        len: APIC_SIZE,
    },
];

// The map's invariants, checked at compile time.
const _: () = {
    // RAM, the shared window and the devices never overlap, and all lie below the mapped limit.
    assert!((MAX_MEMORY_MIB as u64) << 20 <= SHARED_WINDOW_BASE);
    assert!(SHARED_WINDOW_BASE + ((MAX_SHARED_MIB as u64) << 20) <= VIRTIO_MMIO_BASE);
    assert!(virtio_mmio_base(VIRTIO_MMIO_MAX_DEVICES) <= IOAPIC_BASE);
    assert!(IOAPIC_BASE + APIC_SIZE <= LAPIC_BASE);
    assert!(LAPIC_BASE + APIC_SIZE <= MAPPED_LIMIT);
    assert!(VIRTIO_MMIO_GSI_BASE + VIRTIO_MMIO_MAX_DEVICES <= 24);
    assert!(MIN_MEMORY_MIB as u64 > HIGH_RAM_START >> 20);
};
