//! Serde spellings of the wire crate's enums (which are `no_std` and serde-free): the audit log
//! and the service metadata name them in snake_case, as they did before the PTO used the wire
//! types. Use with `#[serde(with = "crate::wire_serde::report_kind")]`.

/// [`virtio_prefetch_wire::ReportKind`] as `"claim_hit"`, `"miss"`, `"evict"`, `"reject"`,
/// `"demand_served"`, `"cache_hit"`.
pub(crate) mod report_kind {
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
}

/// [`virtio_prefetch_wire::ResourceKind`] as `"code"` or `"data"`.
pub(crate) mod resource_kind {
    use serde::{de::Error as _, Deserialize, Deserializer};
    use virtio_prefetch_wire::ResourceKind;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ResourceKind, D::Error> {
        match String::deserialize(d)?.as_str() {
            "code" => Ok(ResourceKind::Code),
            "data" => Ok(ResourceKind::Data),
            other => Err(D::Error::unknown_variant(other, &["code", "data"])),
        }
    }
}
