//! Serde spellings of the wire crate's enums (which are `no_std` and serde-free): the service
//! metadata names them in snake_case. Use with
//! `#[serde(with = "crate::wire_serde::resource_kind")]`. (The audit log's spelling of
//! `ReportKind` lives in `see-audit`.)

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
