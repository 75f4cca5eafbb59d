//! The PVH boot information, parsed: `hvm_start_info`, its E820 table and the command line.
//!
//! The VMM is outside the SEE's trust boundary, so everything it hands over is hostile input:
//! every count, address and length is bounded before it is used, and each byte is read once
//! (through the caller's reader) and copied into the returned [`MemoryMap`]. This module has
//! no `unsafe` and no kernel dependencies, so the host tests (tests/kernel_units.rs) and the
//! fuzz target `boot_info` compile it as it is; `memmap` reads guest-physical memory for it.

use core::fmt;

/// E820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// E820 type of the SEE shared window (see docs/ARCHITECTURE.md).
pub const E820_SEE_SHARED: u32 = 0x5EE0;

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const MAX_ENTRIES: usize = 128;
const MAX_CMDLINE: usize = 4096;
/// Everything the kernel can address is identity-mapped below this.
pub const MAPPED_LIMIT: u64 = 1 << 32;

/// One range of the physical memory map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    /// First physical address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// E820 type.
    pub kind: u32,
}

impl Region {
    /// One past the last address.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }

    /// Whether `[start, start + len)` lies inside this region.
    pub fn contains(&self, start: u64, len: u64) -> bool {
        start >= self.start && start.checked_add(len).is_some_and(|e| e <= self.end())
    }
}

/// The parsed boot information.
#[derive(Debug)]
pub struct MemoryMap {
    entries: [Region; MAX_ENTRIES],
    count: usize,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
}

/// Why the boot information could not be used.
#[derive(Debug)]
pub enum MemMapError {
    /// `hvm_start_info` is not where EBX said, or not a PVH start info.
    BadMagic(u32),
    /// The E820 table is empty or larger than the kernel accepts.
    EntryCount(u32),
    /// A table or the command line lies outside identity-mapped RAM.
    OutOfRange(&'static str, u64),
    /// The command line has no NUL terminator within its maximum length.
    CmdlineTooLong,
    /// Two of the structures (start info, E820 table, command line) share bytes.
    Overlap(&'static str),
}

impl fmt::Display for MemMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic(m) => write!(f, "hvm_start_info magic is {m:#x}, not {XEN_HVM_START_MAGIC:#x}: boot through a PVH loader"),
            Self::EntryCount(n) => write!(f, "E820 table has {n} entries (expected 1..={MAX_ENTRIES})"),
            Self::OutOfRange(what, addr) => write!(f, "{what} at {addr:#x} is outside RAM below 4 GiB"),
            Self::CmdlineTooLong => write!(f, "command line is not NUL-terminated within {MAX_CMDLINE} bytes"),
            Self::Overlap(what) => write!(f, "{what} overlaps another part of the boot information"),
        }
    }
}

/// The fields of `hvm_start_info` (PVH boot protocol, version 1) the kernel uses; at their
/// offsets: magic 0, cmdline_paddr 24, memmap_paddr 40, memmap_entries 48 (version, flags,
/// modules and the RSDP are not used).
#[derive(Clone, Copy)]
struct StartInfo {
    magic: u32,
    cmdline_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
}

/// `hvm_memmap_table_entry`: addr 0, size 8, type 16 (4 reserved bytes at 20).
#[derive(Clone, Copy)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
}

/// Encoded size of `hvm_start_info` (version 1).
pub const START_INFO_LEN: usize = 56;
/// Encoded size of one `hvm_memmap_table_entry`.
pub const MEMMAP_ENTRY_LEN: usize = 24;

fn le32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

impl StartInfo {
    fn decode(b: &[u8; START_INFO_LEN]) -> Self {
        Self {
            magic: le32(b, 0),
            cmdline_paddr: le64(b, 24),
            memmap_paddr: le64(b, 40),
            memmap_entries: le32(b, 48),
        }
    }
}

impl MemmapEntry {
    fn decode(b: &[u8; MEMMAP_ENTRY_LEN]) -> Self {
        Self {
            addr: le64(b, 0),
            size: le64(b, 8),
            kind: le32(b, 16),
        }
    }
}

fn in_mapped(addr: u64, len: u64) -> bool {
    addr != 0 && addr.checked_add(len).is_some_and(|end| end <= MAPPED_LIMIT)
}

/// Whether `[a, a + alen)` and `[b, b + blen)` share a byte (both inside the mapped range).
fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b + blen && b < a + alen
}

/// Parses the boot information at physical address `start_info` (the EBX of the PVH entry).
/// `read(addr, buf)` fills `buf` from physical memory at `addr`; it is only ever called for
/// ranges below [`MAPPED_LIMIT`] that do not start at 0, each byte at most once (structures
/// that share bytes are refused).
pub fn parse(
    start_info: u64,
    read: &mut dyn FnMut(u64, &mut [u8]),
) -> Result<MemoryMap, MemMapError> {
    if !in_mapped(start_info, START_INFO_LEN as u64) {
        return Err(MemMapError::OutOfRange("hvm_start_info", start_info));
    }
    let mut raw = [0u8; START_INFO_LEN];
    read(start_info, &mut raw);
    let info = StartInfo::decode(&raw);
    if info.magic != XEN_HVM_START_MAGIC {
        return Err(MemMapError::BadMagic(info.magic));
    }
    let count = info.memmap_entries as usize;
    if count == 0 || count > MAX_ENTRIES {
        return Err(MemMapError::EntryCount(info.memmap_entries));
    }
    let table_len = (count * MEMMAP_ENTRY_LEN) as u64;
    if !in_mapped(info.memmap_paddr, table_len) {
        return Err(MemMapError::OutOfRange("E820 table", info.memmap_paddr));
    }
    let info_len = START_INFO_LEN as u64;
    if overlaps(info.memmap_paddr, table_len, start_info, info_len) {
        return Err(MemMapError::Overlap("E820 table"));
    }
    let mut map = MemoryMap {
        entries: [Region::default(); MAX_ENTRIES],
        count,
        cmdline: [0; MAX_CMDLINE],
        cmdline_len: 0,
    };
    for (i, slot) in map.entries[..count].iter_mut().enumerate() {
        let mut raw = [0u8; MEMMAP_ENTRY_LEN];
        read(info.memmap_paddr + (i * MEMMAP_ENTRY_LEN) as u64, &mut raw);
        let e = MemmapEntry::decode(&raw);
        *slot = Region {
            start: e.addr,
            len: e.size,
            kind: e.kind,
        };
    }
    if info.cmdline_paddr != 0 {
        let addr = info.cmdline_paddr;
        let ram = map
            .ram()
            .find(|r| r.contains(addr, 1) && r.end() <= MAPPED_LIMIT)
            .ok_or(MemMapError::OutOfRange("command line", addr))?;
        let max = (ram.end() - addr).min(MAX_CMDLINE as u64) as usize;
        // Byte by byte up to the NUL, none of them shared with what was read before.
        let mut len = None;
        for i in 0..max {
            let at = addr + i as u64;
            if overlaps(at, 1, start_info, info_len)
                || overlaps(at, 1, info.memmap_paddr, table_len)
            {
                return Err(MemMapError::Overlap("command line"));
            }
            let mut b = [0u8];
            read(at, &mut b);
            if b[0] == 0 {
                len = Some(i);
                break;
            }
            map.cmdline[i] = b[0];
        }
        map.cmdline_len = len.ok_or(MemMapError::CmdlineTooLong)?;
    }
    Ok(map)
}

impl MemoryMap {
    /// Every E820 entry, in the order the VMM gave them.
    pub fn entries(&self) -> &[Region] {
        &self.entries[..self.count]
    }

    /// The usable RAM regions.
    pub fn ram(&self) -> impl Iterator<Item = &Region> {
        self.entries().iter().filter(|r| r.kind == E820_RAM)
    }

    /// Total usable RAM in bytes.
    pub fn ram_bytes(&self) -> u64 {
        self.ram().map(|r| r.len).sum()
    }

    /// The shared window (the first entry of type [`E820_SEE_SHARED`]), if the VMM gave one.
    pub fn shared_window(&self) -> Option<Region> {
        self.entries()
            .iter()
            .find(|r| r.kind == E820_SEE_SHARED)
            .copied()
    }

    /// The kernel command line (empty if absent or not UTF-8).
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }
}
