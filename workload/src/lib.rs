//! Resource contents for the SEE demo and the work the guest apps do on them.
//!
//! Shared by the host (which generates every resource of the service catalogue and computes the
//! result the guest must report) and the guest apps (which run [`process`] on each resource a
//! task claims). `no_std` + `alloc`; builds for `x86_64-unknown-none`.
//!
//! A resource is a 40-byte [`Header`], a raw-deflate stream of records, and deterministic filler
//! that pads the resource to its exact catalogue size. [`process`] is the "real work" a task
//! does: it checks the header and a CRC-32 over the header and body, inflates the records, checks each
//! record's CRC-32, parses its text lines (fields separated by `,` or spaces, numbers summed) and
//! folds everything into a [`Summary`]. Any corruption gives a [`WorkloadError`], never a panic.
//!
//! Layout (little-endian):
//!
//! | offset | field | |
//! | --- | --- | --- |
//! | 0 | `magic: u32` | `"SEEW"` |
//! | 4 | `format: u16` | 1 |
//! | 6 | `kind: u16` | 1 code, 2 data |
//! | 8 | `resource_id: u64` | |
//! | 16 | `version: u64` | |
//! | 24 | `records: u32` | record count |
//! | 28 | `raw_len: u32` | inflated length, at most [`MAX_RAW_LEN`] |
//! | 32 | `deflate_len: u32` | length of the deflate stream after the header |
//! | 36 | `crc: u32` | CRC-32 of the header's first 36 bytes and everything after the header |
//!
//! A record: `tag: u16` (the kind), `reserved: u16` (0), `len: u32`, `len` bytes of text, then
//! `crc: u32` (CRC-32 of the text).

#![no_std]
#![warn(missing_docs)]

extern crate alloc;

mod generate;
mod process;
mod task_result;

pub use generate::{generate, Spec};
pub use process::{process, Summary};
pub use task_result::{is_workload, resource_word, TaskResult};

/// `"SEEW"` as a little-endian `u32`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"SEEW");
/// The content format version.
pub const FORMAT: u16 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 40;
/// The smallest resource [`generate`] makes.
pub const MIN_SIZE: u64 = 256;
/// The largest resource [`generate`] makes (and [`process`] accepts).
pub const MAX_SIZE: u64 = 64 << 20;
/// The largest inflated length [`process`] accepts: bounds the guest's allocation.
pub const MAX_RAW_LEN: u32 = 256 << 20;
/// Record header (tag, reserved, len) plus trailing CRC, in bytes.
pub const RECORD_OVERHEAD: usize = 12;

/// What a resource holds; decides the shape of its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Code: lines of `op rA rB imm`.
    Code = 1,
    /// Data: lines of `sku-N,price,qty,category`.
    Data = 2,
}

impl Kind {
    /// The kind for a header value.
    pub fn from_u16(v: u16) -> Option<Self> {
        match v {
            1 => Some(Self::Code),
            2 => Some(Self::Data),
            _ => None,
        }
    }
}

/// Why a resource could not be generated or processed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// Shorter than a header, or shorter than its header says.
    #[error("resource truncated: {0}; fetch it again")]
    Truncated(&'static str),
    /// Not a workload resource.
    #[error("bad magic {0:#010x}: not a SEE workload resource")]
    BadMagic(u32),
    /// A format version this build does not know.
    #[error("unsupported format version {0}; rebuild the guest and the host together")]
    BadFormat(u16),
    /// A header field out of range.
    #[error("bad header: {0}")]
    BadHeader(&'static str),
    /// The CRC-32 over the header and body does not match the header.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}; the resource is corrupt")]
    Checksum {
        /// From the header.
        stored: u32,
        /// Over the body received.
        computed: u32,
    },
    /// The deflate stream is corrupt or inflates to another length.
    #[error("inflate failed: {0}; the resource is corrupt")]
    Inflate(&'static str),
    /// A record is malformed.
    #[error("record {index}: {reason}; the resource is corrupt")]
    Record {
        /// Record index, from 0.
        index: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// A size generate cannot make.
    #[error("size {0} is outside {MIN_SIZE}..={MAX_SIZE} bytes")]
    Size(u64),
}

/// The fixed-size header of a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Code or data.
    pub kind: Kind,
    /// The resource's numeric id.
    pub resource_id: u64,
    /// Its version.
    pub version: u64,
    /// Number of records.
    pub records: u32,
    /// Inflated length of the records.
    pub raw_len: u32,
    /// Length of the deflate stream.
    pub deflate_len: u32,
    /// CRC-32 of the header's other fields and the body (deflate stream and filler).
    pub crc: u32,
}

impl Header {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&FORMAT.to_le_bytes());
        b[6..8].copy_from_slice(&(self.kind as u16).to_le_bytes());
        b[8..16].copy_from_slice(&self.resource_id.to_le_bytes());
        b[16..24].copy_from_slice(&self.version.to_le_bytes());
        b[24..28].copy_from_slice(&self.records.to_le_bytes());
        b[28..32].copy_from_slice(&self.raw_len.to_le_bytes());
        b[32..36].copy_from_slice(&self.deflate_len.to_le_bytes());
        b[36..40].copy_from_slice(&self.crc.to_le_bytes());
        b
    }

    /// The CRC-32 a resource with this header and `body` must carry.
    pub fn checksum(&self, body: &[u8]) -> u32 {
        let mut h = crc32fast::Hasher::new();
        h.update(&self.encode()[..HEADER_LEN - 4]);
        h.update(body);
        h.finalize()
    }

    /// Parses and range-checks the header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, WorkloadError> {
        let h = bytes
            .get(..HEADER_LEN)
            .ok_or(WorkloadError::Truncated("shorter than the header"))?;
        let u16_at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
        let magic = u32_at(0);
        if magic != MAGIC {
            return Err(WorkloadError::BadMagic(magic));
        }
        let format = u16_at(4);
        if format != FORMAT {
            return Err(WorkloadError::BadFormat(format));
        }
        let kind = Kind::from_u16(u16_at(6)).ok_or(WorkloadError::BadHeader("unknown kind"))?;
        let header = Self {
            kind,
            resource_id: u64_at(8),
            version: u64_at(16),
            records: u32_at(24),
            raw_len: u32_at(28),
            deflate_len: u32_at(32),
            crc: u32_at(36),
        };
        if header.raw_len > MAX_RAW_LEN {
            return Err(WorkloadError::BadHeader("raw_len above MAX_RAW_LEN"));
        }
        // Every record costs at least its overhead: bounds the count before any allocation.
        if (header.records as usize).saturating_mul(RECORD_OVERHEAD) > header.raw_len as usize {
            return Err(WorkloadError::BadHeader(
                "more records than raw_len can hold",
            ));
        }
        Ok(header)
    }
}
