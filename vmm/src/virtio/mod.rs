//! virtio devices: a virtio-mmio v2 transport ([`mmio::MmioTransport`]) in front of a device
//! model behind the small [`VirtioDevice`] trait, and the one device model the VMM has, a
//! vhost-user frontend ([`vhost_user::VhostUserDevice`]) whose data path runs entirely in the
//! backend process: queue notifications reach it through KVM ioeventfds and its interrupts
//! reach the guest through a KVM irqfd, so no VMM thread touches a ring.
//!
//! [`prefetch::attach`] puts a virtio-prefetch device on a [`crate::Vm`].

pub mod mmio;
pub mod prefetch;
pub mod vhost_user;

use vm_memory::GuestAddress;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready: the device is live.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error and must be reset by the driver.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// InterruptStatus bits (virtio 1.2, 4.2.2).
pub mod interrupt {
    /// A queue has used buffers.
    pub const USED_BUFFER: u32 = 1;
    /// The configuration (or the device status) changed.
    pub const CONFIG_CHANGE: u32 = 2;
}

/// VIRTIO_F_VERSION_1: the modern interface.
pub const F_VERSION_1: u64 = 1 << 32;

/// One queue as the driver set it up (guest-physical ring addresses, already validated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// Queue index.
    pub index: u16,
    /// Number of entries (a power of two).
    pub size: u16,
    /// Descriptor table.
    pub desc: GuestAddress,
    /// Available ("driver") ring.
    pub avail: GuestAddress,
    /// Used ("device") ring.
    pub used: GuestAddress,
}

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// A ring lies outside the memory the device may use.
    #[error("queue {queue}: the {ring} ring at {addr:#x} is outside the shared window")]
    RingOutsideWindow {
        /// Queue index.
        queue: u16,
        /// Which ring.
        ring: &'static str,
        /// Its guest-physical address.
        addr: u64,
    },
    /// A queue size is zero, not a power of two or above the maximum.
    #[error("queue {queue}: size {size} is not a power of two between 1 and {max}")]
    QueueSize {
        /// Queue index.
        queue: u16,
        /// The size the driver wrote.
        size: u32,
        /// QueueNumMax.
        max: u16,
    },
    /// A ring is not aligned as the split virtqueue layout requires.
    #[error("queue {queue}: the {ring} ring at {addr:#x} is not {align}-byte aligned")]
    Misaligned {
        /// Queue index.
        queue: u16,
        /// Which ring.
        ring: &'static str,
        /// Its guest-physical address.
        addr: u64,
        /// The required alignment.
        align: u64,
    },
    /// The device has no usable backend any more.
    #[error("the device's backend is gone")]
    BackendGone,
    /// The backend refused or failed a request.
    #[error("vhost-user backend: {what} failed: {source}; is the backend still running?")]
    Backend {
        /// Which request.
        what: &'static str,
        /// The error.
        source: vhost::Error,
    },
}

/// A virtio device model as the transport sees it.
pub trait VirtioDevice: Send {
    /// virtio device ID.
    fn device_id(&self) -> u32;
    /// virtio-mmio VendorID.
    fn vendor_id(&self) -> u32;
    /// Feature bits offered to the driver.
    fn features(&self) -> u64;
    /// Largest size of each queue; the number of queues is the slice's length.
    fn queue_max_sizes(&self) -> &[u16];
    /// The configuration space (read-only for the driver).
    fn config(&self) -> &[u8];
    /// Whether the device raises its used-buffer interrupts without the VMM seeing them (an
    /// irqfd written by another process): InterruptStatus then always reads "used buffer".
    fn interrupts_bypass_vmm(&self) -> bool;
    /// Starts the device with the features the driver acked and its ready queues.
    fn activate(&mut self, features: u64, queues: &[QueueConfig]) -> Result<(), ActivateError>;
    /// Stops the device (status written 0): it must stop using every ring.
    fn reset(&mut self);
    /// The driver wrote QueueNotify for `queue` and no ioeventfd caught it.
    fn notify(&mut self, queue: u16);
}
