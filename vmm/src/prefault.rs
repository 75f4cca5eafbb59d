//! Prefaulting guest RAM: a background thread asks the host kernel to populate the private
//! RAM (`madvise(MADV_POPULATE_WRITE)`, Linux 5.14 and later) once the guest reports ready, so
//! that the guest's first touch of a page (a fresh heap buffer, say) does not pay for the host
//! allocating and zeroing it on the staging path (BENCHMARKS.md, "Where a MiB's time goes").
//!
//! It waits for "ready" because populating while the guest boots made boot-to-ready several
//! times slower on a nested kvm_pvm host (BENCHMARKS.md). Then it works in slices of
//! [`SLICE`] bytes from the bottom of RAM up, at the lowest priority, checking its stop flag
//! between slices; the VMM stops and joins it at the end of the run, which waits for one
//! slice at most. It holds its own handle on guest memory and needs nothing a vCPU needs: the
//! vCPUs' own faults on the same memory go on as usual meanwhile. Where the host kernel has no
//! `MADV_POPULATE_WRITE`, it stops at the first slice with a debug log, and the guest's pages
//! come on first touch as before.

use std::{
    io,
    ops::Range,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, SyncSender},
        Arc,
    },
    thread::JoinHandle,
    time::Instant,
};

use see_sandbox::ThreadFilter;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress};

/// Bytes populated per `madvise` call: one 2 MiB huge page, so that a stop request waits for
/// at most a few hundred microseconds of work.
pub const SLICE: u64 = 2 << 20;

/// The `[start, end)` slices of at most `slice` bytes that cover `len` bytes from `start`.
/// `slice` must not be zero.
pub fn slices(start: u64, len: u64, slice: u64) -> impl Iterator<Item = Range<u64>> {
    assert!(slice > 0, "a slice must have a size");
    let end = start.saturating_add(len);
    (start..end)
        .step_by(usize::try_from(slice).unwrap_or(usize::MAX))
        .map(move |s| s..s.saturating_add(slice).min(end))
}

/// How a prefault pass ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every slice was populated.
    Done {
        /// Bytes populated.
        bytes: u64,
    },
    /// The stop flag was set before the last slice.
    Stopped {
        /// Bytes populated until then.
        bytes: u64,
    },
    /// The host kernel does not have `MADV_POPULATE_WRITE` (before Linux 5.14).
    Unsupported,
    /// `madvise` failed otherwise (e.g. `ENOMEM`: the host is out of memory); the rest is
    /// left to first touch.
    Failed {
        /// Bytes populated until then.
        bytes: u64,
        /// Why.
        error: io::Error,
    },
}

/// Populates `[addr, addr + len)` of this process, writable, slice by slice until `stop` is
/// set.
///
/// # Safety
/// `[addr, addr + len)` must be a private anonymous read-write mapping of this process that
/// stays mapped for the duration of the call (populating writes no data: the pages read as
/// zero or keep their contents).
pub unsafe fn populate(addr: u64, len: u64, stop: &AtomicBool) -> Outcome {
    let mut bytes = 0;
    for range in slices(addr, len, SLICE) {
        if stop.load(Ordering::Relaxed) {
            return Outcome::Stopped { bytes };
        }
        let n = range.end - range.start;
        // SAFETY: the range lies in the mapping the caller vouches for; MADV_POPULATE_WRITE
        // only faults pages in (as a write would, without writing), it changes no contents.
        let rc = unsafe {
            libc::madvise(
                range.start as *mut libc::c_void,
                n as usize,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if rc != 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::EINVAL | libc::ENOSYS) if bytes == 0 => Outcome::Unsupported,
                _ => Outcome::Failed { bytes, error },
            };
        }
        bytes += n;
    }
    Outcome::Done { bytes }
}

/// A running prefault thread.
#[derive(Debug)]
pub struct Prefaulter {
    stop: Arc<AtomicBool>,
    wake: SyncSender<()>,
    /// Detached if dropped unjoined: the thread holds its own handle on guest memory.
    thread: JoinHandle<()>,
}

impl Prefaulter {
    /// Starts the thread on the first region of `memory` (the private RAM at 0). It lowers its
    /// own priority, installs `filter` if given, waits for a word on `start` (which [`stop`]
    /// also sends, through `wake`, a sender of the same channel) and populates the region.
    ///
    /// [`stop`]: Prefaulter::stop
    pub fn spawn(
        memory: &GuestMemoryMmap,
        filter: Option<ThreadFilter>,
        start: Receiver<()>,
        wake: SyncSender<()>,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let memory = memory.clone();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("see-prefault".into())
            .spawn(move || run(&memory, filter.as_ref(), &start, &flag))?;
        Ok(Self { stop, wake, thread })
    }

    /// Asks the thread to stop after its current slice (or before it starts), without
    /// waiting for it.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        // A full channel already holds the word that wakes it.
        let _ = self.wake.try_send(());
    }

    /// Stops the thread and waits for its end.
    pub fn join(self) {
        self.stop();
        if self.thread.join().is_err() {
            log::warn!("the prefault thread panicked");
        }
    }
}

fn run(
    memory: &GuestMemoryMmap,
    filter: Option<&ThreadFilter>,
    start: &Receiver<()>,
    stop: &AtomicBool,
) {
    // SAFETY: setpriority takes integers only; on Linux, PRIO_PROCESS with 0 names the calling
    // thread, not the whole process.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } != 0 {
        log::debug!(
            "prefault: cannot lower priority: {}",
            io::Error::last_os_error()
        );
    }
    if let Some(filter) = filter {
        if let Err(e) = filter.install() {
            log::error!("prefault thread: {e}; not prefaulting");
            return;
        }
    }
    if start.recv().is_err() {
        return;
    }
    let Some((addr, len)) = memory.iter().next().and_then(|r| {
        let host = r.get_host_address(MemoryRegionAddress(0)).ok()?;
        Some((host as u64, r.len()))
    }) else {
        return;
    };
    let started = Instant::now();
    // SAFETY: the first region is the private RAM, an anonymous private read-write mapping;
    // `memory` is this thread's own handle on it, so it stays mapped until the thread ends.
    let outcome = unsafe { populate(addr, len, stop) };
    let ms = started.elapsed().as_secs_f64() * 1e3;
    match outcome {
        Outcome::Done { bytes } => log::debug!("prefault: {} MiB in {ms:.1} ms", bytes >> 20),
        Outcome::Stopped { bytes } => {
            log::debug!("prefault: stopped after {} MiB, {ms:.1} ms", bytes >> 20)
        }
        Outcome::Unsupported => {
            log::debug!("prefault: the host kernel has no MADV_POPULATE_WRITE (Linux 5.14)")
        }
        Outcome::Failed { bytes, error } => {
            log::debug!(
                "prefault: madvise failed after {} MiB: {error}",
                bytes >> 20
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_range_exactly() {
        let v: Vec<_> = slices(0x1000, 5 << 20, SLICE).collect();
        assert_eq!(
            v,
            [
                0x1000..0x1000 + (2 << 20),
                0x1000 + (2 << 20)..0x1000 + (4 << 20),
                0x1000 + (4 << 20)..0x1000 + (5 << 20),
            ]
        );
        assert_eq!(slices(0, 4 << 20, SLICE).count(), 2);
        assert_eq!(slices(7, 0, SLICE).count(), 0);
        let one: Vec<_> = slices(0, 1, SLICE).collect();
        assert_eq!((one.len(), one[0].clone()), (1, 0..1));
    }

    #[test]
    fn slices_stop_at_the_top_of_the_address_space() {
        let v: Vec<_> = slices(u64::MAX - 3, 10, 2).collect();
        assert_eq!(v, [u64::MAX - 3..u64::MAX - 1, u64::MAX - 1..u64::MAX]);
    }

    fn anonymous(len: usize) -> *mut libc::c_void {
        // SAFETY: a fresh private anonymous mapping; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        p
    }

    fn resident_pages(p: *mut libc::c_void, len: usize) -> usize {
        let mut vec = vec![0u8; len.div_ceil(4096)];
        // SAFETY: `p` is a mapping of `len` bytes; `vec` has one byte per page.
        assert_eq!(unsafe { libc::mincore(p, len, vec.as_mut_ptr()) }, 0);
        vec.iter().filter(|b| **b & 1 != 0).count()
    }

    #[test]
    fn populate_makes_the_pages_resident_and_keeps_their_contents() {
        let len = 5 << 20;
        let p = anonymous(len);
        // SAFETY: `p` is a fresh mapping of `len` bytes.
        unsafe { p.cast::<u8>().add(4096).write(0x5e) };
        assert!(resident_pages(p, len) < 16);
        // SAFETY: `p` is a private anonymous read-write mapping of `len` bytes, unmapped below.
        let outcome = unsafe { populate(p as u64, len as u64, &AtomicBool::new(false)) };
        match outcome {
            Outcome::Done { bytes } => {
                assert_eq!(bytes, len as u64);
                assert_eq!(resident_pages(p, len), len / 4096);
            }
            // A host before Linux 5.14: nothing to check but that it says so.
            Outcome::Unsupported => {}
            other => panic!("populate: {other:?}"),
        }
        // SAFETY: as above.
        assert_eq!(unsafe { p.cast::<u8>().add(4096).read() }, 0x5e);
        // SAFETY: unmaps the mapping made above, used no more.
        unsafe { libc::munmap(p, len) };
    }

    #[test]
    fn a_set_stop_flag_populates_nothing() {
        let len = 4 << 20;
        let p = anonymous(len);
        // SAFETY: `p` is a private anonymous read-write mapping of `len` bytes, unmapped below.
        let outcome = unsafe { populate(p as u64, len as u64, &AtomicBool::new(true)) };
        assert!(
            matches!(outcome, Outcome::Stopped { bytes: 0 }),
            "{outcome:?}"
        );
        assert_eq!(resident_pages(p, len), 0);
        // SAFETY: unmaps the mapping made above, used no more.
        unsafe { libc::munmap(p, len) };
    }
}
