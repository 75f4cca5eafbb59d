//! The chunk tree of a bundle (SPEC.md section 6): the content split into fixed
//! [`TREE_CHUNK_LEN`]-byte chunks, one SHA-256 digest per chunk, and a root that is the SHA-384
//! of [`tree_root_prefix`] followed by the ordered digest list. The bundle header carries the
//! root (signed); the digest list travels between the header and the content, so a receiver has
//! it before the first content byte and can check every chunk as it lands.
//!
//! This crate does no cryptography: the receiver supplies the hashes. [`ChunkVerifier`] is the
//! incremental check over any [`ChunkDigest`] (the guest driver's is SHA-256): it takes the
//! content in pieces of any size (transport chunks do not align with tree chunks), finishes a
//! digest at every tree-chunk boundary and refuses at the first chunk whose digest differs from
//! its entry in the list.

use crate::{WireError, MAX_CONTENT_LEN};

/// Bytes per tree chunk (the last chunk of the content may be shorter; none is empty).
pub const TREE_CHUNK_LEN: usize = 64 << 10;
/// Size of one chunk digest (SHA-256).
pub const TREE_DIGEST_LEN: usize = 32;
/// Most tree chunks of any bundle (`MAX_CONTENT_LEN / TREE_CHUNK_LEN`).
pub const MAX_TREE_CHUNKS: usize = (MAX_CONTENT_LEN as usize).div_ceil(TREE_CHUNK_LEN);
/// Domain-separation context in front of the root's preimage.
pub const TREE_CONTEXT: &[u8] = b"SEE-PTO virtio-prefetch chunk tree v2\0";
/// Length of [`tree_root_prefix`]: the context, the chunk size (u64) and the content length
/// (u64).
pub const TREE_ROOT_PREFIX_LEN: usize = TREE_CONTEXT.len() + 16;

/// Number of tree chunks of `content_len` bytes of content (0 for empty content).
pub fn tree_chunks(content_len: u64) -> u64 {
    content_len.div_ceil(TREE_CHUNK_LEN as u64)
}

/// Bytes of the digest list of `content_len` bytes of content.
pub fn digest_list_len(content_len: u64) -> u64 {
    tree_chunks(content_len) * TREE_DIGEST_LEN as u64
}

/// What the root's SHA-384 covers before the digest list: [`TREE_CONTEXT`], the chunk size and
/// the content length, little-endian. The root is `SHA-384(prefix || digest_0 || ... ||
/// digest_{n-1})`.
pub fn tree_root_prefix(content_len: u64) -> [u8; TREE_ROOT_PREFIX_LEN] {
    let mut out = [0u8; TREE_ROOT_PREFIX_LEN];
    let (context, rest) = out.split_at_mut(TREE_CONTEXT.len());
    context.copy_from_slice(TREE_CONTEXT);
    let (chunk, len) = rest.split_at_mut(8);
    chunk.copy_from_slice(&(TREE_CHUNK_LEN as u64).to_le_bytes());
    len.copy_from_slice(&content_len.to_le_bytes());
    out
}

/// An incremental chunk hash (SHA-256 in every peer of this version).
pub trait ChunkDigest {
    /// A hash of nothing yet.
    fn new() -> Self;
    /// Hashes `bytes` after what came before.
    fn update(&mut self, bytes: &[u8]);
    /// The digest of everything given.
    fn finalize(self) -> [u8; TREE_DIGEST_LEN];
}

/// Checks a bundle's content, in order and in pieces of any size, against its digest list.
///
/// The caller checks the list against the signed root first; this checks that each tree chunk
/// of the content hashes to its entry, at the moment the chunk's last byte is fed. After the
/// first mismatch (or any other error) every further call fails: the object is refused whole.
#[derive(Debug, Clone)]
pub struct ChunkVerifier<H> {
    content_len: u64,
    fed: u64,
    hasher: Option<H>,
    failed: bool,
}

impl<H: ChunkDigest> ChunkVerifier<H> {
    /// A verifier for `content_len` bytes of content.
    pub fn new(content_len: u64) -> Self {
        Self {
            content_len,
            fed: 0,
            hasher: None,
            failed: false,
        }
    }

    /// Content bytes fed so far.
    pub fn fed(&self) -> u64 {
        self.fed
    }

    /// True once every content byte was fed and every chunk matched.
    pub fn is_complete(&self) -> bool {
        !self.failed && self.fed == self.content_len
    }

    /// Feeds the next `bytes` of content; `list` is the bundle's whole digest list. Fails at
    /// the first chunk whose digest is not its entry ([`WireError::ChunkDigest`]), on a list
    /// of the wrong length, or on bytes past the content's end.
    pub fn update(&mut self, list: &[u8], mut bytes: &[u8]) -> Result<(), WireError> {
        if self.failed {
            return Err(WireError::OutOfSequence("the content was already refused"));
        }
        let result = (|| {
            if list.len() as u64 != digest_list_len(self.content_len) {
                return Err(WireError::LengthMismatch {
                    what: "bundle digest list",
                    declared: digest_list_len(self.content_len),
                    actual: list.len() as u64,
                });
            }
            let end = self.fed.saturating_add(bytes.len() as u64);
            if end > self.content_len {
                return Err(WireError::TooLarge {
                    field: "bundle content fed",
                    value: end,
                    limit: self.content_len,
                });
            }
            let chunk = TREE_CHUNK_LEN as u64;
            while !bytes.is_empty() {
                let room = (chunk - self.fed % chunk) as usize;
                let (now, later) = bytes.split_at(room.min(bytes.len()));
                self.hasher.get_or_insert_with(H::new).update(now);
                self.fed += now.len() as u64;
                bytes = later;
                if self.fed.is_multiple_of(chunk) || self.fed == self.content_len {
                    let index = (self.fed - 1) / chunk;
                    let digest = self.hasher.take().map(H::finalize);
                    let at = index as usize * TREE_DIGEST_LEN;
                    if digest.as_ref().map(|d| &d[..]) != list.get(at..at + TREE_DIGEST_LEN) {
                        return Err(WireError::ChunkDigest { index });
                    }
                }
            }
            Ok(())
        })();
        if result.is_err() {
            self.failed = true;
            self.hasher = None;
        }
        result
    }
}
