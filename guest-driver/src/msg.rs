//! The driver's side of the wire format: thin helpers over `virtio-prefetch-wire`, which owns
//! every layout. Encoders build a message into a fresh buffer; parsers work on private copies.

use alloc::vec::Vec;

use virtio_prefetch_wire as wire;
use wire::{Ack, Chunk, Complete, Demand, Hello, Message, Report, TaskTimings};
pub use wire::{
    BundleHeader, DeviceConfig, FloorsHeader, ManifestHeader, MessageHeader, RejectReason,
    ReportKind, Status, CONFIG_LEN, DEVICE_ID, F_MANIFEST, F_NEEDS_RESET,
};

use crate::{driver::IncomingRequest, verify::Ids, RequestCompletion};

/// Header plus fixed chunk fields in front of a chunk's data.
pub const CHUNK_PREFIX: usize = MessageHeader::LEN + Chunk::FIXED_LEN;

/// The largest object (bundle, manifest or floors snapshot) for a content limit.
pub fn max_object_len(max_content_len: u32) -> u32 {
    let manifest = ManifestHeader::LEN + wire::MAX_MANIFEST_ENTRIES as usize * wire::DIGEST_LEN;
    let floors = FloorsHeader::LEN + wire::MAX_FLOOR_ENTRIES as usize * wire::FLOOR_ENTRY_LEN;
    let manifest = manifest.max(floors);
    // Header, digest list, content.
    let bundle = BundleHeader::LEN as u64
        + wire::digest_list_len(max_content_len.into())
        + u64::from(max_content_len);
    bundle.max(manifest as u64).min(u64::from(u32::MAX)) as u32
}

fn encode(m: &Message<'_>, cookie: u32) -> Vec<u8> {
    let mut out = alloc::vec![0u8; m.encoded_len()];
    // The buffer has exactly the encoded length and every driver message is within limits
    // (Complete is truncated to MAX_COMPLETE_TASKS below), so this cannot fail; if it ever
    // did, an empty message would be refused by the device and counted there.
    let n = m.encode(cookie, &mut out).unwrap_or(0);
    out.truncate(n);
    out
}

/// Hello with the session nonce and epoch.
pub fn encode_hello(nonce: &[u8; 32], epoch: u64, driver_version: u32, staging: u32) -> Vec<u8> {
    let hello = Hello {
        nonce: *nonce,
        epoch,
        driver_version,
        staging_buffers: staging,
    };
    encode(&Message::Hello(hello), 0)
}

/// Demand with the driver's demand id as cookie.
pub fn encode_demand(
    cookie: u32,
    app_id: u32,
    task_id: u64,
    res: u64,
    min_version: u64,
) -> Vec<u8> {
    let d = Demand {
        app_id,
        task_id,
        resource_id: res,
        min_version,
    };
    encode(&Message::Demand(d), cookie)
}

/// A Report; `reason` only for `Reject`.
pub fn encode_report(
    kind: ReportKind,
    reason: Option<RejectReason>,
    ids: Ids,
    latency_ns: u64,
) -> Vec<u8> {
    let r = Report {
        kind,
        reason: if kind == ReportKind::Reject {
            reason.or(Some(RejectReason::Malformed))
        } else {
            None
        },
        app_id: ids.app_id,
        task_id: ids.task_id,
        resource_id: ids.resource_id,
        version: ids.version,
        latency_ns,
    };
    encode(&Message::Report(r), 0)
}

/// A request completion (at most `MAX_COMPLETE_TASKS` task entries are sent).
pub fn encode_complete(c: &RequestCompletion) -> Vec<u8> {
    let n = c.tasks.len().min(wire::MAX_COMPLETE_TASKS as usize);
    let m = Complete {
        request_id: c.request_id,
        status: c.status,
        total_ns: c.total_ns,
        tasks: TaskTimings::Slice(&c.tasks[..n]),
    };
    encode(&Message::Complete(m), 0)
}

/// What a requestq buffer carries.
pub enum RequestqMessage {
    /// A request to run.
    Request(IncomingRequest),
    /// The host's choice of a cache victim: (app id, resource id).
    Evict(u32, u64),
}

/// A Request or Evict message (private copy of a request buffer).
pub fn parse_requestq(buf: &[u8]) -> Option<RequestqMessage> {
    match wire::parse_message(buf).ok()? {
        (_, Message::Request(r)) => Some(RequestqMessage::Request(IncomingRequest {
            request_id: r.request_id,
            session_id: r.session_id,
            app_id: r.app_id,
            request_type: r.request_type,
            args: r.args.to_vec(),
        })),
        (_, Message::Evict(e)) => Some(RequestqMessage::Evict(e.app_id, e.resource_id)),
        _ => None,
    }
}

/// A Chunk message (private copy of a staging buffer).
pub fn parse_chunk(buf: &[u8]) -> Option<Chunk<'_>> {
    match wire::parse_message(buf).ok()? {
        (_, Message::Chunk(c)) => Some(c),
        _ => None,
    }
}

/// An Ack: (status, cookie).
pub fn parse_ack(buf: &[u8]) -> Option<(Ack, u32)> {
    match wire::parse_message(buf).ok()? {
        (h, Message::Ack(a)) => Some((a, h.cookie)),
        _ => None,
    }
}
