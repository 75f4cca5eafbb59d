//! The wire format of the virtio-prefetch device (see `virtio-prefetch/SPEC.md`).
//!
//! One `no_std` crate, used by both the vhost-user backend on the host and the guest driver
//! inside the SEE, so the two sides cannot drift. It holds the device constants, the 16-byte
//! message header, every message payload, the bundle (with its chunk tree), manifest and floors-snapshot formats, the exact bytes a
//! signature covers ([`BundleHeader::to_be_signed`], [`ManifestHeader::tbs_prefix`]), a
//! chunk-sequence checker ([`ChunkSequence`]) and a one-object-at-a-time reassembler
//! ([`Reassembler`]) over a caller-provided buffer or, with the `alloc` feature, a
//! `HeapBuffer` that reserves each object fallibly and hands it over without a copy.
//!
//! Every parser takes a byte slice the peer controls and returns a [`WireError`] on anything
//! unexpected: it never panics, never indexes out of bounds and never allocates (only a
//! `HeapBuffer`, with the `alloc` feature, does, fallibly). Encoders write
//! into a caller-provided buffer and return the number of bytes written.
//!
//! The crate does no cryptography and has no dependency but `thiserror` (without `std`):
//! callers compute SHA-256 chunk digests, SHA-384 digests and ECDSA P-384 signatures over the
//! byte strings this crate defines (the incremental chunk check, [`ChunkVerifier`], takes the
//! SHA-256 as a [`ChunkDigest`]) (the backend with `p384::ecdsa::SigningKey`, the guest driver with `VerifyingKey`),
//! so the wire format stays small, auditable and free of a crypto version choice.
//!
//! # Example
//!
//! ```
//! use virtio_prefetch_wire::{parse_message, Demand, Message};
//!
//! let demand = Message::Demand(Demand { app_id: 1, task_id: 2, resource_id: 3, min_version: 0 });
//! let mut buf = [0u8; 64];
//! let len = demand.encode(7, &mut buf)?; // cookie 7 = the driver's demand id
//! let (header, parsed) = parse_message(&buf[..len])?;
//! assert_eq!((header.cookie, parsed), (7, demand));
//! # Ok::<(), virtio_prefetch_wire::WireError>(())
//! ```

#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(any(test, feature = "alloc"))]
extern crate alloc;

mod bundle;
mod bytes;
mod chunks;
mod consts;
mod error;
mod floors;
mod manifest;
mod message;
mod reassembler;
mod tree;

pub use bundle::{BundleFlags, BundleHeader, ResourceKind, BUNDLE_CONTEXT, BUNDLE_TBS_LEN};
pub use chunks::ChunkSequence;
pub use consts::*;
pub use error::WireError;
pub use floors::{Floor, FloorsHeader, FLOORS_CONTEXT, FLOORS_TBS_PREFIX_LEN, FLOOR_ENTRY_LEN};
pub use manifest::{ManifestHeader, MANIFEST_CONTEXT, MANIFEST_TBS_PREFIX_LEN};
pub use message::{
    parse_message, Ack, Chunk, Complete, Demand, Evict, Hello, Message, MessageHeader, MessageKind,
    RejectReason, Report, ReportKind, Request, Status, TaskTiming, TaskTimings,
};
#[cfg(any(test, feature = "alloc"))]
pub use reassembler::HeapBuffer;
pub use reassembler::{ObjectBuffer, Reassembler};
pub use tree::{
    digest_list_len, tree_chunks, tree_root_prefix, ChunkDigest, ChunkVerifier, MAX_TREE_CHUNKS,
    TREE_CHUNK_LEN, TREE_CONTEXT, TREE_DIGEST_LEN, TREE_ROOT_PREFIX_LEN,
};

#[cfg(test)]
mod malformed_tests;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod seed_tests;
#[cfg(test)]
mod spec_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tree_tests;
