//! The boot layout check: the guest's memory map, as the loader described it, must keep RAM,
//! the shared window, the device ranges, the kernel image and the heap apart.
//!
//! The loader is outside the SEE's trust boundary ([`crate::bootinfo`]). A layout in which the
//! shared window overlaps RAM would put the kernel's private data where the host can read and
//! change it; a device range over RAM or over the kernel would turn the driver's register
//! accesses into writes to private memory. The kernel calls [`check`] on every boot, right
//! after parsing the boot information, and ends the guest with
//! [`crate::exit::Status::BadLayout`] when it fails: it never runs on a layout it cannot trust.
//!
//! What is checked, each refusal a [`LayoutError`]:
//! - E820 RAM and shared-window entries share no byte with any other entry (reserved entries
//!   may overlap each other: they are never used);
//! - at most one shared window, whole pages, inside the identity map;
//! - the device ranges (the fixed ones of [`DEVICE_RANGES`] and every well-formed
//!   `virtio_mmio.device` of the command line) lie inside the identity map and overlap no RAM,
//!   no shared window, the kernel image nor the heap; command-line devices overlap neither
//!   each other nor the APICs;
//! - the kernel image lies inside one RAM entry;
//! - the heap, which [`check`] places (from the kernel's end to the end of its RAM entry,
//!   below [`MAPPED_LIMIT`]), has at least two pages and overlaps nothing else.
//!
//! The check is pure code over the parsed map: quadratic in the number of E820 entries (at
//! most [`crate::bootinfo::MAX_ENTRIES`]), a few hundred comparisons for a real loader's map.

use core::fmt;

use crate::bootinfo::{MemoryMap, Region};
use crate::cmdline::Cmdline;
use crate::memory::{DEVICE_RANGES, E820_RAM, E820_SEE_SHARED, MAPPED_LIMIT};

/// Page size: the shared window and the heap are whole pages.
const PAGE: u64 = 4096;

/// A named range of guest-physical memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// What it is, for messages.
    pub name: &'static str,
    /// First address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Span {
    /// One past the last address (saturating).
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }

    /// Whether the two spans share a byte.
    pub fn overlaps(&self, other: &Span) -> bool {
        self.len > 0 && other.len > 0 && self.start < other.end() && other.start < self.end()
    }

    fn from_region(r: &Region) -> Self {
        Self {
            name: match r.kind {
                E820_RAM => "RAM",
                E820_SEE_SHARED => "the shared window",
                _ => "a reserved E820 entry",
            },
            start: r.start,
            len: r.len,
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:#x}..{:#x}", self.name, self.start, self.end())
    }
}

/// Why the boot layout cannot be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// Two ranges that must be disjoint share bytes.
    Overlap(Span, Span),
    /// The memory map names more than one shared window.
    SharedWindows(usize),
    /// The shared window is empty, not whole pages, or not inside the identity map.
    BadSharedWindow(Span),
    /// A device range is empty or not inside the identity map.
    DeviceOutOfRange(Span),
    /// The kernel image is not inside one RAM entry.
    KernelOutsideRam(Span),
    /// The RAM entry that holds the kernel has no room for a heap after it.
    NoHeapRoom {
        /// The kernel image's end.
        kernel_end: u64,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Overlap(a, b) => write!(f, "{a} overlaps {b}"),
            Self::SharedWindows(n) => write!(
                f,
                "the memory map names {n} shared windows (E820 type {E820_SEE_SHARED:#x}); at most one is allowed"
            ),
            Self::BadSharedWindow(w) => write!(
                f,
                "{w} is empty, not whole pages, or not below {MAPPED_LIMIT:#x}"
            ),
            Self::DeviceOutOfRange(d) => {
                write!(f, "{d} is empty or not below {MAPPED_LIMIT:#x}")
            }
            Self::KernelOutsideRam(k) => write!(f, "{k} is not inside one E820 RAM entry"),
            Self::NoHeapRoom { kernel_end } => write!(
                f,
                "the RAM entry holding the kernel end {kernel_end:#x} has no room for a heap: give the VM more memory"
            ),
        }
    }
}

impl core::error::Error for LayoutError {}

/// Most device ranges [`check`] considers: the fixed ones and the first command-line devices
/// (later `virtio_mmio.device` words are ignored here, as the kernel uses only the first).
const MAX_DEVICES: usize = DEVICE_RANGES.len() + 16;

/// Checks the layout of `map` with the kernel image at `kernel` (`start..end`, from the
/// linker) and returns where the heap goes.
pub fn check(map: &MemoryMap<'_>, kernel: (u64, u64)) -> Result<Span, LayoutError> {
    let entries = map.entries();
    let kernel = Span {
        name: "the kernel image",
        start: kernel.0,
        len: kernel.1.saturating_sub(kernel.0),
    };

    // E820: RAM and the shared window share no byte with any other entry.
    let used = |r: &Region| r.kind == E820_RAM || r.kind == E820_SEE_SHARED;
    for (i, a) in entries.iter().enumerate() {
        for b in entries[i + 1..].iter().filter(|b| used(a) || used(b)) {
            let (a, b) = (Span::from_region(a), Span::from_region(b));
            if a.overlaps(&b) {
                return Err(LayoutError::Overlap(a, b));
            }
        }
    }

    // At most one shared window, whole pages, identity-mapped.
    let shared_count = entries.iter().filter(|r| r.kind == E820_SEE_SHARED).count();
    if shared_count > 1 {
        return Err(LayoutError::SharedWindows(shared_count));
    }
    let shared = map.shared_window().map(|r| Span::from_region(&r));
    if let Some(w) = shared {
        if w.len == 0 || w.start % PAGE != 0 || w.len % PAGE != 0 || !mapped(&w) {
            return Err(LayoutError::BadSharedWindow(w));
        }
    }

    // The kernel image inside one RAM entry (so not in the window, nor over a device).
    if kernel.len == 0 || !map.ram().any(|r| r.contains(kernel.start, kernel.len)) {
        return Err(LayoutError::KernelOutsideRam(kernel));
    }
    let heap = place_heap(map, kernel.end())?;

    // The devices: fixed ranges and the command line's.
    let mut devices = [Span {
        name: "",
        start: 0,
        len: 0,
    }; MAX_DEVICES];
    let mut n = 0;
    for d in DEVICE_RANGES {
        devices[n] = Span {
            name: d.name,
            start: d.base,
            len: d.len,
        };
        n += 1;
    }
    let fixed = n;
    let cmdline = Cmdline::new(map.cmdline());
    for d in cmdline.virtio_mmio_devices().flatten() {
        if n == MAX_DEVICES {
            break;
        }
        devices[n] = Span {
            name: "a command-line virtio-mmio device",
            start: d.base,
            len: d.size,
        };
        n += 1;
    }
    let devices = &devices[..n];
    for (i, d) in devices.iter().enumerate() {
        if d.len == 0 || !mapped(d) {
            return Err(LayoutError::DeviceOutOfRange(*d));
        }
        let private = [Some(kernel), Some(heap), shared];
        let ram = entries
            .iter()
            .filter(|r| r.kind == E820_RAM)
            .map(Span::from_region);
        if let Some(other) = private
            .into_iter()
            .flatten()
            .chain(ram)
            .find(|s| d.overlaps(s))
        {
            return Err(LayoutError::Overlap(*d, other));
        }
        if i >= fixed {
            // Command-line devices: apart from each other and from the APICs (the fixed
            // virtio-mmio range is where they belong).
            let others = devices[1..fixed].iter().chain(&devices[fixed..i]);
            if let Some(other) = others.into_iter().find(|o| d.overlaps(o)) {
                return Err(LayoutError::Overlap(*d, *other));
            }
        }
    }

    // The heap, inside RAM by construction, away from the window.
    if let Some(w) = shared.filter(|w| w.overlaps(&heap)) {
        return Err(LayoutError::Overlap(heap, w));
    }
    Ok(heap)
}

/// Whether `s` lies inside the identity map and does not start at 0.
fn mapped(s: &Span) -> bool {
    s.start != 0
        && s.start
            .checked_add(s.len)
            .is_some_and(|e| e <= MAPPED_LIMIT)
}

/// The heap: from the kernel's end (page-aligned) to the end of the RAM entry that holds it,
/// below [`MAPPED_LIMIT`]; at least two pages.
fn place_heap(map: &MemoryMap<'_>, kernel_end: u64) -> Result<Span, LayoutError> {
    let no_room = LayoutError::NoHeapRoom { kernel_end };
    let region = map
        .ram()
        .find(|r| r.contains(kernel_end, 0) && r.end() > kernel_end)
        .ok_or(no_room)?;
    let start = kernel_end.checked_next_multiple_of(PAGE).ok_or(no_room)?;
    let end = region.end().min(MAPPED_LIMIT) & !(PAGE - 1);
    if end <= start.saturating_add(PAGE) {
        return Err(no_room);
    }
    Ok(Span {
        name: "the heap",
        start,
        len: end - start,
    })
}

#[cfg(test)]
mod tests;
