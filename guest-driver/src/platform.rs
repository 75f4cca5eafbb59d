//! What the driver needs from its embedder: register access, the shared window, a clock, a way
//! to sleep until an interrupt, and randomness.
//!
//! The kernel implements this over the real virtio-mmio registers and the E820 shared window;
//! the host tests implement it over a `Vec<u8>` played by a hostile device model.

/// The embedder's side of the driver.
///
/// Every method is infallible on purpose: the driver treats whatever comes back as hostile
/// input and bounds-checks it, so the embedder never has to decide what "invalid" means.
pub trait Platform {
    /// Reads the 32-bit virtio-mmio register at `offset` from the device's base (volatile).
    fn mmio_read32(&self, offset: usize) -> u32;
    /// Writes the 32-bit virtio-mmio register at `offset` from the device's base (volatile).
    fn mmio_write32(&self, offset: usize, value: u32);
    /// Copies `dst.len()` bytes at guest-physical `gpa` out of the shared window (volatile).
    /// The driver only asks for ranges inside the window it was given.
    fn shared_read(&self, gpa: u64, dst: &mut [u8]);
    /// Copies `src` into the shared window at guest-physical `gpa` (volatile).
    fn shared_write(&self, gpa: u64, src: &[u8]);
    /// A monotonic clock in nanoseconds (TSC-based in the guest; never wall-clock time).
    fn now_ns(&self) -> u64;
    /// Sleeps until an interrupt arrives or `deadline_ns` (as [`Platform::now_ns`]) passes,
    /// whichever is first. It may return early; the driver always re-checks its condition.
    /// The kernel: `sti; hlt` with a timer armed for the deadline (or a spin).
    fn wait_for_event(&mut self, deadline_ns: u64);
    /// Fills `buf` with unpredictable bytes (the session nonce).
    fn fill_random(&mut self, buf: &mut [u8]);
    /// How long ago (as [`Platform::now_ns`]) the embedder took the device interrupt the driver
    /// is handling, if it records that; called once per interrupt handled, after the interrupt
    /// status is read and acknowledged. Only the profile uses it ([`crate::Profile`]).
    fn interrupt_age_ns(&mut self) -> Option<u64> {
        None
    }
}
