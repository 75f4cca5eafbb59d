//! The memory map handed over by the VMM: `hvm_start_info`, its E820 table and the command line.
//!
//! Parsed once at boot, defensively (every count and address is bounded), and copied into
//! kernel memory, so nothing is read twice from where the VMM put it. The shared window, the
//! only memory a device backend can see, is the E820 entry of type [`E820_SEE_SHARED`].

use core::fmt;

use spin::Once;

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
}

impl fmt::Display for MemMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic(m) => write!(f, "hvm_start_info magic is {m:#x}, not {XEN_HVM_START_MAGIC:#x}: boot through a PVH loader"),
            Self::EntryCount(n) => write!(f, "E820 table has {n} entries (expected 1..={MAX_ENTRIES})"),
            Self::OutOfRange(what, addr) => write!(f, "{what} at {addr:#x} is outside RAM below 4 GiB"),
            Self::CmdlineTooLong => write!(f, "command line is not NUL-terminated within {MAX_CMDLINE} bytes"),
        }
    }
}

/// `hvm_start_info` (PVH boot protocol, version 1).
#[repr(C)]
#[derive(Clone, Copy)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

/// `hvm_memmap_table_entry`.
#[repr(C)]
#[derive(Clone, Copy)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

static MAP: Once<MemoryMap> = Once::new();

/// Parses the boot information at `start_info` (the EBX of the PVH entry) once.
pub fn init(start_info: u64) -> Result<&'static MemoryMap, MemMapError> {
    let map = parse(start_info)?;
    Ok(MAP.call_once(|| map))
}

/// The memory map; panics if [`init`] has not succeeded.
pub fn get() -> &'static MemoryMap {
    MAP.get().expect("memmap::init runs first")
}

fn in_mapped(addr: u64, len: u64) -> bool {
    addr != 0 && addr.checked_add(len).is_some_and(|end| end <= MAPPED_LIMIT)
}

fn parse(start_info: u64) -> Result<MemoryMap, MemMapError> {
    let info_len = core::mem::size_of::<StartInfo>() as u64;
    if !in_mapped(start_info, info_len) {
        return Err(MemMapError::OutOfRange("hvm_start_info", start_info));
    }
    // SAFETY: the range is identity-mapped (checked above); the struct is plain data.
    let info = unsafe { core::ptr::read_unaligned(start_info as *const StartInfo) };
    if info.magic != XEN_HVM_START_MAGIC {
        return Err(MemMapError::BadMagic(info.magic));
    }
    let count = info.memmap_entries as usize;
    if count == 0 || count > MAX_ENTRIES {
        return Err(MemMapError::EntryCount(info.memmap_entries));
    }
    let table_len = (count * core::mem::size_of::<MemmapEntry>()) as u64;
    if !in_mapped(info.memmap_paddr, table_len) {
        return Err(MemMapError::OutOfRange("E820 table", info.memmap_paddr));
    }
    let mut map = MemoryMap {
        entries: [Region::default(); MAX_ENTRIES],
        count,
        cmdline: [0; MAX_CMDLINE],
        cmdline_len: 0,
    };
    let table = info.memmap_paddr as *const MemmapEntry;
    for (i, slot) in map.entries[..count].iter_mut().enumerate() {
        // SAFETY: entry i lies inside the table checked above.
        let e = unsafe { core::ptr::read_unaligned(table.add(i)) };
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
        let mut len = None;
        for i in 0..max {
            // SAFETY: addr + i lies inside an identity-mapped RAM region (checked above).
            let b = unsafe { core::ptr::read_volatile((addr as *const u8).add(i)) };
            if b == 0 {
                len = Some(i);
                break;
            }
            map.cmdline[i] = b;
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
