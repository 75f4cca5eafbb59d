//! Builds signed bundles: the wire crate's header over a stored resource, bound to the guest's
//! session and a per-session sequence number, signed with ECDSA P-384 over SHA-384 of the
//! statement `BundleHeader::to_be_signed` defines.
//!
//! Signing sits behind [`StatementSigner`], the one operation that needs the PTO's secret key:
//! [`LocalSigner`] holds the key in this process; a signer in another process implements the
//! same trait. Sequence numbers are not the signer's business: the device assigns them in the
//! order it delivers ([`bundle_header`]), and [`Signer`] pairs a key with a counter for callers
//! that build and sign in one place (tests, benchmarks).

use p384::{
    ecdsa::{signature::Signer as _, Signature, SigningKey},
    pkcs8::DecodePrivateKey,
};
use thiserror::Error;
use virtio_prefetch_wire::{BundleFlags, BundleHeader, BUNDLE_TBS_LEN, NONCE_LEN};

use crate::store::StoredResource;

/// Why a signing key could not be loaded.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read the signing key {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a P-384 key in PKCS#8 PEM.
    #[error("{path} is not a P-384 secret key in PKCS#8 PEM (create one with `cargo xtask keys`)")]
    Format {
        /// The file.
        path: std::path::PathBuf,
    },
}

/// Loads a PKCS#8 PEM P-384 secret key.
pub fn load_key(path: &std::path::Path) -> Result<SigningKey, KeyError> {
    let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|_| KeyError::Format {
        path: path.to_path_buf(),
    })
}

/// Why a statement was not signed.
#[derive(Debug, Error)]
pub enum SignError {
    /// The signer could not be reached or did not answer (a signer in another process).
    #[error("the signer did not sign: {0} (is the signer process running?)")]
    Unavailable(#[from] std::io::Error),
    /// The signer answered with a refusal (outside its policy, or over its rate limit); the
    /// source is the signer's typed reason (`see_signer::Refusal`).
    #[error("the signer refused: {0}")]
    Refused(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Signs statements with the PTO key: ECDSA P-384 over SHA-384 of `statement`, r || s.
pub trait StatementSigner: Send + Sync {
    /// Signs `statement` (a bundle's `to_be_signed`).
    fn sign_statement(&self, statement: &[u8]) -> Result<[u8; 96], SignError>;

    /// Signs a manifest's `statement` (`tbs_prefix() || entries`); `bundles` are the
    /// `to_be_signed` bytes of the bundles it covers, in order (each entry is their SHA-384).
    /// A signer that checks what it signs (another process) checks them too; by default the
    /// statement is signed as is.
    fn sign_manifest(
        &self,
        statement: &[u8],
        bundles: &[[u8; BUNDLE_TBS_LEN]],
    ) -> Result<[u8; 96], SignError> {
        let _ = bundles;
        self.sign_statement(statement)
    }
    /// Signs a floors snapshot's statement (`tbs_prefix || entries`). A signer that checks
    /// what it signs refuses floors below versions it has signed; by default the statement
    /// is signed as is.
    fn sign_floors(&self, statement: &[u8]) -> Result<[u8; 96], SignError> {
        self.sign_statement(statement)
    }
}

/// The key in this process.
pub struct LocalSigner {
    key: SigningKey,
}

impl std::fmt::Debug for LocalSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSigner").finish_non_exhaustive()
    }
}

impl LocalSigner {
    /// A signer holding `key`.
    pub fn new(key: SigningKey) -> Self {
        Self { key }
    }
}

impl StatementSigner for LocalSigner {
    fn sign_statement(&self, statement: &[u8]) -> Result<[u8; 96], SignError> {
        Ok(sign_with(&self.key, statement))
    }
}

fn sign_with(key: &SigningKey, statement: &[u8]) -> [u8; 96] {
    let signature: Signature = key.sign(statement);
    let mut out = [0u8; 96];
    out.copy_from_slice(&signature.to_bytes());
    out
}

/// The unsigned header of a bundle for `spec` in `session`, with sequence number `seq`.
pub fn bundle_header(spec: &BundleSpec<'_>, session: &Session, seq: u64) -> BundleHeader {
    let flags = if spec.demand_cookie == 0 {
        BundleFlags::PREFETCHED
    } else {
        BundleFlags::DEMANDED
    };
    BundleHeader {
        flags,
        kind: spec.resource.kind,
        app_id: spec.resource.app_id,
        task_id: spec.task_id,
        resource_id: spec.resource.id,
        resource_version: spec.resource.version,
        content_len: spec.resource.content.len() as u64,
        tree_root: spec.resource.tree.root,
        session_nonce: session.nonce,
        epoch: session.epoch,
        seq,
        demand_cookie: spec.demand_cookie,
        signature: [0; 96],
    }
}

/// The guest session bundles are bound to (from its Hello).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// The guest's nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The guest's epoch.
    pub epoch: u64,
}

/// What the signer is asked to wrap: a stored resource, for a task, possibly for a demand.
#[derive(Debug, Clone, Copy)]
pub struct BundleSpec<'a> {
    /// The resource and its content.
    pub resource: &'a StoredResource,
    /// The task the bundle is for.
    pub task_id: u64,
    /// The demand it answers (0 for a prefetch).
    pub demand_cookie: u32,
}

/// Signs bundles for one session at a time.
#[derive(Debug)]
pub struct Signer {
    key: SigningKey,
    next_seq: u64,
}

impl Signer {
    /// A signer with `key`; the sequence starts at 1 with every session.
    pub fn new(key: SigningKey) -> Self {
        Self { key, next_seq: 1 }
    }

    /// Starts a new session: sequence numbers restart.
    pub fn new_session(&mut self) {
        self.next_seq = 1;
    }

    /// The sequence number the next bundle gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Consumes the next sequence number (a manifest's: it shares the sequence with bundles).
    pub fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Builds the header (unsigned) of the next bundle and consumes a sequence number.
    pub fn header(&mut self, spec: &BundleSpec<'_>, session: &Session) -> BundleHeader {
        let seq = self.take_seq();
        bundle_header(spec, session, seq)
    }

    /// Signs `header` in place with this signer's key.
    pub fn sign(&self, header: &mut BundleHeader) {
        header.signature = sign_with(&self.key, &header.to_be_signed());
    }

    /// The verifying key (SEC1, uncompressed) matching this signer.
    pub fn verifying_key_sec1(&self) -> Vec<u8> {
        p384::PublicKey::from(self.key.verifying_key())
            .to_sec1_bytes()
            .to_vec()
    }
}

impl StatementSigner for Signer {
    fn sign_statement(&self, statement: &[u8]) -> Result<[u8; 96], SignError> {
        Ok(sign_with(&self.key, statement))
    }
}

/// Serialises a whole bundle: header, the digest list of the content's chunk tree (`list`,
/// [`crate::tree::ChunkTree::list`]), then content.
pub fn encode_bundle(header: &BundleHeader, list: &[u8], content: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; BundleHeader::LEN + list.len() + content.len()];
    // The header was built from this content; its length is within the wire limit, checked
    // when the store handed it out.
    if header.encode(&mut out).is_err() {
        out.truncate(0);
        return out;
    }
    let (list_out, content_out) = out[BundleHeader::LEN..].split_at_mut(list.len());
    list_out.copy_from_slice(list);
    content_out.copy_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use p384::ecdsa::{signature::Verifier, VerifyingKey};
    use virtio_prefetch_wire::ResourceKind;

    use super::*;

    fn key(seed: u8) -> SigningKey {
        let mut bytes = [seed; 48];
        bytes[0] = 1;
        SigningKey::from_slice(&bytes).unwrap()
    }

    #[test]
    fn a_signed_bundle_verifies_and_parses_back() {
        let mut signer = Signer::new(key(7));
        let resource = StoredResource::new(3, 2, ResourceKind::Data, 1, b"payload".to_vec());
        let session = Session {
            nonce: [9; 32],
            epoch: 4,
        };
        let spec = BundleSpec {
            resource: &resource,
            task_id: 11,
            demand_cookie: 0,
        };
        let mut header = signer.header(&spec, &session);
        signer.sign(&mut header);
        assert_eq!(header.seq, 1);
        assert_eq!(signer.next_seq(), 2);
        let bytes = encode_bundle(&header, &resource.tree.list, &resource.content);
        let (parsed, content) = BundleHeader::parse_bundle(&bytes).unwrap();
        assert_eq!(content, b"payload");
        let vk = VerifyingKey::from_sec1_bytes(&signer.verifying_key_sec1()).unwrap();
        let sig = Signature::from_slice(&parsed.signature).unwrap();
        vk.verify(&parsed.to_be_signed(), &sig).unwrap();
        // Another key's signature does not verify under this one.
        let mut forged = parsed;
        Signer::new(key(8)).sign(&mut forged);
        let sig = Signature::from_slice(&forged.signature).unwrap();
        assert!(vk.verify(&forged.to_be_signed(), &sig).is_err());
        signer.new_session();
        assert_eq!(signer.next_seq(), 1);
    }

    #[test]
    fn a_bad_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(load_key(&path), Err(KeyError::Format { .. })));
        assert!(matches!(
            load_key(&dir.path().join("missing")),
            Err(KeyError::Read { .. })
        ));
    }
}
