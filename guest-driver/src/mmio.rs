//! virtio-mmio version 2 registers and the device initialisation sequence
//! (virtio 1.2 section 4.2.2 and 3.1.1), done through [`Platform`] register access.

use log::debug;

use crate::platform::Platform;

/// `MagicValue` register: "virt".
pub const MAGIC: u32 = 0x7472_6976;
/// Register offsets (virtio 1.2, table 4.1).
pub mod reg {
    #![allow(missing_docs)]
    pub const MAGIC_VALUE: usize = 0x000;
    pub const VERSION: usize = 0x004;
    pub const DEVICE_ID: usize = 0x008;
    pub const VENDOR_ID: usize = 0x00c;
    pub const DEVICE_FEATURES: usize = 0x010;
    pub const DEVICE_FEATURES_SEL: usize = 0x014;
    pub const DRIVER_FEATURES: usize = 0x020;
    pub const DRIVER_FEATURES_SEL: usize = 0x024;
    pub const QUEUE_SEL: usize = 0x030;
    pub const QUEUE_NUM_MAX: usize = 0x034;
    pub const QUEUE_NUM: usize = 0x038;
    pub const QUEUE_READY: usize = 0x044;
    pub const QUEUE_NOTIFY: usize = 0x050;
    pub const INTERRUPT_STATUS: usize = 0x060;
    pub const INTERRUPT_ACK: usize = 0x064;
    pub const STATUS: usize = 0x070;
    pub const QUEUE_DESC_LOW: usize = 0x080;
    pub const QUEUE_DESC_HIGH: usize = 0x084;
    pub const QUEUE_DRIVER_LOW: usize = 0x090;
    pub const QUEUE_DRIVER_HIGH: usize = 0x094;
    pub const QUEUE_DEVICE_LOW: usize = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: usize = 0x0a4;
    pub const CONFIG_GENERATION: usize = 0x0fc;
    pub const CONFIG: usize = 0x100;
}

/// Device status bits (virtio 1.2 section 2.1).
pub mod status {
    #![allow(missing_docs)]
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    pub const FAILED: u32 = 0x80;
}

/// InterruptStatus bits.
pub mod irq {
    /// The device used a buffer.
    pub const USED_BUFFER: u32 = 1;
    /// The configuration (or the device status, e.g. DEVICE_NEEDS_RESET) changed.
    pub const CONFIG_CHANGE: u32 = 2;
}

/// VIRTIO_F_VERSION_1, feature bit 32.
pub const F_VERSION_1: u64 = 1 << 32;

/// Why the transport could not be brought up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The MagicValue register is wrong: no virtio-mmio device at this address.
    #[error("no virtio-mmio device here (magic {0:#x}); check the virtio_mmio.device= address")]
    BadMagic(u32),
    /// Only the modern (version 2) transport is supported.
    #[error("virtio-mmio version {0} is not supported; the VMM must offer version 2")]
    BadVersion(u32),
    /// Another kind of device sits in this slot.
    #[error("device id {found:#x} is not virtio-prefetch ({expected:#x}); check the slot")]
    WrongDevice {
        /// What the register said.
        found: u32,
        /// What we drive.
        expected: u32,
    },
    /// The device lacks a feature the driver requires.
    #[error(
        "the device does not offer required features {missing:#x} (VIRTIO_F_VERSION_1 is bit 32)"
    )]
    MissingFeatures {
        /// The required bits the device did not offer.
        missing: u64,
    },
    /// The device refused the negotiated feature set.
    #[error("the device cleared FEATURES_OK: it refused the negotiated features")]
    FeaturesRejected,
    /// A queue cannot be set up as asked.
    #[error("queue {queue}: {what}")]
    Queue {
        /// Queue index.
        queue: u16,
        /// What is wrong.
        what: &'static str,
    },
}

/// Register access to one virtio-mmio device.
#[derive(Debug, Default, Clone, Copy)]
pub struct Transport;

impl Transport {
    /// Resets the device and checks magic, version and device id; leaves the status at
    /// ACKNOWLEDGE | DRIVER.
    pub fn probe<P: Platform>(p: &P, device_id: u32) -> Result<(), TransportError> {
        let magic = p.mmio_read32(reg::MAGIC_VALUE);
        if magic != MAGIC {
            return Err(TransportError::BadMagic(magic));
        }
        let version = p.mmio_read32(reg::VERSION);
        if version != 2 {
            return Err(TransportError::BadVersion(version));
        }
        let found = p.mmio_read32(reg::DEVICE_ID);
        if found != device_id {
            return Err(TransportError::WrongDevice {
                found,
                expected: device_id,
            });
        }
        p.mmio_write32(reg::STATUS, 0);
        p.mmio_write32(reg::STATUS, status::ACKNOWLEDGE);
        p.mmio_write32(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        Ok(())
    }

    /// Reads the device's 64 feature bits.
    pub fn device_features<P: Platform>(p: &P) -> u64 {
        p.mmio_write32(reg::DEVICE_FEATURES_SEL, 0);
        let lo = u64::from(p.mmio_read32(reg::DEVICE_FEATURES));
        p.mmio_write32(reg::DEVICE_FEATURES_SEL, 1);
        let hi = u64::from(p.mmio_read32(reg::DEVICE_FEATURES));
        lo | (hi << 32)
    }

    /// Negotiates: `required` must all be offered; `wanted` are taken when offered. Sets
    /// FEATURES_OK and checks the device kept it. Returns the accepted set.
    pub fn negotiate<P: Platform>(
        p: &P,
        required: u64,
        wanted: u64,
    ) -> Result<u64, TransportError> {
        let offered = Self::device_features(p);
        let missing = required & !offered;
        if missing != 0 {
            Self::fail(p);
            return Err(TransportError::MissingFeatures { missing });
        }
        let accepted = required | (wanted & offered);
        p.mmio_write32(reg::DRIVER_FEATURES_SEL, 0);
        p.mmio_write32(reg::DRIVER_FEATURES, accepted as u32);
        p.mmio_write32(reg::DRIVER_FEATURES_SEL, 1);
        p.mmio_write32(reg::DRIVER_FEATURES, (accepted >> 32) as u32);
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        p.mmio_write32(reg::STATUS, s);
        if p.mmio_read32(reg::STATUS) & status::FEATURES_OK == 0 {
            Self::fail(p);
            return Err(TransportError::FeaturesRejected);
        }
        debug!("virtio-prefetch: offered {offered:#x}, accepted {accepted:#x}");
        Ok(accepted)
    }

    /// The largest queue the device supports for `queue` (0 if the queue does not exist).
    pub fn queue_max<P: Platform>(p: &P, queue: u16) -> u32 {
        p.mmio_write32(reg::QUEUE_SEL, u32::from(queue));
        p.mmio_read32(reg::QUEUE_NUM_MAX)
    }

    /// Programs queue `queue` with `size` entries at the given guest-physical ring addresses
    /// and marks it ready.
    pub fn setup_queue<P: Platform>(
        p: &P,
        queue: u16,
        size: u16,
        desc: u64,
        avail: u64,
        used: u64,
    ) -> Result<(), TransportError> {
        p.mmio_write32(reg::QUEUE_SEL, u32::from(queue));
        if p.mmio_read32(reg::QUEUE_READY) != 0 {
            return Err(TransportError::Queue {
                queue,
                what: "already ready after a reset",
            });
        }
        let max = p.mmio_read32(reg::QUEUE_NUM_MAX);
        if max == 0 || u32::from(size) > max {
            return Err(TransportError::Queue {
                queue,
                what: "the device does not support a queue of this size",
            });
        }
        p.mmio_write32(reg::QUEUE_NUM, u32::from(size));
        for (lo, addr) in [
            (reg::QUEUE_DESC_LOW, desc),
            (reg::QUEUE_DRIVER_LOW, avail),
            (reg::QUEUE_DEVICE_LOW, used),
        ] {
            p.mmio_write32(lo, addr as u32);
            p.mmio_write32(lo + 4, (addr >> 32) as u32);
        }
        p.mmio_write32(reg::QUEUE_READY, 1);
        Ok(())
    }

    /// Sets DRIVER_OK: the device is live.
    pub fn driver_ok<P: Platform>(p: &P) {
        p.mmio_write32(
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
    }

    /// Sets FAILED: the driver gave up on the device.
    pub fn fail<P: Platform>(p: &P) {
        p.mmio_write32(reg::STATUS, status::FAILED);
    }

    /// Resets the device (status 0); the device stops using every ring and buffer.
    pub fn reset<P: Platform>(p: &P) {
        p.mmio_write32(reg::STATUS, 0);
    }

    /// Reads `N` bytes of device config space under the config generation counter, retrying
    /// a bounded number of times if it changes; `None` if it never settles.
    pub fn read_config<P: Platform, const N: usize>(p: &P) -> Option<[u8; N]> {
        for _ in 0..8 {
            let before = p.mmio_read32(reg::CONFIG_GENERATION);
            let mut out = [0u8; N];
            for (i, word) in out.chunks_mut(4).enumerate() {
                let v = p.mmio_read32(reg::CONFIG + 4 * i).to_le_bytes();
                word.copy_from_slice(&v[..word.len()]);
            }
            if p.mmio_read32(reg::CONFIG_GENERATION) == before {
                return Some(out);
            }
        }
        None
    }

    /// Tells the device that queue `queue` has new available buffers.
    pub fn notify<P: Platform>(p: &P, queue: u16) {
        p.mmio_write32(reg::QUEUE_NOTIFY, u32::from(queue));
    }
}
