//! Guest memory: private RAM (an anonymous private mapping) and the shared window (a sealed
//! memfd mapped shared), the only memory a device backend is ever given.

use std::{
    fs::File,
    io,
    os::fd::{AsRawFd, FromRawFd, RawFd},
    sync::Arc,
};

use vm_memory::{
    Address, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

use crate::layout::SHARED_WINDOW_BASE;

/// Why guest memory could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// memfd_create or sizing it failed.
    #[error(
        "cannot create the shared-window memfd ({0}): check the memory limits of this process"
    )]
    Memfd(#[source] io::Error),
    /// mmap failed.
    #[error("cannot map guest memory ({0}): try a smaller --memory or --shared-mem")]
    Map(#[source] vm_memory::mmap::FromRangesError),
}

/// The shared window as a vhost-user frontend sends it: guest range, file and host mapping.
#[derive(Clone, Debug)]
pub struct SharedWindow {
    guest_addr: GuestAddress,
    size: u64,
    file: Arc<File>,
    file_offset: u64,
    host_addr: u64,
}

impl SharedWindow {
    /// Guest-physical start.
    pub fn guest_addr(&self) -> GuestAddress {
        self.guest_addr
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The memfd backing the window.
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// The raw memfd, for `VHOST_USER_SET_MEM_TABLE`.
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Offset of the window in the memfd.
    pub fn file_offset(&self) -> u64 {
        self.file_offset
    }

    /// Where the VMM has the window mapped (its "userspace address").
    pub fn host_addr(&self) -> u64 {
        self.host_addr
    }

    /// Whether `[addr, addr + len)` lies inside the window.
    pub fn contains(&self, addr: GuestAddress, len: u64) -> bool {
        addr >= self.guest_addr
            && addr
                .checked_add(len)
                .is_some_and(|end| end.raw_value() <= self.guest_addr.raw_value() + self.size)
    }

    /// The VMM's address of guest range `[addr, addr + len)`, if it lies inside the window.
    pub fn host_address_of(&self, addr: GuestAddress, len: u64) -> Option<u64> {
        self.contains(addr, len)
            .then(|| self.host_addr + (addr.raw_value() - self.guest_addr.raw_value()))
    }
}

fn create_memfd(size: u64) -> Result<File, MemoryError> {
    // SAFETY: the name is a NUL-terminated literal; the returned descriptor is checked.
    let fd = unsafe {
        libc::memfd_create(
            c"see-shared-window".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(MemoryError::Memfd(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size).map_err(MemoryError::Memfd)?;
    // A backend must not be able to shrink the file under the VMM's mapping (SIGBUS).
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS on our own memfd with valid seal flags.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(MemoryError::Memfd(io::Error::last_os_error()));
    }
    Ok(file)
}

/// Asks the host to back the private RAM (the first region of `memory`) with transparent huge
/// pages (`MADV_HUGEPAGE`), before anything touches it. Best effort: a host without THP, or
/// with THP off, leaves the pages as they were, with a debug log.
pub fn advise_huge_pages(memory: &GuestMemoryMmap) {
    let Some((addr, len)) = memory.iter().next().and_then(|r| {
        let host = r.get_host_address(vm_memory::MemoryRegionAddress(0)).ok()?;
        Some((host, r.len() as usize))
    }) else {
        return;
    };
    // SAFETY: `[addr, addr + len)` is the private RAM mapping, owned by `memory`; the advice
    // changes how the host backs it, never its contents.
    if unsafe { libc::madvise(addr.cast(), len, libc::MADV_HUGEPAGE) } != 0 {
        log::debug!("MADV_HUGEPAGE on guest RAM: {}", io::Error::last_os_error());
    }
}

/// Maps `ram` bytes of private RAM at 0 and a shared window of `shared` bytes at
/// [`SHARED_WINDOW_BASE`]. Pages are allocated on first touch.
pub fn create(ram: u64, shared: u64) -> Result<(GuestMemoryMmap, SharedWindow), MemoryError> {
    let file = Arc::new(create_memfd(shared)?);
    let window = GuestAddress(SHARED_WINDOW_BASE);
    let memory = GuestMemoryMmap::from_ranges_with_files([
        (GuestAddress(0), ram as usize, None),
        (
            window,
            shared as usize,
            Some(FileOffset::from_arc(file.clone(), 0)),
        ),
    ])
    .map_err(MemoryError::Map)?;
    let host_addr = memory
        .find_region(window)
        .and_then(|r| r.get_host_address(vm_memory::MemoryRegionAddress(0)).ok())
        .expect("the shared window region was just created") as u64;
    Ok((
        memory,
        SharedWindow {
            guest_addr: window,
            size: shared,
            file,
            file_offset: 0,
            host_addr,
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use vm_memory::Bytes;

    use super::*;

    #[test]
    fn shared_window_is_the_memfd() {
        let (mem, win) = create(32 << 20, 1 << 20).unwrap();
        assert_eq!(win.guest_addr(), GuestAddress(SHARED_WINDOW_BASE));
        assert_eq!(win.size(), 1 << 20);
        assert_eq!(win.file().metadata().unwrap().len(), 1 << 20);
        let at = GuestAddress(SHARED_WINDOW_BASE + 0x1234);
        mem.write_obj(0xfeed_beef_u32, at).unwrap();
        let mut buf = [0u8; 4];
        win.file().read_exact_at(&mut buf, 0x1234).unwrap();
        assert_eq!(u32::from_le_bytes(buf), 0xfeed_beef);
        // Writes through the file show up in guest memory too.
        win.file().write_all_at(&[7, 8], 0x10).unwrap();
        let back: u16 = mem
            .read_obj(GuestAddress(SHARED_WINDOW_BASE + 0x10))
            .unwrap();
        assert_eq!(back, 0x0807);
    }

    #[test]
    fn memfd_is_sealed_against_resizing() {
        let (_mem, win) = create(32 << 20, 1 << 20).unwrap();
        assert!(win.file().set_len(4096).is_err(), "shrink must be refused");
        assert!(win.file().set_len(2 << 20).is_err(), "grow must be refused");
    }

    #[test]
    fn private_ram_is_not_in_the_window() {
        let (mem, win) = create(32 << 20, 1 << 20).unwrap();
        assert_eq!(mem.num_regions(), 2);
        assert!(mem.address_in_range(GuestAddress((32 << 20) - 1)));
        assert!(!mem.address_in_range(GuestAddress(32 << 20)));
        assert!(!win.contains(GuestAddress(0x1000), 8));
        assert!(win.contains(GuestAddress(SHARED_WINDOW_BASE), 1 << 20));
        assert!(!win.contains(GuestAddress(SHARED_WINDOW_BASE + 1), 1 << 20));
        assert_eq!(
            win.host_address_of(GuestAddress(SHARED_WINDOW_BASE + 8), 8),
            Some(win.host_addr() + 8)
        );
        assert_eq!(win.host_address_of(GuestAddress(0), 8), None);
    }
}
