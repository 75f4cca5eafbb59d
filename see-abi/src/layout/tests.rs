//! The layout check against see-vmm's and QEMU's real layouts and against one hostile layout
//! per overlap kind.

use super::*;
use crate::memory::{E820_RESERVED, IOAPIC_BASE, SHARED_WINDOW_BASE, VIRTIO_MMIO_BASE};

const KERNEL: (u64, u64) = (0x10_0000, 0x27_a000);
const MIB: u64 = 1 << 20;

fn ram(start: u64, len: u64) -> Region {
    Region {
        start,
        len,
        kind: E820_RAM,
    }
}

fn shared(start: u64, len: u64) -> Region {
    Region {
        start,
        len,
        kind: E820_SEE_SHARED,
    }
}

fn reserved(start: u64, len: u64) -> Region {
    Region {
        start,
        len,
        kind: E820_RESERVED,
    }
}

/// see-vmm's layout: low RAM, RAM from 1 MiB, the shared window at 3 GiB, one device.
fn see_vmm() -> Vec<Region> {
    vec![
        ram(0, 0x9_f000),
        ram(0x10_0000, 128 * MIB - 0x10_0000),
        shared(SHARED_WINDOW_BASE, 16 * MIB),
    ]
}

const DEVICE: &str = "see.selftest=0 virtio_mmio.device=4K@0xd0000000:5";

fn check_map(entries: &[Region], cmdline: &str) -> Result<Span, LayoutError> {
    check(&MemoryMap::from_parts(entries, cmdline), KERNEL)
}

fn overlap_names(r: Result<Span, LayoutError>) -> (&'static str, &'static str) {
    match r {
        Err(LayoutError::Overlap(a, b)) => (a.name, b.name),
        other => panic!("expected an overlap, got {other:?}"),
    }
}

#[test]
fn see_vmm_layout_passes_and_places_the_heap_after_the_kernel() {
    let heap = check_map(&see_vmm(), DEVICE).unwrap();
    assert_eq!(heap.start, 0x27_a000);
    assert_eq!(heap.end(), 128 * MIB);
}

#[test]
fn qemu_microvm_layouts_pass() {
    // Unsorted, reserved entries first, RAM above 4 GiB for large -m, no window, no device.
    let small = [
        reserved(0xfeff_c000, 0x4000),
        ram(0, 0x9_fc00),
        reserved(0x9_fc00, 0x400),
        reserved(0xf_0000, 0x1_0000),
        ram(0x10_0000, 128 * MIB - 0x10_0000),
    ];
    check_map(&small, "see.selftest=0").unwrap();
    let large = [
        ram(0, 0x9_fc00),
        ram(0x10_0000, SHARED_WINDOW_BASE - 0x10_0000),
        ram(1 << 32, 512 * MIB),
        // Reserved entries may overlap each other.
        reserved(0xfeff_c000, 0x4000),
        reserved(0xfeff_d000, 0x4000),
    ];
    let heap = check_map(&large, "").unwrap();
    assert_eq!(heap.end(), SHARED_WINDOW_BASE);
}

#[test]
fn ram_over_ram_is_refused() {
    let mut m = see_vmm();
    m.push(ram(64 * MIB, MIB));
    assert_eq!(overlap_names(check_map(&m, "")), ("RAM", "RAM"));
}

#[test]
fn the_shared_window_over_ram_is_refused() {
    let m = [
        ram(0x10_0000, SHARED_WINDOW_BASE + MIB),
        shared(SHARED_WINDOW_BASE, 16 * MIB),
    ];
    assert_eq!(
        overlap_names(check_map(&m, "")),
        ("RAM", "the shared window")
    );
}

#[test]
fn ram_over_a_reserved_entry_is_refused() {
    let mut m = see_vmm();
    m.push(reserved(0x9_e000, 0x2000));
    assert_eq!(
        overlap_names(check_map(&m, "")),
        ("RAM", "a reserved E820 entry")
    );
}

#[test]
fn two_or_malformed_shared_windows_are_refused() {
    let mut m = see_vmm();
    m.push(shared(SHARED_WINDOW_BASE + 32 * MIB, MIB));
    assert_eq!(check_map(&m, ""), Err(LayoutError::SharedWindows(2)));
    for bad in [
        shared(SHARED_WINDOW_BASE + 1, 16 * MIB),
        shared(SHARED_WINDOW_BASE, 16 * MIB + 1),
        shared(SHARED_WINDOW_BASE, 0),
        shared(1 << 32, 16 * MIB),
        shared(MAPPED_LIMIT - MIB, 2 * MIB),
    ] {
        let mut m = see_vmm();
        m[2] = bad;
        assert!(
            matches!(check_map(&m, ""), Err(LayoutError::BadSharedWindow(_))),
            "{bad:x?}"
        );
    }
}

#[test]
fn ram_or_the_window_over_a_fixed_device_is_refused() {
    // RAM up to 3.5 GiB (past the shared window's place, over the virtio-mmio devices).
    let m = [ram(0x10_0000, 0xe000_0000 - 0x10_0000)];
    assert_eq!(
        overlap_names(check_map(&m, "")),
        ("the virtio-mmio devices", "the heap")
    );
    let m = [
        ram(0x10_0000, 64 * MIB),
        shared(VIRTIO_MMIO_BASE - MIB, 2 * MIB),
    ];
    assert_eq!(
        overlap_names(check_map(&m, "")),
        ("the virtio-mmio devices", "the shared window")
    );
    let m = [ram(0x10_0000, 64 * MIB), ram(IOAPIC_BASE, 0x1000)];
    assert_eq!(overlap_names(check_map(&m, "")), ("the I/O APIC", "RAM"));
}

#[test]
fn a_command_line_device_over_private_memory_or_the_window_is_refused() {
    for (word, other) in [
        ("virtio_mmio.device=4K@0x100000:5", "the kernel image"),
        ("virtio_mmio.device=4K@0x400000:5", "the heap"),
        ("virtio_mmio.device=4K@0x1000:5", "RAM"),
        ("virtio_mmio.device=4K@0xc0000000:5", "the shared window"),
        (
            "virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=8K@0xcffff000:6",
            "a command-line virtio-mmio device",
        ),
        ("virtio_mmio.device=4K@0xfee00000:5", "the local APIC"),
    ] {
        assert_eq!(
            overlap_names(check_map(&see_vmm(), word)),
            ("a command-line virtio-mmio device", other),
            "{word}"
        );
    }
}

#[test]
fn a_device_outside_the_identity_map_is_refused() {
    let r = check_map(&see_vmm(), "virtio_mmio.device=4K@0x100000000:5");
    assert!(matches!(r, Err(LayoutError::DeviceOutOfRange(_))), "{r:?}");
}

#[test]
fn a_kernel_outside_ram_or_without_heap_room_is_refused() {
    // RAM ends inside the kernel image.
    let m = [ram(0, 0x9_f000), ram(0x10_0000, 0x10_0000)];
    assert!(matches!(
        check_map(&m, ""),
        Err(LayoutError::KernelOutsideRam(_))
    ));
    // The kernel in the shared window (which is not RAM).
    let m = [shared(0x10_0000, 4 * MIB)];
    assert!(matches!(
        check_map(&m, ""),
        Err(LayoutError::KernelOutsideRam(_))
    ));
    // RAM ends one page after the kernel: no room for a heap.
    let m = [ram(0x10_0000, KERNEL.1 - 0x10_0000 + 0x1000)];
    assert_eq!(
        check_map(&m, ""),
        Err(LayoutError::NoHeapRoom {
            kernel_end: KERNEL.1
        })
    );
}

#[test]
fn hostile_values_do_not_panic() {
    let m = [
        ram(u64::MAX - 10, 100),
        shared(u64::MAX, u64::MAX),
        ram(0x10_0000, u64::MAX),
    ];
    assert!(check_map(&m, "virtio_mmio.device=4K@0xffffffffffffffff:5").is_err());
    let m = [ram(0x10_0000, u64::MAX - 0x10_0000)];
    let r = check(&MemoryMap::from_parts(&m, ""), (u64::MAX - 5, u64::MAX));
    assert!(r.is_err(), "{r:?}");
}

#[test]
fn errors_name_both_ranges_and_addresses() {
    let m = [
        ram(0x10_0000, SHARED_WINDOW_BASE + MIB),
        shared(SHARED_WINDOW_BASE, 16 * MIB),
    ];
    let e = check_map(&m, "").unwrap_err().to_string();
    assert_eq!(
        e,
        "RAM 0x100000..0xc0200000 overlaps the shared window 0xc0000000..0xc1000000"
    );
}
