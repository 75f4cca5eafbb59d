//! The wire format of the virtio-prefetch device (see `virtio-prefetch/SPEC.md`).
//!
//! One `no_std` crate, used by both the vhost-user backend on the host and the guest driver
//! inside the SEE, so the two sides cannot drift. It holds the device constants, the 16-byte
//! message header, every message payload, the bundle and manifest formats, the exact bytes a
//! signature covers ([`BundleHeader::to_be_signed`], [`ManifestHeader::tbs_prefix`]) and a
//! chunk-sequence checker for reassembly.
//!
//! Every parser takes a byte slice the peer controls and returns a [`WireError`] on anything
//! unexpected: it never panics, never indexes out of bounds and never allocates. Encoders write
//! into a caller-provided buffer and return the number of bytes written.
//!
//! The crate does no cryptography: callers compute SHA-384 digests and ECDSA P-384 signatures
//! over the byte strings this crate defines.

#![no_std]

mod bundle;
mod bytes;
mod chunks;
mod consts;
mod error;
mod manifest;
mod message;

pub use bundle::{BundleFlags, BundleHeader, ResourceKind, BUNDLE_CONTEXT, BUNDLE_TBS_LEN};
pub use chunks::ChunkSequence;
pub use consts::*;
pub use error::WireError;
pub use manifest::{ManifestHeader, MANIFEST_CONTEXT, MANIFEST_TBS_PREFIX_LEN};
pub use message::{
    parse_message, Ack, Chunk, Complete, Demand, Hello, Message, MessageHeader, MessageKind,
    RejectReason, Report, ReportKind, Request, Status, TaskTiming, TaskTimings,
};

#[cfg(test)]
mod tests;
