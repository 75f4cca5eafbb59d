//! Device identity, feature bits, queues and limits.

/// virtio device ID of virtio-prefetch (no assigned virtio device uses it).
pub const DEVICE_ID: u32 = 0x5EE0;
/// virtio-mmio VendorID register value: "SEEP" in little-endian ASCII.
pub const VENDOR_ID: u32 = 0x5045_4553;

/// VIRTIO_F_VERSION_1 (bit 32): the modern interface; required.
pub const F_VERSION_1: u64 = 1 << 32;
/// Device feature bit 0: bundles may be covered by a signed batch manifest.
pub const F_MANIFEST: u64 = 1 << 0;
/// Device feature bit 1: the device reports its backend's death with DEVICE_NEEDS_RESET and a
/// configuration-change interrupt.
pub const F_NEEDS_RESET: u64 = 1 << 1;
/// Every device feature bit this version defines.
pub const DEVICE_FEATURES: u64 = F_VERSION_1 | F_MANIFEST | F_NEEDS_RESET;

/// Queue 0: requests dispatched by the PTO, device to driver.
pub const REQUEST_QUEUE: u16 = 0;
/// Queue 1: signed bundle chunks, device to driver.
pub const STAGING_QUEUE: u16 = 1;
/// Queue 2: driver messages (hello, demand, reports, completions), driver to device.
pub const CONTROL_QUEUE: u16 = 2;
/// Number of queues.
pub const NUM_QUEUES: usize = 3;

/// Size of the device configuration space.
pub const CONFIG_LEN: usize = 16;
/// Largest resource content any peer accepts (16 MiB).
pub const MAX_CONTENT_LEN: u64 = 16 << 20;
/// Largest request argument block.
pub const MAX_REQUEST_ARGS: u32 = 3072;
/// Largest number of task timings in one completion.
pub const MAX_COMPLETE_TASKS: u32 = 64;
/// Largest number of entries in one manifest.
pub const MAX_MANIFEST_ENTRIES: u32 = 1024;
/// Largest number of entries in one floors snapshot.
pub const MAX_FLOOR_ENTRIES: u32 = 4096;
/// Size of a SHA-384 digest.
pub const DIGEST_LEN: usize = 48;
/// Size of a session nonce.
pub const NONCE_LEN: usize = 32;
/// Size of a P-384 ECDSA signature, r || s, big-endian scalars as in SEC1.
pub const SIGNATURE_LEN: usize = 96;

/// The device configuration space (little-endian, read-only for the driver).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Largest resource content the device will send.
    pub max_content_len: u32,
    /// Largest chunk payload the device writes into one staging buffer; the driver posts
    /// staging buffers of at least `MessageHeader::LEN + Chunk::FIXED_LEN + max_chunk_len`.
    pub max_chunk_len: u32,
    /// Suggested queue sizes, in queue order.
    pub queue_sizes: [u16; 3],
}

impl DeviceConfig {
    /// Parses the configuration space.
    pub fn parse(buf: &[u8]) -> Result<Self, crate::WireError> {
        let mut r = crate::bytes::Reader::new(buf, "device config");
        let config = Self {
            max_content_len: r.u32()?,
            max_chunk_len: r.u32()?,
            queue_sizes: [r.u16()?, r.u16()?, r.u16()?],
        };
        r.zero_u16("config.reserved")?;
        Ok(config)
    }

    /// Encodes the configuration space.
    pub fn encode(&self) -> [u8; CONFIG_LEN] {
        let mut out = [0u8; CONFIG_LEN];
        out[0..4].copy_from_slice(&self.max_content_len.to_le_bytes());
        out[4..8].copy_from_slice(&self.max_chunk_len.to_le_bytes());
        for (i, size) in self.queue_sizes.iter().enumerate() {
            out[8 + 2 * i..10 + 2 * i].copy_from_slice(&size.to_le_bytes());
        }
        out
    }
}
