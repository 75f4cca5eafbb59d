//! Loading the guest kernel (ELF with a PVH note) and writing the PVH boot information:
//! `hvm_start_info`, the E820 table, the command line and the boot GDT.

use std::{
    fs::File,
    io::{self, Read},
    path::Path,
};

use linux_loader::{
    cmdline::Cmdline,
    configurator::{pvh::PvhBootConfigurator, BootConfigurator, BootParams},
    loader::{
        elf::{start_info::hvm_start_info, Elf, Error as ElfError, PvhBootCapability},
        load_cmdline, Error as LoaderError, KernelLoader,
    },
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::{cpu::BOOT_GDT, layout};

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// Why the kernel could not be loaded or booted.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file does not exist.
    #[error("kernel {0} not found: build it with `cargo xtask image` or pass --kernel PATH")]
    KernelMissing(String),
    /// The kernel file cannot be read.
    #[error("cannot read kernel {path}: {source}; check its permissions")]
    KernelUnreadable {
        /// The path.
        path: String,
        /// The I/O error.
        source: io::Error,
    },
    /// Not an ELF file.
    #[error("kernel {0} is not an ELF file: the VMM boots ELF images with a PVH entry note")]
    NotElf(String),
    /// An ELF without the PVH entry note.
    #[error("kernel {0} has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): it cannot be booted through PVH")]
    NoPvhNote(String),
    /// A malformed ELF, or one that does not fit.
    #[error("cannot load kernel {path}: {reason}")]
    BadElf {
        /// The path.
        path: String,
        /// What linux-loader reported.
        reason: String,
    },
    /// The image does not fit in guest RAM.
    #[error("kernel {path} ends at {end:#x}, beyond guest RAM ({ram:#x}): raise --memory")]
    KernelTooLarge {
        /// The path.
        path: String,
        /// End of the image.
        end: u64,
        /// RAM size.
        ram: u64,
    },
    /// The command line is too long or malformed.
    #[error(
        "kernel command line: {0}; shorten --cmdline (at most {max} bytes in all, the VMM's \
         device entries included)",
        max = layout::CMDLINE_MAX - 1
    )]
    Cmdline(String),
    /// Writing boot information failed.
    #[error("cannot write boot information into guest memory: {0}")]
    BootParams(String),
}

/// Where the loaded kernel starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadedKernel {
    /// The PVH 32-bit entry point.
    pub entry: GuestAddress,
    /// One past the end of the image in guest memory.
    pub end: u64,
}

/// Opens the kernel, telling a missing file from an unreadable one.
pub fn open_kernel(path: &Path) -> Result<File, BootError> {
    let shown = path.display().to_string();
    let unreadable = |source| BootError::KernelUnreadable {
        path: shown.clone(),
        source,
    };
    let mut file = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => BootError::KernelMissing(shown.clone()),
        _ => unreadable(e),
    })?;
    // Read a byte now, so a directory or an unreadable file fails here with its own message.
    let mut first = [0u8; 1];
    file.read(&mut first).map_err(unreadable)?;
    Ok(file)
}

/// Loads the ELF segments into guest memory and returns the PVH entry.
pub fn load_kernel(
    memory: &GuestMemoryMmap,
    ram_size: u64,
    file: &mut File,
    path: &Path,
) -> Result<LoadedKernel, BootError> {
    let shown = path.display().to_string();
    let result = Elf::load(
        memory,
        None,
        file,
        Some(GuestAddress(layout::HIGH_RAM_START)),
    )
    .map_err(|e| match e {
        LoaderError::Elf(ElfError::InvalidElfMagicNumber | ElfError::ReadElfHeader) => {
            BootError::NotElf(shown.clone())
        }
        LoaderError::Elf(ElfError::InvalidPvhNote) => BootError::NoPvhNote(shown.clone()),
        other => BootError::BadElf {
            path: shown.clone(),
            reason: other.to_string(),
        },
    })?;
    let entry = match result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => addr,
        _ => return Err(BootError::NoPvhNote(shown)),
    };
    if result.kernel_end > ram_size {
        return Err(BootError::KernelTooLarge {
            path: shown,
            end: result.kernel_end,
            ram: ram_size,
        });
    }
    Ok(LoadedKernel {
        entry,
        end: result.kernel_end,
    })
}

/// Builds the command line from the user's part and the VMM's device entries.
pub fn build_cmdline(user: &str, entries: &[String]) -> Result<Cmdline, BootError> {
    let err = |e: linux_loader::cmdline::Error| BootError::Cmdline(e.to_string());
    let mut cmdline = Cmdline::new(layout::CMDLINE_MAX).map_err(err)?;
    for part in std::iter::once(user).chain(entries.iter().map(String::as_str)) {
        if !part.trim().is_empty() {
            cmdline.insert_str(part.trim()).map_err(err)?;
        }
    }
    Ok(cmdline)
}

/// Writes the boot GDT, the command line, the E820 table and `hvm_start_info`.
pub fn write_boot_info(
    memory: &GuestMemoryMmap,
    cmdline: &Cmdline,
    ram_size: u64,
    shared_size: u64,
) -> Result<GuestAddress, BootError> {
    let params = |e: &dyn std::fmt::Display| BootError::BootParams(e.to_string());
    for (i, descriptor) in BOOT_GDT.iter().enumerate() {
        memory
            .write_obj(
                *descriptor,
                GuestAddress(layout::BOOT_GDT_ADDR + 8 * i as u64),
            )
            .map_err(|e| params(&e))?;
    }
    load_cmdline(memory, GuestAddress(layout::CMDLINE_ADDR), cmdline)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    let memmap = layout::e820_map(ram_size, shared_size);
    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: layout::CMDLINE_ADDR,
        memmap_paddr: layout::MEMMAP_ADDR,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let start_info_addr = GuestAddress(layout::START_INFO_ADDR);
    let mut boot_params = BootParams::new(&start_info, start_info_addr);
    boot_params.set_sections(&memmap, GuestAddress(layout::MEMMAP_ADDR));
    PvhBootConfigurator::write_bootparams(&boot_params, memory).map_err(|e| params(&e))?;
    Ok(start_info_addr)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use linux_loader::loader::elf::start_info::hvm_memmap_table_entry;

    use super::*;

    fn memory() -> GuestMemoryMmap {
        crate::memory::create(32 << 20, 1 << 20).unwrap().0
    }

    /// A minimal ELF64 x86_64 executable: one PT_LOAD at 1 MiB, optionally a PVH note.
    fn tiny_elf(pvh_note: bool) -> Vec<u8> {
        let mut f = vec![0u8; 0x200];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // 64-bit
        f[5] = 1; // little-endian
        f[6] = 1;
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes()); // e_entry
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[56..58].copy_from_slice(&(1 + u16::from(pvh_note)).to_le_bytes());
        let phdr = |ty: u32, off: u64, addr: u64, size: u64| {
            let mut p = vec![0u8; 56];
            p[0..4].copy_from_slice(&ty.to_le_bytes());
            p[8..16].copy_from_slice(&off.to_le_bytes());
            p[16..24].copy_from_slice(&addr.to_le_bytes());
            p[24..32].copy_from_slice(&addr.to_le_bytes());
            p[32..40].copy_from_slice(&size.to_le_bytes());
            p[40..48].copy_from_slice(&size.to_le_bytes());
            p
        };
        f[64..120].copy_from_slice(&phdr(1, 0x100, 0x10_0000, 0x10));
        if pvh_note {
            f[120..176].copy_from_slice(&phdr(4, 0x180, 0, 20));
            let note: Vec<u8> = [4u32, 4, 18]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .chain(*b"Xen\0")
                .chain(0x10_0004u32.to_le_bytes())
                .collect();
            f[0x180..0x180 + 20].copy_from_slice(&note);
        }
        f
    }

    fn load(bytes: &[u8]) -> Result<LoadedKernel, BootError> {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(bytes).unwrap();
        let mut file = open_kernel(tmp.path())?;
        load_kernel(&memory(), 32 << 20, &mut file, tmp.path())
    }

    #[test]
    fn loads_an_elf_with_a_pvh_note() {
        let k = load(&tiny_elf(true)).unwrap();
        assert_eq!(k.entry, GuestAddress(0x10_0004));
        assert_eq!(k.end, 0x10_0010);
    }

    #[test]
    fn refuses_elf_without_pvh_note_and_non_elf() {
        assert!(matches!(
            load(&tiny_elf(false)),
            Err(BootError::NoPvhNote(_))
        ));
        assert!(matches!(
            load(b"#!/bin/sh\necho hi\n"),
            Err(BootError::NotElf(_))
        ));
        assert!(matches!(
            load(b""),
            Err(BootError::KernelUnreadable { .. }) | Err(BootError::NotElf(_))
        ));
    }

    #[test]
    fn missing_kernel_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            open_kernel(&dir.path().join("nope")),
            Err(BootError::KernelMissing(_))
        ));
        assert!(matches!(
            open_kernel(dir.path()),
            Err(BootError::KernelUnreadable { .. })
        ));
    }

    #[test]
    fn boot_info_lands_where_the_map_says() {
        let mem = memory();
        let cmdline = build_cmdline(
            "see.selftest=0",
            &["virtio_mmio.device=4K@0xd0000000:5".into()],
        )
        .unwrap();
        let addr = write_boot_info(&mem, &cmdline, 32 << 20, 1 << 20).unwrap();
        let info: hvm_start_info = mem.read_obj(addr).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(info.memmap_entries, 4);
        let last: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(info.memmap_paddr + 3 * 24))
            .unwrap();
        assert_eq!(
            (last.addr, last.type_),
            (layout::SHARED_WINDOW_BASE, layout::E820_SEE_SHARED)
        );
        let mut text = [0u8; 50];
        mem.read_slice(&mut text, GuestAddress(info.cmdline_paddr))
            .unwrap();
        assert_eq!(
            &text[..49],
            b"see.selftest=0 virtio_mmio.device=4K@0xd0000000:5"
        );
        assert_eq!(text[49], 0);
        let code: u64 = mem
            .read_obj(GuestAddress(layout::BOOT_GDT_ADDR + 8))
            .unwrap();
        assert_eq!(code, BOOT_GDT[1]);
    }

    #[test]
    fn the_guest_s_parser_reads_what_the_vmm_writes() {
        // The contract test: see_abi::bootinfo (the guest's parser) over this VMM's memory.
        let mem = memory();
        let device = crate::devices::MmioSlots::default().allocate().unwrap();
        let cmdline = build_cmdline("see.selftest=0", &[device.cmdline_entry()]).unwrap();
        let addr = write_boot_info(&mem, &cmdline, 32 << 20, 1 << 20).unwrap();
        let mut buf = Box::new([0u8; see_abi::bootinfo::MAX_CMDLINE]);
        let map = see_abi::bootinfo::parse(
            addr.0,
            &mut |at, buf| mem.read_slice(buf, GuestAddress(at)).unwrap(),
            &mut buf,
        )
        .unwrap_or_else(|e| panic!("the guest refuses this VMM's boot information: {e}"));
        let window = map.shared_window().unwrap();
        assert_eq!(
            (window.start, window.len),
            (layout::SHARED_WINDOW_BASE, 1 << 20)
        );
        assert_eq!(
            map.ram_bytes(),
            (32 << 20) - (layout::HIGH_RAM_START - layout::LOW_RAM_END)
        );
        let line = see_abi::cmdline::Cmdline::new(map.cmdline());
        assert_eq!(line.get(see_abi::cmdline::SELFTEST), Some("0"));
        let devices: Vec<_> = line.virtio_mmio_devices().collect();
        assert_eq!(devices, [Ok(see_abi::cmdline::VirtioMmioDevice::slot(0))]);
    }

    #[test]
    fn overlong_cmdline_is_refused() {
        let long = "x".repeat(layout::CMDLINE_MAX);
        let err = build_cmdline(&long, &[]).unwrap_err();
        assert!(matches!(err, BootError::Cmdline(_)), "{err}");
        assert!(
            err.to_string()
                .contains(&(layout::CMDLINE_MAX - 1).to_string()),
            "{err}"
        );
    }

    #[test]
    fn the_longest_cmdline_reaches_the_guest_whole() {
        // An app registry of thousands of entries: the guest's parser reads all of it.
        let mem = memory();
        let user = format!("see.allow={}", "1:2:3,".repeat(9000));
        let device = crate::devices::MmioSlots::default().allocate().unwrap();
        let entry = device.cmdline_entry();
        let pad = layout::CMDLINE_MAX - 1 - user.len() - entry.len() - 2;
        let user = format!("{user} see.pad={}", "p".repeat(pad - "see.pad=".len()));
        let cmdline = build_cmdline(&user, &[entry]).unwrap();
        let addr = write_boot_info(&mem, &cmdline, 32 << 20, 1 << 20).unwrap();
        let mut buf = Box::new([0u8; see_abi::bootinfo::MAX_CMDLINE]);
        let map = see_abi::bootinfo::parse(
            addr.0,
            &mut |at, buf| mem.read_slice(buf, GuestAddress(at)).unwrap(),
            &mut buf,
        )
        .unwrap();
        assert_eq!(map.cmdline().len(), layout::CMDLINE_MAX - 1);
        let line = see_abi::cmdline::Cmdline::new(map.cmdline());
        assert_eq!(
            line.get(see_abi::cmdline::ALLOW),
            Some(&user[10..user.find(' ').unwrap()])
        );
        assert_eq!(line.virtio_mmio_devices().count(), 1);
    }
}
