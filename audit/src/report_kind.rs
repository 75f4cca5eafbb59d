//! The serde spelling of [`virtio_prefetch_wire::ReportKind`] in audit records (the wire crate
//! is `no_std` and serde-free). Use with `#[serde(with = "crate::report_kind")]`.

use serde::{de::Error as _, Deserialize, Deserializer, Serializer};
use virtio_prefetch_wire::ReportKind;

const NAMES: &[&str] = &[
    "claim_hit",
    "miss",
    "evict",
    "reject",
    "demand_served",
    "cache_hit",
];

fn name(kind: ReportKind) -> &'static str {
    match kind {
        ReportKind::ClaimHit => "claim_hit",
        ReportKind::Miss => "miss",
        ReportKind::Evict => "evict",
        ReportKind::Reject => "reject",
        ReportKind::DemandServed => "demand_served",
        ReportKind::CacheHit => "cache_hit",
    }
}

pub(crate) fn serialize<S: Serializer>(kind: &ReportKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(name(*kind))
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ReportKind, D::Error> {
    let text = String::deserialize(d)?;
    ReportKind::ALL
        .iter()
        .copied()
        .find(|k| name(*k) == text)
        .ok_or_else(|| D::Error::unknown_variant(&text, NAMES))
}
