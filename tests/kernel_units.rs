//! Host-side unit tests of the guest kernel's pure parsing code (the kernel itself builds for
//! bare metal without a test harness): its modules are included here as they are.

#[path = "../images/see-kernel/src/cmdline.rs"]
#[allow(dead_code)]
mod cmdline;

#[path = "../images/see-kernel/src/bootinfo.rs"]
#[allow(dead_code)]
mod bootinfo;

mod boot_info {
    //! The kernel's parser of the VMM's boot information, against hostile layouts.

    use std::collections::HashMap;

    use super::bootinfo::{parse, MemMapError, E820_RAM, E820_SEE_SHARED, MEMMAP_ENTRY_LEN};

    const MAGIC: u32 = 0x336e_c578;
    const INFO: u64 = 0x6000;
    const TABLE: u64 = 0x7000;
    const CMDLINE: u64 = 0x2_0000;

    /// Sparse fake physical memory that counts how often each byte is read.
    #[derive(Default)]
    struct Phys {
        bytes: HashMap<u64, u8>,
        reads: HashMap<u64, u32>,
    }

    impl Phys {
        fn put(&mut self, addr: u64, data: &[u8]) {
            for (i, &b) in data.iter().enumerate() {
                self.bytes.insert(addr + i as u64, b);
            }
        }

        fn parse(&mut self, at: u64) -> Result<super::bootinfo::MemoryMap, MemMapError> {
            let Phys { bytes, reads } = self;
            parse(at, &mut |addr, buf| {
                for (i, b) in buf.iter_mut().enumerate() {
                    let a = addr + i as u64;
                    *reads.entry(a).or_default() += 1;
                    *b = bytes.get(&a).copied().unwrap_or(0);
                }
            })
        }
    }

    fn info(entries: u32, table: u64, cmdline: u64) -> Vec<u8> {
        let mut b = vec![0u8; 56];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
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
            entry(0xc000_0000, 16 << 20, E820_SEE_SHARED),
        ]
        .concat();
        p.put(TABLE, &table);
        p.put(CMDLINE, b"see.selftest=0 see.app=serve\0");
        p
    }

    #[test]
    fn the_vmm_s_layout_parses_and_every_byte_is_read_once() {
        let mut p = good();
        let map = p.parse(INFO).unwrap();
        assert_eq!(map.entries().len(), 3);
        assert_eq!(map.ram_bytes(), 0x9_f000 + 0x7f0_0000);
        let w = map.shared_window().unwrap();
        assert_eq!((w.start, w.len), (0xc000_0000, 16 << 20));
        assert_eq!(map.cmdline(), "see.selftest=0 see.app=serve");
        assert!(p.reads.values().all(|&n| n == 1), "a byte was read twice");
    }

    #[test]
    fn a_bad_magic_or_address_is_refused() {
        let mut p = good();
        p.put(INFO, &0xdead_beefu32.to_le_bytes());
        assert!(matches!(
            p.parse(INFO),
            Err(MemMapError::BadMagic(0xdead_beef))
        ));
        let mut p = good();
        for at in [0, (1 << 32) - 8, u64::MAX - 3] {
            assert!(
                matches!(
                    p.parse(at),
                    Err(MemMapError::OutOfRange("hvm_start_info", _))
                ),
                "{at:#x}"
            );
        }
    }

    #[test]
    fn entry_counts_and_table_addresses_are_bounded() {
        for n in [0, 129, u32::MAX] {
            let mut p = good();
            p.put(INFO, &info(n, TABLE, CMDLINE));
            assert!(
                matches!(p.parse(INFO), Err(MemMapError::EntryCount(m)) if m == n),
                "{n}"
            );
        }
        for table in [0, (1 << 32) - 24, u64::MAX - 100] {
            let mut p = good();
            p.put(INFO, &info(2, table, CMDLINE));
            assert!(
                matches!(p.parse(INFO), Err(MemMapError::OutOfRange("E820 table", _))),
                "{table:#x}"
            );
        }
    }

    #[test]
    fn the_command_line_must_lie_in_ram_and_end_in_time() {
        // In the shared window, not in RAM.
        let mut p = good();
        p.put(INFO, &info(3, TABLE, 0xc000_0000));
        assert!(matches!(
            p.parse(INFO),
            Err(MemMapError::OutOfRange("command line", 0xc000_0000))
        ));
        // No NUL within 4096 bytes.
        let mut p = good();
        p.put(CMDLINE, &[b'x'; 5000]);
        assert!(matches!(p.parse(INFO), Err(MemMapError::CmdlineTooLong)));
        // No NUL before the end of its RAM region: never read past it.
        let mut p = good();
        let end = 0x9_f000u64;
        p.put(INFO, &info(3, TABLE, end - 4));
        p.put(end - 4, b"abcd");
        p.put(end, b"\0");
        assert!(matches!(p.parse(INFO), Err(MemMapError::CmdlineTooLong)));
        assert!(!p.reads.contains_key(&end), "read past the region");
        // Sharing bytes with the start info or the E820 table.
        for at in [INFO + 8, TABLE + 30] {
            let mut p = good();
            p.put(INFO, &info(3, TABLE, at));
            p.put(0x9_0000, b"");
            let err = p.parse(INFO).err();
            assert!(
                matches!(err, Some(MemMapError::Overlap("command line"))),
                "{at:#x}: {err:?}"
            );
        }
        let mut p = good();
        p.put(INFO, &info(3, INFO + 16, CMDLINE));
        assert!(matches!(
            p.parse(INFO),
            Err(MemMapError::Overlap("E820 table"))
        ));
        // None at all is fine.
        let mut p = good();
        p.put(INFO, &info(3, TABLE, 0));
        assert_eq!(p.parse(INFO).unwrap().cmdline(), "");
    }

    #[test]
    fn the_fuzz_seed_is_the_vmm_s_layout() {
        // fuzz/fuzz_targets/boot_info.rs: guest-physical memory from 0x1000, start info first.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/seeds/boot_info/vmm_layout");
        let seed = std::fs::read(&path).unwrap();
        let mut p = Phys::default();
        p.put(0x1000, &seed);
        let map = p.parse(0x1000).unwrap();
        assert_eq!(map.entries().len(), 3);
        assert!(map.shared_window().is_some());
        assert_eq!(map.cmdline(), "see.selftest=0 see.app=serve");
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
                reads: HashMap::new(),
            };
            for _ in 0..(next() % 8 + 1) {
                let region = [INFO, TABLE, CMDLINE][(next() % 3) as usize];
                let span = if region == TABLE { 72 } else { 56 };
                p.put(region + next() % span, &[next() as u8]);
            }
            match p.parse(INFO) {
                Ok(map) => {
                    ok += 1;
                    assert!(map.entries().len() <= 128 && map.cmdline().len() < 4096);
                }
                Err(_) => refused += 1,
            }
            assert!(p.reads.values().all(|&n| n == 1), "a byte was read twice");
        }
        assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
    }
}
