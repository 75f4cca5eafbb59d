//! The SEE kernel's parser of the VMM's boot information (`hvm_start_info`, the E820 table and
//! the command line: images/see-kernel/src/bootinfo.rs, compiled here as it is) over memory
//! the input fills: the input is guest-physical memory from 0x1000, `hvm_start_info` at its
//! start, zeros elsewhere. The parser must never panic, never read a byte twice and never
//! return more than its bounds.

#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;

#[path = "../../images/see-kernel/src/bootinfo.rs"]
#[allow(dead_code)]
mod bootinfo;

const BASE: u64 = 0x1000;

fuzz_target!(|data: &[u8]| {
    let mut reads: HashMap<u64, u32> = HashMap::new();
    let result = bootinfo::parse(BASE, &mut |addr, buf| {
        for (i, b) in buf.iter_mut().enumerate() {
            let a = addr + i as u64;
            *reads.entry(a).or_default() += 1;
            *b = a
                .checked_sub(BASE)
                .and_then(|off| data.get(usize::try_from(off).ok()?))
                .copied()
                .unwrap_or(0);
        }
    });
    assert!(reads.values().all(|&n| n == 1), "a byte was read twice");
    assert!(reads.keys().all(|&a| a != 0 && a < bootinfo::MAPPED_LIMIT));
    if let Ok(map) = result {
        assert!(!map.entries().is_empty() && map.entries().len() <= 128);
        assert!(map.cmdline().len() < 4096);
    }
});
