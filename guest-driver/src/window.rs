//! Carving the shared window into rings and buffers.
//!
//! Everything the device touches lives in the window the embedder names (from the E820 entry of
//! type 0x5EE0), never in private RAM. A bump allocator hands out aligned, non-overlapping
//! ranges and refuses anything that does not fit.

/// The shared window: guest-physical base and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedWindow {
    /// First guest-physical address.
    pub base_gpa: u64,
    /// Size in bytes.
    pub size: u64,
}

/// The window is too small for what the driver was configured to put in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the shared window ({size} bytes) is too small: {needed} bytes needed; give the VM more --shared-mem or use fewer/smaller staging buffers")]
pub struct WindowError {
    /// Window size.
    pub size: u64,
    /// Bytes needed so far (including the allocation that failed).
    pub needed: u64,
}

/// A bump allocator over the window.
#[derive(Debug, Clone)]
pub struct Carver {
    window: SharedWindow,
    next: u64,
}

impl Carver {
    /// Starts at the window base.
    pub fn new(window: SharedWindow) -> Self {
        Self { window, next: 0 }
    }

    /// Takes `len` bytes aligned to `align` (a power of two); returns the guest-physical address.
    pub fn take(&mut self, len: u64, align: u64) -> Result<u64, WindowError> {
        let err = |needed| WindowError {
            size: self.window.size,
            needed,
        };
        let gpa = self
            .window
            .base_gpa
            .checked_add(self.next)
            .ok_or(err(u64::MAX))?;
        let aligned = gpa.checked_next_multiple_of(align).ok_or(err(u64::MAX))?;
        let offset = aligned - self.window.base_gpa;
        let end = offset.checked_add(len).ok_or(err(u64::MAX))?;
        if end > self.window.size {
            return Err(err(end));
        }
        self.next = end;
        Ok(aligned)
    }

    /// Bytes used so far.
    pub fn used(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carves_aligned_ranges_and_refuses_overflow() {
        let mut c = Carver::new(SharedWindow {
            base_gpa: 0xC000_0001,
            size: 64,
        });
        let a = c.take(10, 16).unwrap();
        assert_eq!(a, 0xC000_0010);
        let b = c.take(4, 4).unwrap();
        assert_eq!(b, 0xC000_001C);
        assert!(c.take(64, 1).is_err());
        assert_eq!(c.take(33, 1).unwrap(), 0xC000_0020);
        assert!(c.take(1, 1).is_err());
    }
}
