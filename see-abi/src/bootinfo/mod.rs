//! The PVH boot information, parsed: `hvm_start_info`, its E820 table and the command line.
//!
//! The loader (see-vmm, QEMU, Firecracker, Cloud Hypervisor...) is outside the SEE's trust
//! boundary, so everything it hands over is hostile input: every count, address and length is
//! bounded before it is used, and each byte is read once (through the caller's reader) and
//! copied into the returned [`MemoryMap`] (the command line into a buffer the caller lends, so
//! that a long one, such as an app registry of hundreds of entries, never sits on the stack).
//!
//! The parser accepts every layout a standard PVH loader produces (QEMU, for one, puts the
//! command line in reserved low memory) and refuses only what is unsafe to read or to trust:
//! - a structure at address 0 or extending past [`MAPPED_LIMIT`] (the guest maps nothing
//!   there);
//! - a structure over a device range ([`DEVICE_RANGES`]: reads there have side effects);
//! - a structure over the shared window (an E820 entry of type [`E820_SEE_SHARED`]: the host
//!   can change it at any time);
//! - structures that share bytes (a byte would be read twice, or mean two things).
//!
//! The module has no `unsafe`: the caller's reader touches memory (the kernel's `memmap`
//! reads identity-mapped physical memory; the host tests and the fuzz target `boot_info`
//! read a buffer).

use core::fmt;

use crate::memory::{DeviceRange, DEVICE_RANGES};
pub use crate::memory::{E820_RAM, E820_SEE_SHARED, MAPPED_LIMIT};

/// `hvm_start_info.magic` (`XEN_HVM_START_MAGIC_VALUE`).
pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// Most E820 entries the parser accepts.
pub const MAX_ENTRIES: usize = 128;
/// Longest command line, NUL included: 64 KiB, room for an app registry (`see.allow`) of
/// thousands of entries.
pub const MAX_CMDLINE: usize = 64 * 1024;
/// Encoded size of `hvm_start_info` (version 1).
pub const START_INFO_LEN: usize = 56;
/// Encoded size of one `hvm_memmap_table_entry`.
pub const MEMMAP_ENTRY_LEN: usize = 24;

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

/// The parsed boot information; the command line lives in the buffer lent to [`parse`].
#[derive(Debug)]
pub struct MemoryMap<'a> {
    entries: [Region; MAX_ENTRIES],
    count: usize,
    cmdline: &'a [u8],
}

/// Why the boot information could not be used.
#[derive(Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// `hvm_start_info` is not where EBX said, or not a PVH start info.
    BadMagic(u32),
    /// The E820 table is empty or larger than the kernel accepts.
    EntryCount(u32),
    /// A structure starts at address 0 or extends past the identity-mapped 4 GiB.
    OutOfRange(&'static str, u64),
    /// The command line has no NUL terminator within its maximum length.
    CmdlineTooLong,
    /// A structure (first) shares bytes with another structure, a device range or the shared
    /// window (second).
    Overlap(&'static str, &'static str),
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic(m) => write!(
                f,
                "hvm_start_info magic is {m:#x}, not {XEN_HVM_START_MAGIC:#x}: boot through a PVH loader"
            ),
            Self::EntryCount(n) => {
                write!(f, "E820 table has {n} entries (expected 1..={MAX_ENTRIES})")
            }
            Self::OutOfRange(what, addr) => write!(
                f,
                "{what} at {addr:#x} starts at 0 or ends past 4 GiB: the loader must place it in mapped memory"
            ),
            Self::CmdlineTooLong => write!(
                f,
                "command line is not NUL-terminated within {MAX_CMDLINE} bytes"
            ),
            Self::Overlap(what, other) => write!(
                f,
                "{what} overlaps {other}: the loader must keep boot structures apart and out of devices and the shared window"
            ),
        }
    }
}

impl core::error::Error for BootInfoError {}

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

/// Whether `[a, a + alen)` and `[b, b + blen)` share a byte.
fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

/// The device range `[addr, addr + len)` touches, if any.
fn device_at(addr: u64, len: u64) -> Option<&'static str> {
    DEVICE_RANGES
        .iter()
        .find(|d: &&DeviceRange| overlaps(addr, len, d.base, d.len))
        .map(|d| d.name)
}

/// A structure already read: the ones after it may not share its bytes.
#[derive(Clone, Copy)]
struct Placed {
    name: &'static str,
    addr: u64,
    len: u64,
}

/// Refuses `[addr, addr + len)` when it is unmapped, over a device or over an earlier
/// structure (checked before a single byte of it is read).
fn check_place(
    name: &'static str,
    addr: u64,
    len: u64,
    before: &[Placed],
) -> Result<(), BootInfoError> {
    if !in_mapped(addr, len) {
        return Err(BootInfoError::OutOfRange(name, addr));
    }
    if let Some(device) = device_at(addr, len) {
        return Err(BootInfoError::Overlap(name, device));
    }
    match before.iter().find(|p| overlaps(addr, len, p.addr, p.len)) {
        Some(p) => Err(BootInfoError::Overlap(name, p.name)),
        None => Ok(()),
    }
}

/// Parses the boot information at physical address `start_info` (the EBX of the PVH entry).
/// `read(addr, buf)` fills `buf` from physical memory at `addr`. It is only ever called for
/// ranges that start above 0, end at or below [`MAPPED_LIMIT`] and touch no device range,
/// each byte at most once; the shared window's bytes are never read once the E820 table has
/// named it (a start info or table found inside it afterwards is refused). The command line
/// is copied into `cmdline`, which the returned map borrows.
pub fn parse<'a>(
    start_info: u64,
    read: &mut dyn FnMut(u64, &mut [u8]),
    cmdline: &'a mut [u8; MAX_CMDLINE],
) -> Result<MemoryMap<'a>, BootInfoError> {
    let info_len = START_INFO_LEN as u64;
    check_place("hvm_start_info", start_info, info_len, &[])?;
    let mut raw = [0u8; START_INFO_LEN];
    read(start_info, &mut raw);
    let info = StartInfo::decode(&raw);
    if info.magic != XEN_HVM_START_MAGIC {
        return Err(BootInfoError::BadMagic(info.magic));
    }
    let count = info.memmap_entries as usize;
    if count == 0 || count > MAX_ENTRIES {
        return Err(BootInfoError::EntryCount(info.memmap_entries));
    }
    let table_len = (count * MEMMAP_ENTRY_LEN) as u64;
    let placed = [
        Placed {
            name: "hvm_start_info",
            addr: start_info,
            len: info_len,
        },
        Placed {
            name: "E820 table",
            addr: info.memmap_paddr,
            len: table_len,
        },
    ];
    check_place("E820 table", info.memmap_paddr, table_len, &placed[..1])?;
    let mut map = MemoryMap {
        entries: [Region::default(); MAX_ENTRIES],
        count,
        cmdline: &[],
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
    // What was read before the table named the shared window may not lie in it.
    if let Some(p) = placed.iter().find(|p| map.in_shared_window(p.addr, p.len)) {
        return Err(BootInfoError::Overlap(p.name, "the shared window"));
    }
    if info.cmdline_paddr != 0 {
        let len = read_cmdline(&map, cmdline, info.cmdline_paddr, &placed, read)?;
        map.cmdline = &cmdline[..len];
    }
    Ok(map)
}

/// Reads the NUL-terminated command line at `addr` byte by byte into `out`, each byte checked
/// against `map` and `placed` before it is read; returns its length. The checks cost a few
/// comparisons per byte (`placed`, the device ranges, `map`'s at most [`MAX_ENTRIES`]
/// entries), bounded by [`MAX_CMDLINE`].
fn read_cmdline(
    map: &MemoryMap<'_>,
    out: &mut [u8; MAX_CMDLINE],
    addr: u64,
    placed: &[Placed],
    read: &mut dyn FnMut(u64, &mut [u8]),
) -> Result<usize, BootInfoError> {
    const NAME: &str = "command line";
    for (i, slot) in out.iter_mut().enumerate() {
        let at = addr + i as u64;
        check_place(NAME, at, 1, placed).map_err(|e| match e {
            BootInfoError::OutOfRange(..) => BootInfoError::OutOfRange(NAME, addr),
            other => other,
        })?;
        if map.in_shared_window(at, 1) {
            return Err(BootInfoError::Overlap(NAME, "the shared window"));
        }
        let mut b = [0u8];
        read(at, &mut b);
        if b[0] == 0 {
            return Ok(i);
        }
        *slot = b[0];
    }
    Err(BootInfoError::CmdlineTooLong)
}

impl<'a> MemoryMap<'a> {
    /// Every E820 entry, in the order the loader gave them.
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

    /// The shared window (the first entry of type [`E820_SEE_SHARED`]), if the loader gave
    /// one.
    pub fn shared_window(&self) -> Option<Region> {
        self.entries()
            .iter()
            .find(|r| r.kind == E820_SEE_SHARED)
            .copied()
    }

    /// Whether `[addr, addr + len)` touches any entry of type [`E820_SEE_SHARED`].
    fn in_shared_window(&self, addr: u64, len: u64) -> bool {
        self.entries()
            .iter()
            .any(|r| r.kind == E820_SEE_SHARED && overlaps(addr, len, r.start, r.len))
    }

    /// A map with `entries` and `cmdline`, as if parsed (for other modules' unit tests).
    #[cfg(test)]
    pub(crate) fn from_parts(entries: &[Region], cmdline: &'a str) -> Self {
        let mut map = Self {
            entries: [Region::default(); MAX_ENTRIES],
            count: entries.len(),
            cmdline: cmdline.as_bytes(),
        };
        map.entries[..entries.len()].copy_from_slice(entries);
        map
    }

    /// The kernel command line (empty if absent or not UTF-8).
    pub fn cmdline(&self) -> &'a str {
        core::str::from_utf8(self.cmdline).unwrap_or("")
    }
}

#[cfg(test)]
mod tests;
