//! The signed bundle: a 256-byte header, the chunk tree's digest list, then the resource
//! content (SPEC.md section 6; the tree is [`crate::tree`]'s).
//!
//! The signature covers [`BundleHeader::to_be_signed`]: a domain-separation context followed by
//! every field that a security decision in the guest depends on, the chunk tree's root among
//! them. `flags` and `demand_cookie`
//! are deliberately not covered: they only route a bundle to a pending demand, and the guest
//! re-checks every routed bundle against the signed fields.

use crate::bytes::{Reader, Writer};
use crate::tree::digest_list_len;
use crate::{WireError, DIGEST_LEN, MAX_CONTENT_LEN, NONCE_LEN, SIGNATURE_LEN};

/// Domain-separation context in front of every signed bundle statement.
pub const BUNDLE_CONTEXT: &[u8] = b"SEE-PTO virtio-prefetch bundle v2\0";
/// Length of [`BundleHeader::to_be_signed`].
pub const BUNDLE_TBS_LEN: usize = BUNDLE_CONTEXT.len() + 136;

/// What a resource holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ResourceKind {
    /// Executable code of a task.
    Code = 1,
    /// Data a task works on.
    Data = 2,
}

impl ResourceKind {
    /// Decodes the raw value.
    pub fn from_raw(raw: u16) -> Result<Self, WireError> {
        match raw {
            1 => Ok(Self::Code),
            2 => Ok(Self::Data),
            other => Err(WireError::BadValue {
                field: "bundle.kind",
                value: other.into(),
            }),
        }
    }
}

/// Routing flags of a bundle (not signed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BundleFlags(u16);

impl BundleFlags {
    /// Pushed ahead of need by the PTO.
    pub const PREFETCHED: Self = Self(1);
    /// The answer to a demand fetch.
    pub const DEMANDED: Self = Self(2);
    /// Covered by a manifest instead of its own signature.
    pub const IN_MANIFEST: Self = Self(4);
    const ALL: u16 = 7;

    /// The raw bits.
    pub fn bits(self) -> u16 {
        self.0
    }

    /// Decodes raw bits, refusing undefined ones.
    pub fn from_bits(bits: u16) -> Result<Self, WireError> {
        if bits & !Self::ALL != 0 {
            return Err(WireError::BadValue {
                field: "bundle.flags",
                value: bits.into(),
            });
        }
        Ok(Self(bits))
    }

    /// True when every bit of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets of bits.
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// The bundle header. Parsing checks structure only; the guest's acceptance rules (session,
/// sequence, version, task, digest, signature) are the driver's job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleHeader {
    /// Routing flags.
    pub flags: BundleFlags,
    /// Code or data.
    pub kind: ResourceKind,
    /// The app allowed to claim it.
    pub app_id: u32,
    /// The task it is for.
    pub task_id: u64,
    /// The resource.
    pub resource_id: u64,
    /// The resource's version (rollback protection).
    pub resource_version: u64,
    /// Bytes of content (after the header and the digest list).
    pub content_len: u64,
    /// The root of the content's chunk tree: SHA-384 of `tree_root_prefix(content_len)` and
    /// the digest list.
    pub tree_root: [u8; DIGEST_LEN],
    /// The guest session's nonce (from its Hello).
    pub session_nonce: [u8; NONCE_LEN],
    /// The guest session's epoch.
    pub epoch: u64,
    /// Per-session sequence number, strictly increasing.
    pub seq: u64,
    /// The demand this answers (0 for a prefetch).
    pub demand_cookie: u32,
    /// ECDSA P-384 over SHA-384 of `to_be_signed()`, r || s; zero when `IN_MANIFEST`.
    pub signature: [u8; SIGNATURE_LEN],
}

impl BundleHeader {
    /// Encoded size.
    pub const LEN: usize = 256;
    /// "SEEB" in little-endian ASCII.
    pub const MAGIC: u32 = 0x4245_4553;
    /// The format version this build speaks (2: the chunk tree; version 1 is refused).
    pub const FORMAT_VERSION: u16 = 2;

    /// Bytes of this bundle's digest list (32 per tree chunk).
    pub fn digest_list_len(&self) -> usize {
        digest_list_len(self.content_len) as usize
    }

    /// Where the content starts in the bundle: after the header and the digest list.
    pub fn content_offset(&self) -> usize {
        Self::LEN + self.digest_list_len()
    }

    /// Bytes of the whole bundle: header, digest list and content.
    pub fn object_len(&self) -> u64 {
        self.content_offset() as u64 + self.content_len
    }

    /// Parses a whole bundle and returns the header and its content (the digest list between
    /// them is [`Self::parse_tree`]'s).
    pub fn parse_bundle(buf: &[u8]) -> Result<(Self, &[u8]), WireError> {
        Self::parse_tree(buf).map(|(header, _, content)| (header, content))
    }

    /// Parses a whole bundle: the header, exactly `32 x ceil(content_len / TREE_CHUNK_LEN)`
    /// bytes of digest list, then exactly `content_len` bytes of content. Returns the header,
    /// the digest list and the content. Checks structure only: the list against the root and
    /// the content against the list are the receiver's (it has the hashes).
    pub fn parse_tree(buf: &[u8]) -> Result<(Self, &[u8], &[u8]), WireError> {
        let header = Self::parse(buf)?;
        let rest = buf.get(Self::LEN..).unwrap_or(&[]);
        let declared = header.object_len() - Self::LEN as u64;
        if rest.len() as u64 != declared {
            return Err(WireError::LengthMismatch {
                what: "bundle digest list and content",
                declared,
                actual: rest.len() as u64,
            });
        }
        let (list, content) = rest.split_at(header.digest_list_len());
        Ok((header, list, content))
    }

    /// Parses the 256-byte header at the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        Reader::require(buf, Self::LEN, "bundle header")?;
        let mut r = Reader::new(buf, "bundle header");
        let magic = r.u32()?;
        if magic != Self::MAGIC {
            return Err(WireError::BadMagic {
                what: "bundle",
                found: magic,
            });
        }
        let version = r.u16()?;
        if version != Self::FORMAT_VERSION {
            return Err(WireError::BadVersion {
                what: "bundle",
                found: version.into(),
            });
        }
        let flags = BundleFlags::from_bits(r.u16()?)?;
        let kind = ResourceKind::from_raw(r.u16()?)?;
        r.zero_u16("bundle.reserved0")?;
        let app_id = r.u32()?;
        let (task_id, resource_id, resource_version) = (r.u64()?, r.u64()?, r.u64()?);
        let content_len = r.u64()?;
        if content_len > MAX_CONTENT_LEN {
            return Err(WireError::TooLarge {
                field: "bundle.content_len",
                value: content_len,
                limit: MAX_CONTENT_LEN,
            });
        }
        let tree_root = r.array()?;
        let session_nonce = r.array()?;
        let (epoch, seq) = (r.u64()?, r.u64()?);
        let demand_cookie = r.u32()?;
        r.zero_u32("bundle.reserved1")?;
        let signature = r.array()?;
        if r.bytes(Self::LEN - 248)?.iter().any(|&b| b != 0) {
            return Err(WireError::ReservedNotZero("bundle.padding"));
        }
        Ok(Self {
            flags,
            kind,
            app_id,
            task_id,
            resource_id,
            resource_version,
            content_len,
            tree_root,
            session_nonce,
            epoch,
            seq,
            demand_cookie,
            signature,
        })
    }

    /// Encodes the header into the first [`Self::LEN`] bytes of `out`.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        if self.content_len > MAX_CONTENT_LEN {
            return Err(WireError::TooLarge {
                field: "bundle.content_len",
                value: self.content_len,
                limit: MAX_CONTENT_LEN,
            });
        }
        let mut w = Writer::new(out, Self::LEN)?;
        w.u32(Self::MAGIC);
        w.u16(Self::FORMAT_VERSION);
        w.u16(self.flags.bits());
        w.u16(self.kind as u16);
        w.u16(0);
        w.u32(self.app_id);
        w.u64(self.task_id);
        w.u64(self.resource_id);
        w.u64(self.resource_version);
        w.u64(self.content_len);
        w.bytes(&self.tree_root);
        w.bytes(&self.session_nonce);
        w.u64(self.epoch);
        w.u64(self.seq);
        w.u32(self.demand_cookie);
        w.u32(0);
        w.bytes(&self.signature);
        w.zeros(Self::LEN - w.position());
        Ok(Self::LEN)
    }

    /// The exact bytes the signature covers (the signer hashes them with SHA-384):
    /// [`BUNDLE_CONTEXT`], then format version, kind, app, task, resource, version, content
    /// length, tree root, session nonce, epoch and sequence number, little-endian.
    pub fn to_be_signed(&self) -> [u8; BUNDLE_TBS_LEN] {
        let mut out = [0u8; BUNDLE_TBS_LEN];
        // The buffer has exactly the right size, so the writer always exists.
        let Ok(mut w) = Writer::new(&mut out, BUNDLE_TBS_LEN) else {
            return [0u8; BUNDLE_TBS_LEN];
        };
        w.bytes(BUNDLE_CONTEXT);
        w.u16(Self::FORMAT_VERSION);
        w.u16(self.kind as u16);
        w.u32(self.app_id);
        w.u64(self.task_id);
        w.u64(self.resource_id);
        w.u64(self.resource_version);
        w.u64(self.content_len);
        w.bytes(&self.tree_root);
        w.bytes(&self.session_nonce);
        w.u64(self.epoch);
        w.u64(self.seq);
        debug_assert_eq!(w.position(), BUNDLE_TBS_LEN);
        out
    }
}
