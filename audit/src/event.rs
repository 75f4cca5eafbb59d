//! The events the audit log records. Ids are the wire ids (`virtio-prefetch-wire`): numeric
//! app, task and resource ids, the session and request ids the PTO dispatched.

use serde::{Deserialize, Serialize};
use virtio_prefetch_wire::ReportKind;

/// One audited event: `kind` and `fields` of a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    content = "fields",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum AuditEvent {
    /// A request dispatched into the guest.
    Dispatch {
        /// Session id.
        session: u64,
        /// Request id.
        request: u64,
        /// Request type name.
        request_type: String,
    },
    /// A resource pushed ahead of demand.
    Prefetch {
        /// Session whose prediction ordered it.
        session: u64,
        /// Request after which it was ordered.
        request: u64,
        /// App allowed to claim it.
        app: u32,
        /// Task it is for.
        task: u64,
        /// Resource id.
        resource: u64,
        /// Resource version.
        version: u64,
        /// Content length.
        bytes: u64,
        /// The prediction's probability, in millionths.
        probability_ppm: u32,
    },
    /// A resource the guest demanded after a miss.
    DemandFetch {
        /// App.
        app: u32,
        /// Task.
        task: u64,
        /// Resource id.
        resource: u64,
        /// Resource version.
        version: u64,
        /// Content length.
        bytes: u64,
        /// The driver's demand id.
        cookie: u32,
    },
    /// A bundle (or manifest) signed for the guest.
    Signature {
        /// Resource id (0 for a manifest).
        resource: u64,
        /// Resource version.
        version: u64,
        /// The bundle's sequence number in the guest session.
        seq: u64,
        /// Guest session epoch.
        epoch: u64,
        /// SHA-384 of the signed statement, hex.
        statement_sha384: String,
    },
    /// A claim report from the guest.
    Claim {
        /// What happened (`claim_hit`, `miss`, `evict`, `reject`, `demand_served`,
        /// `cache_hit`).
        #[serde(with = "crate::report_kind")]
        report: ReportKind,
        /// Reject reason (0 unless `report` is `reject`).
        reason: u32,
        /// App.
        app: u32,
        /// Task.
        task: u64,
        /// Resource id.
        resource: u64,
        /// Resource version.
        version: u64,
        /// Latency the guest measured, in ns.
        latency_ns: u64,
    },
    /// A request completed in the guest.
    Completion {
        /// Request id.
        request: u64,
        /// Status (0 ok).
        status: u32,
        /// Request latency the guest measured, in ns.
        total_ns: u64,
    },
    /// A signed checkpoint of the chain head before it (see `audit::checkpoint`).
    Checkpoint {
        /// True for the checkpoint that closes the log (at shutdown).
        closing: bool,
        /// The signer's key id: SHA-256 of its SEC1 uncompressed public key, hex.
        key: String,
        /// ECDSA P-384 signature (`r || s`, hex) over the checkpoint statement.
        signature: String,
    },
}
