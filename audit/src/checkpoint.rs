//! Signed checkpoints: what anchors the audit log's hash chain to a key.
//!
//! Every `n` records and when the log is closed, the writer appends a
//! [`AuditEvent::Checkpoint`](super::AuditEvent::Checkpoint) record whose signature covers
//! the chain head it follows. A chain alone cannot tell a log cut at its end, or rewritten
//! from scratch, from an honest one; with checkpoints, a verifier holding the audit public key
//! sees both: a rewrite needs the key, and a cut log no longer ends with the closing
//! checkpoint.
//!
//! The signed statement (ECDSA P-384 over SHA-384, signature stored as `r || s` in hex):
//!
//! ```text
//! "SEE-PTO audit checkpoint v1\0" || seq u64 LE || at_us u64 LE || prev (32 bytes)
//!     || key id (32 bytes) || closing (1 byte: 0 or 1)
//! ```
//!
//! `seq` and `at_us` are the checkpoint record's own, `prev` the hash of the record before it
//! (the head it anchors), and the key id the SHA-256 of the signer's SEC1 uncompressed public
//! key. Signing goes through [`CheckpointSigner`], so the key can live in this process
//! ([`KeySigner`]) or in a separate signing service.

use std::path::{Path, PathBuf};

use p384::{
    ecdsa::{
        signature::{Signer as _, Verifier as _},
        Signature, SigningKey, VerifyingKey,
    },
    pkcs8::DecodePrivateKey,
};
use sha2::{Digest, Sha256};

use super::Hash;

/// Domain separation for the checkpoint statement.
pub const CHECKPOINT_CONTEXT: &[u8] = b"SEE-PTO audit checkpoint v1\0";

/// Length of a checkpoint signature (`r || s`).
pub const SIGNATURE_LEN: usize = 96;

/// An error a signer reports (a key that cannot sign, a signing service that is gone).
pub type SignError = Box<dyn std::error::Error + Send + Sync>;

/// Signs checkpoint statements with the audit key.
pub trait CheckpointSigner: Send + std::fmt::Debug {
    /// The public key the signatures verify under.
    fn verifying_key(&self) -> VerifyingKey;
    /// Signs `statement` (ECDSA P-384 over SHA-384); returns `r || s`.
    fn sign(&self, statement: &[u8]) -> Result<[u8; SIGNATURE_LEN], SignError>;
}

/// A checkpoint signer holding the key in this process.
pub struct KeySigner {
    key: SigningKey,
}

impl std::fmt::Debug for KeySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySigner")
            .field("key_id", &super::hex(&key_id(self.key.verifying_key())))
            .finish_non_exhaustive()
    }
}

/// Why an audit key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read the audit key {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a P-384 secret key in PKCS#8 PEM.
    #[error("{path} is not a P-384 secret key in PKCS#8 PEM (create one with `cargo xtask keys`)")]
    Secret {
        /// The file.
        path: PathBuf,
    },
    /// Not a P-384 public key in SEC1 encoding.
    #[error("{path} is not a P-384 public key in SEC1 encoding (like target/see-keys/audit.pub)")]
    Public {
        /// The file.
        path: PathBuf,
    },
}

impl KeySigner {
    /// A signer with `key`.
    pub fn new(key: SigningKey) -> Self {
        Self { key }
    }

    /// Loads a PKCS#8 PEM P-384 secret key.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|_| KeyError::Secret {
            path: path.to_path_buf(),
        })?;
        Ok(Self { key })
    }
}

impl CheckpointSigner for KeySigner {
    fn verifying_key(&self) -> VerifyingKey {
        *self.key.verifying_key()
    }

    fn sign(&self, statement: &[u8]) -> Result<[u8; SIGNATURE_LEN], SignError> {
        let signature: Signature = self.key.sign(statement);
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(&signature.to_bytes());
        Ok(out)
    }
}

/// The SEC1 uncompressed encoding of `key` (97 bytes).
pub fn sec1(key: &VerifyingKey) -> Vec<u8> {
    p384::PublicKey::from(key).to_sec1_bytes().to_vec()
}

/// The id of a key: SHA-256 of its SEC1 uncompressed encoding.
pub fn key_id(key: &VerifyingKey) -> Hash {
    Sha256::digest(sec1(key)).into()
}

/// The statement a checkpoint at `seq`, `at_us` after the head `prev` signs.
pub fn statement(seq: u64, at_us: u64, prev: &Hash, key: &Hash, closing: bool) -> Vec<u8> {
    let mut s = Vec::with_capacity(CHECKPOINT_CONTEXT.len() + 8 + 8 + 32 + 32 + 1);
    s.extend_from_slice(CHECKPOINT_CONTEXT);
    s.extend_from_slice(&seq.to_le_bytes());
    s.extend_from_slice(&at_us.to_le_bytes());
    s.extend_from_slice(prev);
    s.extend_from_slice(key);
    s.push(u8::from(closing));
    s
}

/// The public keys a verifier accepts checkpoints from.
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys {
    keys: Vec<(Hash, VerifyingKey)>,
}

impl TrustedKeys {
    /// No key: checkpoints are checked for shape only.
    pub fn none() -> Self {
        Self::default()
    }

    /// Trusts `key` too.
    pub fn with(mut self, key: VerifyingKey) -> Self {
        self.keys.push((key_id(&key), key));
        self
    }

    /// Trusts the SEC1-encoded P-384 public key in the file at `path`.
    pub fn with_file(self, path: &Path) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let key = VerifyingKey::from_sec1_bytes(&bytes).map_err(|_| KeyError::Public {
            path: path.to_path_buf(),
        })?;
        Ok(self.with(key))
    }

    /// True when no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted key with id `id`.
    fn get(&self, id: &Hash) -> Option<&VerifyingKey> {
        self.keys.iter().find(|(k, _)| k == id).map(|(_, v)| v)
    }

    /// Checks a checkpoint's signature: `Err(true)` when the key is not trusted,
    /// `Err(false)` when the signature does not verify under it.
    pub(super) fn check(
        &self,
        id: &Hash,
        statement: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<(), bool> {
        let key = self.get(id).ok_or(true)?;
        let signature = Signature::from_slice(signature).map_err(|_| false)?;
        key.verify(statement, &signature).map_err(|_| false)
    }
}
