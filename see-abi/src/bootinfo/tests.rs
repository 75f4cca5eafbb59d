//! The parser against the layouts real loaders produce and against hostile ones.

use std::collections::HashMap;

use super::*;
use crate::memory::{IOAPIC_BASE, LAPIC_BASE, VIRTIO_MMIO_BASE};

const INFO: u64 = 0x6000;
const TABLE: u64 = 0x7000;
const CMDLINE: u64 = 0x2_0000;
const WINDOW: u64 = 0xc000_0000;

/// Sparse fake physical memory that counts how often each byte is read, and the buffer the
/// parser copies the command line into.
struct Phys {
    bytes: HashMap<u64, u8>,
    reads: HashMap<u64, u32>,
    cmdline: Box<[u8; MAX_CMDLINE]>,
}

impl Default for Phys {
    fn default() -> Self {
        Self {
            bytes: HashMap::new(),
            reads: HashMap::new(),
            cmdline: vec![0; MAX_CMDLINE]
                .into_boxed_slice()
                .try_into()
                .expect("MAX_CMDLINE bytes"),
        }
    }
}

impl Phys {
    fn put(&mut self, addr: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            self.bytes.insert(addr + i as u64, b);
        }
    }

    fn parse(&mut self, at: u64) -> Result<MemoryMap<'_>, BootInfoError> {
        let Phys {
            bytes,
            reads,
            cmdline,
        } = self;
        parse(
            at,
            &mut |addr, buf| {
                for (i, b) in buf.iter_mut().enumerate() {
                    let a = addr + i as u64;
                    *reads.entry(a).or_default() += 1;
                    *b = bytes.get(&a).copied().unwrap_or(0);
                }
            },
            cmdline,
        )
    }

    /// Every read was of an allowed byte, once.
    fn assert_reads_safe(&self) {
        assert!(
            self.reads.values().all(|&n| n == 1),
            "a byte was read twice"
        );
        for &a in self.reads.keys() {
            assert!(a != 0 && a < MAPPED_LIMIT, "read at {a:#x}");
            assert!(
                !DEVICE_RANGES
                    .iter()
                    .any(|d| a >= d.base && a - d.base < d.len),
                "read of device registers at {a:#x}"
            );
        }
    }
}

fn info(entries: u32, table: u64, cmdline: u64) -> Vec<u8> {
    let mut b = vec![0u8; START_INFO_LEN];
    b[0..4].copy_from_slice(&XEN_HVM_START_MAGIC.to_le_bytes());
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    b[24..32].copy_from_slice(&cmdline.to_le_bytes());
    b[40..48].copy_from_slice(&table.to_le_bytes());
    b[48..52].copy_from_slice(&entries.to_le_bytes());
    b
}

fn entry(addr: u64, size: u64, kind: u32) -> Vec<u8> {
    let mut b = vec![0u8; MEMMAP_ENTRY_LEN];
    b[0..8].copy_from_slice(&addr.to_le_bytes());
    b[8..16].copy_from_slice(&size.to_le_bytes());
    b[16..20].copy_from_slice(&kind.to_le_bytes());
    b
}

/// What see-vmm hands over: low RAM, RAM from 1 MiB, the shared window, a command line.
fn good() -> Phys {
    let mut p = Phys::default();
    p.put(INFO, &info(3, TABLE, CMDLINE));
    let table = [
        entry(0, 0x9_f000, E820_RAM),
        entry(0x10_0000, 0x7f0_0000, E820_RAM),
        entry(WINDOW, 16 << 20, E820_SEE_SHARED),
    ]
    .concat();
    p.put(TABLE, &table);
    p.put(CMDLINE, b"see.selftest=0 see.app=serve\0");
    p
}

/// `good()` with the start info pointing at `table` and `cmdline`.
fn with(table: u64, cmdline: u64) -> Phys {
    let mut p = good();
    p.put(INFO, &info(3, table, cmdline));
    p
}

#[test]
fn the_vmm_s_layout_parses_and_every_byte_is_read_once() {
    let mut p = good();
    let map = p.parse(INFO).unwrap();
    assert_eq!(map.entries().len(), 3);
    assert_eq!(map.ram_bytes(), 0x9_f000 + 0x7f0_0000);
    let w = map.shared_window().unwrap();
    assert_eq!((w.start, w.len), (WINDOW, 16 << 20));
    assert_eq!(map.cmdline(), "see.selftest=0 see.app=serve");
    p.assert_reads_safe();
}

#[test]
fn qemu_microvm_s_layout_parses() {
    // QEMU's microvm (qboot firmware) puts the start info, the table and the command line in
    // the reserved BIOS area below 1 MiB, and gives no shared window.
    let (info_at, table_at, cmdline_at) = (0xef000, 0xef040, 0xefc70);
    let mut p = Phys::default();
    p.put(info_at, &info(4, table_at, cmdline_at));
    let table = [
        entry(0, 0x9_fc00, E820_RAM),
        entry(0x9_fc00, 0x400, 2),
        entry(0xf_0000, 0x1_0000, 2),
        entry(0x10_0000, 0x7f0_0000, E820_RAM),
    ]
    .concat();
    p.put(table_at, &table);
    p.put(cmdline_at, b"see.selftest=0\0");
    let map = p.parse(info_at).unwrap();
    assert_eq!(map.cmdline(), "see.selftest=0");
    assert_eq!(map.entries().len(), 4);
    assert_eq!(map.shared_window(), None);
    p.assert_reads_safe();
}

#[test]
fn a_bad_magic_or_start_info_address_is_refused() {
    let mut p = good();
    p.put(INFO, &0xdead_beefu32.to_le_bytes());
    assert_eq!(
        p.parse(INFO).err(),
        Some(BootInfoError::BadMagic(0xdead_beef))
    );
    let mut p = good();
    for at in [0, (1 << 32) - 8, u64::MAX - 3] {
        assert_eq!(
            p.parse(at).err(),
            Some(BootInfoError::OutOfRange("hvm_start_info", at)),
            "{at:#x}"
        );
    }
    assert!(p.reads.is_empty(), "read an unmapped start info");
}

#[test]
fn entry_counts_and_table_addresses_are_bounded() {
    for n in [0, 129, u32::MAX] {
        let mut p = good();
        p.put(INFO, &info(n, TABLE, CMDLINE));
        assert_eq!(
            p.parse(INFO).err(),
            Some(BootInfoError::EntryCount(n)),
            "{n}"
        );
    }
    for table in [0, (1 << 32) - 24, u64::MAX - 100] {
        let mut p = good();
        p.put(INFO, &info(2, table, CMDLINE));
        assert_eq!(
            p.parse(INFO).err(),
            Some(BootInfoError::OutOfRange("E820 table", table)),
            "{table:#x}"
        );
    }
}

#[test]
fn structures_over_devices_are_refused_before_a_byte_is_read() {
    for (at, device) in [
        (VIRTIO_MMIO_BASE, "the virtio-mmio devices"),
        (VIRTIO_MMIO_BASE - 8, "the virtio-mmio devices"),
        (IOAPIC_BASE + 0x100, "the I/O APIC"),
        (LAPIC_BASE, "the local APIC"),
    ] {
        let mut p = good();
        assert_eq!(
            p.parse(at).err(),
            Some(BootInfoError::Overlap("hvm_start_info", device)),
            "start info at {at:#x}"
        );
        let mut p = with(at, CMDLINE);
        assert_eq!(
            p.parse(INFO).err(),
            Some(BootInfoError::Overlap("E820 table", device)),
            "table at {at:#x}"
        );
        if at >= VIRTIO_MMIO_BASE {
            let mut p = with(TABLE, at);
            p.put(at, b"x\0");
            assert_eq!(
                p.parse(INFO).err(),
                Some(BootInfoError::Overlap("command line", device)),
                "command line at {at:#x}"
            );
            p.assert_reads_safe();
        }
    }
    // A command line that runs into the devices stops before their first byte.
    let at = VIRTIO_MMIO_BASE - 4;
    let mut p = with(TABLE, at);
    p.put(at, b"abcdefgh\0");
    assert_eq!(
        p.parse(INFO).err(),
        Some(BootInfoError::Overlap(
            "command line",
            "the virtio-mmio devices"
        ))
    );
    p.assert_reads_safe();
}

#[test]
fn structures_in_the_shared_window_are_refused() {
    // The command line: refused before it is read.
    let mut p = with(TABLE, WINDOW + 0x100);
    p.put(WINDOW + 0x100, b"see.app=serve\0");
    assert_eq!(
        p.parse(INFO).err(),
        Some(BootInfoError::Overlap("command line", "the shared window"))
    );
    assert!(!p.reads.contains_key(&(WINDOW + 0x100)), "read the window");
    // Running into the window from below.
    let mut p = with(TABLE, WINDOW - 3);
    p.put(WINDOW - 3, b"abcdef\0");
    assert_eq!(
        p.parse(INFO).err(),
        Some(BootInfoError::Overlap("command line", "the shared window"))
    );
    assert!(!p.reads.contains_key(&WINDOW), "read the window");
    // The start info or the table, found inside the window the table names.
    let mut p = Phys::default();
    let at = WINDOW + 0x1000;
    p.put(at, &info(3, TABLE, 0));
    p.put(TABLE, &good().bytes_of(TABLE, 72));
    assert_eq!(
        p.parse(at).err(),
        Some(BootInfoError::Overlap(
            "hvm_start_info",
            "the shared window"
        ))
    );
    let mut p = Phys::default();
    p.put(INFO, &info(3, at, 0));
    p.put(at, &good().bytes_of(TABLE, 72));
    assert_eq!(
        p.parse(INFO).err(),
        Some(BootInfoError::Overlap("E820 table", "the shared window"))
    );
}

impl Phys {
    fn bytes_of(&self, at: u64, len: u64) -> Vec<u8> {
        (at..at + len)
            .map(|a| self.bytes.get(&a).copied().unwrap_or(0))
            .collect()
    }
}

#[test]
fn structures_that_share_bytes_are_refused() {
    for (at, other) in [(INFO + 8, "hvm_start_info"), (TABLE + 30, "E820 table")] {
        let mut p = with(TABLE, at);
        assert_eq!(
            p.parse(INFO).err(),
            Some(BootInfoError::Overlap("command line", other)),
            "{at:#x}"
        );
        p.assert_reads_safe();
    }
    // A command line that runs into the table from below.
    let mut p = with(TABLE, TABLE - 2);
    p.put(TABLE - 2, b"ab");
    assert_eq!(
        p.parse(INFO).err(),
        Some(BootInfoError::Overlap("command line", "E820 table"))
    );
    p.assert_reads_safe();
    let mut p = with(INFO + 16, CMDLINE);
    assert_eq!(
        p.parse(INFO).err(),
        Some(BootInfoError::Overlap("E820 table", "hvm_start_info"))
    );
}

#[test]
fn the_command_line_ends_in_time_and_below_4_gib() {
    // No NUL within MAX_CMDLINE bytes.
    let mut p = good();
    p.put(CMDLINE, &vec![b'x'; MAX_CMDLINE + 1000]);
    assert_eq!(p.parse(INFO).err(), Some(BootInfoError::CmdlineTooLong));
    assert!(
        !p.reads.contains_key(&(CMDLINE + MAX_CMDLINE as u64)),
        "read past the maximum"
    );
    // The longest one, NUL included, is read whole.
    let mut p = good();
    let mut line = vec![b'y'; MAX_CMDLINE - 1];
    line.push(0);
    p.put(CMDLINE, &line);
    assert_eq!(p.parse(INFO).unwrap().cmdline().len(), MAX_CMDLINE - 1);
    p.assert_reads_safe();
    // Past the identity-mapped 4 GiB: refused at the limit, never read there.
    let at = MAPPED_LIMIT - 4;
    let mut p = with(TABLE, at);
    p.put(at, b"abcd");
    assert_eq!(
        p.parse(INFO).err(),
        Some(BootInfoError::OutOfRange("command line", at))
    );
    p.assert_reads_safe();
    // In reserved memory (not RAM) is fine, and so is running past the end of a RAM region.
    let end = 0x9_f000u64;
    let mut p = with(TABLE, end - 4);
    p.put(end - 4, b"abcdef\0");
    assert_eq!(p.parse(INFO).unwrap().cmdline(), "abcdef");
    p.assert_reads_safe();
    // None at all is fine.
    let mut p = with(TABLE, 0);
    assert_eq!(p.parse(INFO).unwrap().cmdline(), "");
}

#[test]
fn errors_say_what_and_where() {
    let e = BootInfoError::Overlap("command line", "the shared window");
    let s = format!("{e}");
    assert!(s.contains("command line overlaps the shared window"), "{s}");
    let s = format!("{}", BootInfoError::OutOfRange("E820 table", 0x1234));
    assert!(s.contains("E820 table at 0x1234"), "{s}");
    // A std error on the host, so callers can put it behind `?` and `#[source]`.
    let boxed: Box<dyn std::error::Error> = BootInfoError::CmdlineTooLong.into();
    assert!(boxed.to_string().contains(&MAX_CMDLINE.to_string()));
}

#[test]
fn the_fuzz_seed_is_the_vmm_s_layout() {
    // fuzz/fuzz_targets/boot_info.rs: guest-physical memory from 0x1000, start info first.
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/boot_info/vmm_layout");
    let seed = std::fs::read(&path).unwrap();
    let mut p = Phys::default();
    p.put(0x1000, &seed);
    let map = p.parse(0x1000).unwrap();
    assert_eq!(map.entries().len(), 3);
    assert!(map.shared_window().is_some());
    assert_eq!(map.cmdline(), "see.selftest=0 see.app=serve");
    p.assert_reads_safe();
}

#[test]
fn the_fuzz_seed_with_a_command_line_outside_ram_parses() {
    // fuzz/seeds/boot_info/qemu_reserved_cmdline: the command line in reserved memory, as
    // QEMU places it, and no shared window.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds/boot_info/qemu_reserved_cmdline");
    let seed = std::fs::read(&path).unwrap();
    let mut p = Phys::default();
    p.put(0x1000, &seed);
    let map = p.parse(0x1000).unwrap();
    assert!(
        !map.ram().any(|r| r.contains(0x1100, 1)),
        "the seed's line is in RAM"
    );
    assert_eq!(map.cmdline(), "see.selftest=0");
    assert_eq!(map.shared_window(), None);
    p.assert_reads_safe();
}

#[test]
fn mutated_boot_information_never_panics() {
    let base = good();
    let mut state = 0x5EE0_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..3000 {
        let mut p = Phys {
            bytes: base.bytes.clone(),
            ..Phys::default()
        };
        for _ in 0..(next() % 8 + 1) {
            let region = [INFO, TABLE, CMDLINE][(next() % 3) as usize];
            let span = if region == TABLE { 72 } else { 56 };
            p.put(region + next() % span, &[next() as u8]);
        }
        match p.parse(INFO) {
            Ok(map) => {
                ok += 1;
                assert!(map.entries().len() <= MAX_ENTRIES && map.cmdline().len() < MAX_CMDLINE);
            }
            Err(_) => refused += 1,
        }
        p.assert_reads_safe();
    }
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
}
