//! A guest that misbehaves on purpose, for the end-to-end test of private memory: the backend
//! must refuse a staging descriptor that points into private RAM (it was given only the shared
//! window), and the guest must keep working.
//!
//! [`corrupt_next_staging_descriptor`] rewrites, in the shared window, the address of the
//! staging buffer the device will take next so that it names a private heap buffer (the
//! victim). The driver is not told: its private posting record still holds the right address,
//! so when the device gives the buffer back (used length 0) the driver counts it malformed and
//! reposts it from that record. [`victim_intact`] checks afterwards that the device wrote
//! nothing into the victim.

use alloc::{boxed::Box, vec};
use core::sync::atomic::{AtomicU64, Ordering};

use see_guest_driver::Platform;

use super::platform::KernelPlatform;
use crate::memmap::Region;

/// stagingq's index.
const STAGINGQ: u32 = 1;
/// virtio-mmio v2 registers.
const QUEUE_SEL: usize = 0x030;
const QUEUE_DESC_LOW: usize = 0x080;
const QUEUE_DRIVER_LOW: usize = 0x090;
const QUEUE_DEVICE_LOW: usize = 0x0a0;
/// What the victim holds until (unless) something writes into it.
const VICTIM_BYTE: u8 = 0x5A;

static VICTIM: AtomicU64 = AtomicU64::new(0);
static VICTIM_LEN: AtomicU64 = AtomicU64::new(0);

/// What was done, for the console line.
#[derive(Debug, Clone, Copy)]
pub struct Corrupted {
    /// Descriptor index rewritten.
    pub head: u16,
    /// The private address it now names.
    pub addr: u64,
    /// Its length (unchanged).
    pub len: u32,
}

fn queue_address(p: &KernelPlatform, low: usize) -> u64 {
    u64::from(p.mmio_read32(low)) | (u64::from(p.mmio_read32(low + 4)) << 32)
}

fn read_u16(p: &KernelPlatform, gpa: u64) -> u16 {
    let mut b = [0u8; 2];
    p.shared_read(gpa, &mut b);
    u16::from_le_bytes(b)
}

/// Points the next staging descriptor the device will use at a private heap buffer.
/// `queue_size` is stagingq's size (the driver's `staging_buffers`). Call only while the
/// device has nothing to stage (it takes buffers only when it has something to write).
pub fn corrupt_next_staging_descriptor(
    mmio_base: u64,
    window: Region,
    queue_size: u16,
) -> Result<Corrupted, &'static str> {
    if queue_size == 0 {
        return Err("stagingq has no buffers");
    }
    let p = KernelPlatform::new(mmio_base, window);
    p.mmio_write32(QUEUE_SEL, STAGINGQ);
    let (desc, avail, used) = (
        queue_address(&p, QUEUE_DESC_LOW),
        queue_address(&p, QUEUE_DRIVER_LOW),
        queue_address(&p, QUEUE_DEVICE_LOW),
    );
    let size = u64::from(queue_size);
    let in_window = |gpa: u64, len: u64| window.contains(gpa, len);
    if !in_window(desc, 16 * size) || !in_window(avail, 4 + 2 * size) || !in_window(used, 4) {
        return Err("stagingq's rings are not in the shared window");
    }
    let (avail_idx, used_idx) = (read_u16(&p, avail + 2), read_u16(&p, used + 2));
    if avail_idx == used_idx {
        return Err("no staging buffer is posted");
    }
    // The device takes buffers in avail order; with every used buffer returned, the next one
    // it takes is at the used index.
    let head = read_u16(&p, avail + 4 + 2 * (u64::from(used_idx) % size));
    if u64::from(head) >= size {
        return Err("the avail ring names a descriptor out of range");
    }
    let entry = desc + 16 * u64::from(head);
    let mut len = [0u8; 4];
    p.shared_read(entry + 8, &mut len);
    let len = u32::from_le_bytes(len);
    // The victim is as large as the buffer it replaces: a device that wrote anyway would
    // write inside it, and the check below would see it.
    let victim: &'static mut [u8] = Box::leak(vec![VICTIM_BYTE; len as usize].into_boxed_slice());
    let addr = victim.as_ptr() as u64;
    VICTIM.store(addr, Ordering::Release);
    VICTIM_LEN.store(u64::from(len), Ordering::Release);
    p.shared_write(entry, &addr.to_le_bytes());
    Ok(Corrupted { head, addr, len })
}

/// True if no byte of the victim changed (None before any corruption).
pub fn victim_intact() -> Option<bool> {
    let addr = VICTIM.load(Ordering::Acquire);
    if addr == 0 {
        return None;
    }
    let len = VICTIM_LEN.load(Ordering::Acquire) as usize;
    // SAFETY: `addr..addr+len` is the leaked (never freed) victim buffer; reading it through
    // volatile reads, since the point is to see writes the compiler does not know about.
    let intact =
        (0..len).all(|i| unsafe { ((addr as *const u8).add(i)).read_volatile() } == VICTIM_BYTE);
    Some(intact)
}
