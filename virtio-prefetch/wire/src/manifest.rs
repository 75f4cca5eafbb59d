//! The batch manifest (feature `F_MANIFEST`): one signature over a list of bundle statement
//! digests, so a burst of small bundles costs one P-384 verification instead of one each.
//!
//! Layout: a 160-byte header, then `count` entries of 48 bytes, each the SHA-384 of a covered
//! bundle's [`crate::BundleHeader::to_be_signed`] bytes. The signature is ECDSA P-384 over
//! SHA-384 of `tbs_prefix() || entries`.

use crate::bytes::{Reader, Writer};
use crate::{WireError, DIGEST_LEN, MAX_MANIFEST_ENTRIES, NONCE_LEN, SIGNATURE_LEN};

/// Domain-separation context in front of every signed manifest statement.
pub const MANIFEST_CONTEXT: &[u8] = b"SEE-PTO virtio-prefetch manifest v1\0";
/// Length of [`ManifestHeader::tbs_prefix`].
pub const MANIFEST_TBS_PREFIX_LEN: usize = MANIFEST_CONTEXT.len() + 54;

/// The manifest header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestHeader {
    /// Number of 48-byte entries after the header.
    pub count: u32,
    /// The guest session's nonce.
    pub session_nonce: [u8; NONCE_LEN],
    /// The guest session's epoch.
    pub epoch: u64,
    /// Per-session sequence number, shared with bundles, strictly increasing.
    pub seq: u64,
    /// ECDSA P-384 over SHA-384 of `tbs_prefix() || entries`, r || s.
    pub signature: [u8; SIGNATURE_LEN],
}

impl ManifestHeader {
    /// Encoded size.
    pub const LEN: usize = 160;
    /// "SEEM" in little-endian ASCII.
    pub const MAGIC: u32 = 0x4D45_4553;
    /// The format version this build speaks.
    pub const FORMAT_VERSION: u16 = 1;

    /// True when `buf` starts with the manifest magic (to tell a manifest from a bundle).
    pub fn is_manifest(buf: &[u8]) -> bool {
        buf.get(..4) == Some(&Self::MAGIC.to_le_bytes()[..])
    }

    /// Parses a whole manifest: the header and exactly `count` entries after it.
    pub fn parse_manifest(buf: &[u8]) -> Result<(Self, &[u8]), WireError> {
        Reader::require(buf, Self::LEN, "manifest header")?;
        let mut r = Reader::new(buf, "manifest header");
        let magic = r.u32()?;
        if magic != Self::MAGIC {
            return Err(WireError::BadMagic {
                what: "manifest",
                found: magic,
            });
        }
        let version = r.u16()?;
        if version != Self::FORMAT_VERSION {
            return Err(WireError::BadVersion {
                what: "manifest",
                found: version.into(),
            });
        }
        r.zero_u16("manifest.reserved0")?;
        let count = r.u32()?;
        r.zero_u32("manifest.reserved1")?;
        if count > MAX_MANIFEST_ENTRIES {
            return Err(WireError::TooLarge {
                field: "manifest.count",
                value: count.into(),
                limit: MAX_MANIFEST_ENTRIES.into(),
            });
        }
        let session_nonce = r.array()?;
        let (epoch, seq) = (r.u64()?, r.u64()?);
        let signature = r.array()?;
        let entries = r.rest();
        let expected = count as usize * DIGEST_LEN;
        if entries.len() != expected {
            return Err(WireError::LengthMismatch {
                what: "manifest entries",
                declared: expected as u64,
                actual: entries.len() as u64,
            });
        }
        Ok((
            Self {
                count,
                session_nonce,
                epoch,
                seq,
                signature,
            },
            entries,
        ))
    }

    /// Entry `i` of a parsed entry block.
    pub fn entry(entries: &[u8], i: usize) -> Option<&[u8; DIGEST_LEN]> {
        let start = i.checked_mul(DIGEST_LEN)?;
        entries
            .get(start..start.checked_add(DIGEST_LEN)?)?
            .try_into()
            .ok()
    }

    /// Encodes header and entries into `out`; returns the bytes written.
    pub fn encode(&self, entries: &[[u8; DIGEST_LEN]], out: &mut [u8]) -> Result<usize, WireError> {
        if entries.len() != self.count as usize || self.count > MAX_MANIFEST_ENTRIES {
            return Err(WireError::BadValue {
                field: "manifest.count",
                value: self.count.into(),
            });
        }
        let len = Self::LEN + entries.len() * DIGEST_LEN;
        let mut w = Writer::new(out, len)?;
        w.u32(Self::MAGIC);
        w.u16(Self::FORMAT_VERSION);
        w.u16(0);
        w.u32(self.count);
        w.u32(0);
        w.bytes(&self.session_nonce);
        w.u64(self.epoch);
        w.u64(self.seq);
        w.bytes(&self.signature);
        for entry in entries {
            w.bytes(entry);
        }
        Ok(len)
    }

    /// The signed prefix: [`MANIFEST_CONTEXT`], format version, count, session nonce, epoch
    /// and sequence number, little-endian. The signature covers SHA-384 of this prefix
    /// followed by the raw entries.
    pub fn tbs_prefix(&self) -> [u8; MANIFEST_TBS_PREFIX_LEN] {
        let mut out = [0u8; MANIFEST_TBS_PREFIX_LEN];
        // The buffer has exactly the right size, so the writer always exists.
        let Ok(mut w) = Writer::new(&mut out, MANIFEST_TBS_PREFIX_LEN) else {
            return [0u8; MANIFEST_TBS_PREFIX_LEN];
        };
        w.bytes(MANIFEST_CONTEXT);
        w.u16(Self::FORMAT_VERSION);
        w.u32(self.count);
        w.bytes(&self.session_nonce);
        w.u64(self.epoch);
        w.u64(self.seq);
        debug_assert_eq!(w.position(), MANIFEST_TBS_PREFIX_LEN);
        out
    }
}
