//! The SEE kernel's parser of the loader's boot information (`hvm_start_info`, the E820 table
//! and the command line: `see_abi::bootinfo`) over memory the input fills: the input is
//! guest-physical memory from 0x1000, `hvm_start_info` at its start, zeros elsewhere. The
//! parser must never panic, never read a byte twice, never read at 0, past the mapped limit or
//! in a device range, and never return more than its bounds. A parsed map then goes through
//! the boot layout check (`see_abi::layout`), which must not panic either, and the heap it
//! places must lie in one RAM entry, after the kernel, apart from the window and the devices.

#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;

use see_abi::{bootinfo, layout, memory::DEVICE_RANGES};

/// Where the kernel image lies (its linker range, about the size of the real one).
const KERNEL: (u64, u64) = (0x10_0000, 0x28_0000);

const BASE: u64 = 0x1000;

fuzz_target!(|data: &[u8]| {
    let mut reads: HashMap<u64, u32> = HashMap::new();
    let mut cmdline = vec![0u8; bootinfo::MAX_CMDLINE];
    let cmdline: &mut [u8; bootinfo::MAX_CMDLINE] = cmdline
        .as_mut_slice()
        .try_into()
        .expect("MAX_CMDLINE bytes");
    let result = bootinfo::parse(
        BASE,
        &mut |addr, buf| {
            for (i, b) in buf.iter_mut().enumerate() {
                let a = addr + i as u64;
                *reads.entry(a).or_default() += 1;
                *b = a
                    .checked_sub(BASE)
                    .and_then(|off| data.get(usize::try_from(off).ok()?))
                    .copied()
                    .unwrap_or(0);
            }
        },
        cmdline,
    );
    assert!(reads.values().all(|&n| n == 1), "a byte was read twice");
    assert!(reads.keys().all(|&a| a != 0 && a < bootinfo::MAPPED_LIMIT));
    assert!(reads.keys().all(|&a| !DEVICE_RANGES
        .iter()
        .any(|d| a >= d.base && a - d.base < d.len)));
    if let Ok(map) = result {
        assert!(!map.entries().is_empty() && map.entries().len() <= bootinfo::MAX_ENTRIES);
        assert!(map.cmdline().len() < bootinfo::MAX_CMDLINE);
        if let Ok(heap) = layout::check(&map, KERNEL) {
            assert!(
                heap.start >= KERNEL.1 && heap.len > 4096 && heap.end() <= bootinfo::MAPPED_LIMIT
            );
            assert!(map.ram().any(|r| r.contains(heap.start, heap.len)));
            let window = map.shared_window();
            assert!(window.is_none_or(|w| heap.end() <= w.start || w.end() <= heap.start));
            assert!(DEVICE_RANGES
                .iter()
                .all(|d| heap.end() <= d.base || d.base + d.len <= heap.start));
        }
    }
});
