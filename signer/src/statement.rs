//! The statements the signer signs, read back from their bytes: a bundle's `to_be_signed`
//! ([`BundleStatement`]) and a manifest's `tbs_prefix || entries` ([`ManifestStatement`]).
//! The layouts are the wire crate's (`BundleHeader::to_be_signed`,
//! `ManifestHeader::tbs_prefix`); anything else (another context, format version or kind, a
//! count that disagrees with the length) is refused as malformed.

use sha2::{Digest, Sha384};
use virtio_prefetch_wire::{
    BundleHeader, ManifestHeader, ResourceKind, BUNDLE_CONTEXT, BUNDLE_TBS_LEN, DIGEST_LEN,
    MANIFEST_CONTEXT, MANIFEST_TBS_PREFIX_LEN, MAX_MANIFEST_ENTRIES, NONCE_LEN,
};

use crate::protocol::Refusal;

/// The fields of a bundle statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BundleStatement {
    /// Code or data.
    pub kind: ResourceKind,
    /// The app allowed to claim it.
    pub app_id: u32,
    /// The task it is for.
    pub task_id: u64,
    /// The resource.
    pub resource_id: u64,
    /// Its version.
    pub resource_version: u64,
    /// Content length.
    pub content_len: u64,
    /// The content's chunk-tree root.
    pub tree_root: [u8; DIGEST_LEN],
    /// Guest session nonce.
    pub session_nonce: [u8; NONCE_LEN],
    /// Guest session epoch.
    pub epoch: u64,
    /// Sequence number in the session.
    pub seq: u64,
}

/// The fields of a manifest statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestStatement {
    /// Guest session nonce.
    pub session_nonce: [u8; NONCE_LEN],
    /// Guest session epoch.
    pub epoch: u64,
    /// Sequence number in the session.
    pub seq: u64,
    /// SHA-384 of each covered bundle's statement.
    pub entries: Vec<[u8; DIGEST_LEN]>,
}

/// Reads fixed-size little-endian fields; the caller checked the total length.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.0[..N]);
        self.0 = &self.0[N..];
        a
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
}

impl BundleStatement {
    /// Parses a bundle's `to_be_signed` bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, Refusal> {
        if bytes.len() != BUNDLE_TBS_LEN || !bytes.starts_with(BUNDLE_CONTEXT) {
            return Err(Refusal::Malformed);
        }
        let mut f = Fields(&bytes[BUNDLE_CONTEXT.len()..]);
        if f.u16() != BundleHeader::FORMAT_VERSION {
            return Err(Refusal::Malformed);
        }
        let kind = ResourceKind::from_raw(f.u16()).map_err(|_| Refusal::Malformed)?;
        Ok(Self {
            kind,
            app_id: f.u32(),
            task_id: f.u64(),
            resource_id: f.u64(),
            resource_version: f.u64(),
            content_len: f.u64(),
            tree_root: f.array(),
            session_nonce: f.array(),
            epoch: f.u64(),
            seq: f.u64(),
        })
    }
}

impl ManifestStatement {
    /// Parses a manifest statement: the prefix, then exactly as many entries as it counts.
    pub fn parse(bytes: &[u8]) -> Result<Self, Refusal> {
        if bytes.len() < MANIFEST_TBS_PREFIX_LEN || !bytes.starts_with(MANIFEST_CONTEXT) {
            return Err(Refusal::Malformed);
        }
        let (prefix, entries) = bytes.split_at(MANIFEST_TBS_PREFIX_LEN);
        let mut f = Fields(&prefix[MANIFEST_CONTEXT.len()..]);
        if f.u16() != ManifestHeader::FORMAT_VERSION {
            return Err(Refusal::Malformed);
        }
        let count = f.u32();
        if count == 0
            || count > MAX_MANIFEST_ENTRIES
            || entries.len() != count as usize * DIGEST_LEN
        {
            return Err(Refusal::Malformed);
        }
        Ok(Self {
            session_nonce: f.array(),
            epoch: f.u64(),
            seq: f.u64(),
            entries: entries
                .chunks_exact(DIGEST_LEN)
                .map(|e| {
                    let mut a = [0u8; DIGEST_LEN];
                    a.copy_from_slice(e);
                    a
                })
                .collect(),
        })
    }

    /// Checks that `bundles` are exactly the statements the entries name, in order, all of
    /// this manifest's session; returns them parsed.
    pub fn check_bundles(
        &self,
        bundles: &[[u8; BUNDLE_TBS_LEN]],
    ) -> Result<Vec<BundleStatement>, Refusal> {
        if bundles.len() != self.entries.len() {
            return Err(Refusal::ManifestMismatch);
        }
        let mut parsed = Vec::with_capacity(bundles.len());
        for (bytes, entry) in bundles.iter().zip(&self.entries) {
            let bundle = BundleStatement::parse(bytes)?;
            let digest: [u8; DIGEST_LEN] = Sha384::digest(bytes).into();
            if &digest != entry
                || bundle.session_nonce != self.session_nonce
                || bundle.epoch != self.epoch
            {
                return Err(Refusal::ManifestMismatch);
            }
            parsed.push(bundle);
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use virtio_prefetch_wire::BundleFlags;

    use super::*;

    fn header(resource_id: u64) -> BundleHeader {
        BundleHeader {
            flags: BundleFlags::PREFETCHED,
            kind: ResourceKind::Code,
            app_id: 4,
            task_id: 5,
            resource_id,
            resource_version: 7,
            content_len: 8,
            tree_root: [9; 48],
            session_nonce: [10; 32],
            epoch: 11,
            seq: 12,
            demand_cookie: 0,
            signature: [0; 96],
        }
    }

    #[test]
    fn a_bundle_statement_reads_back_its_fields() {
        let h = header(6);
        let s = BundleStatement::parse(&h.to_be_signed()).unwrap();
        assert_eq!(
            (
                s.kind,
                s.app_id,
                s.task_id,
                s.resource_id,
                s.resource_version
            ),
            (ResourceKind::Code, 4, 5, 6, 7)
        );
        assert_eq!(
            (s.content_len, s.tree_root, s.epoch, s.seq),
            (8, [9; 48], 11, 12)
        );
        let mut bad = h.to_be_signed();
        bad[0] ^= 1;
        assert_eq!(BundleStatement::parse(&bad), Err(Refusal::Malformed));
        let mut bad = h.to_be_signed();
        bad[BUNDLE_CONTEXT.len() + 2] = 3;
        assert_eq!(BundleStatement::parse(&bad), Err(Refusal::Malformed));
    }

    #[test]
    fn a_manifest_must_name_exactly_its_bundles() {
        let bundles = [header(1).to_be_signed(), header(2).to_be_signed()];
        let entries: Vec<[u8; 48]> = bundles.iter().map(|b| Sha384::digest(b).into()).collect();
        let m = ManifestHeader {
            count: 2,
            session_nonce: [10; 32],
            epoch: 11,
            seq: 1,
            signature: [0; 96],
        };
        let mut statement = m.tbs_prefix().to_vec();
        entries.iter().for_each(|e| statement.extend_from_slice(e));
        let parsed = ManifestStatement::parse(&statement).unwrap();
        assert_eq!(parsed.seq, 1);
        assert_eq!(parsed.check_bundles(&bundles).unwrap().len(), 2);
        let swapped = [bundles[1], bundles[0]];
        assert_eq!(
            parsed.check_bundles(&swapped),
            Err(Refusal::ManifestMismatch)
        );
        assert_eq!(
            parsed.check_bundles(&bundles[..1]),
            Err(Refusal::ManifestMismatch)
        );
        statement.pop();
        assert_eq!(
            ManifestStatement::parse(&statement),
            Err(Refusal::Malformed)
        );
    }
}
