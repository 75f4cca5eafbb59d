//! Batch manifests (`F_MANIFEST`): one ECDSA P-384 signature covers many prefetched bundles.
//!
//! A signature costs about 0.5 ms of host CPU (and a verification more in the guest), so
//! signing each of many small bundles caps staging at a few thousand bundles a second. A batch
//! takes one sequence number for the manifest, then one per bundle (manifests and bundles share
//! the session's sequence), marks each bundle `IN_MANIFEST` with a zero signature, and signs
//! the manifest over `tbs_prefix() || entries`, each entry the SHA-384 of one bundle's
//! `to_be_signed` bytes (which hold the bundle's tree root, so an entry binds the content). The manifest must reach the guest before the bundles it lists.

use sha2::{Digest, Sha384};
use thiserror::Error;
use virtio_prefetch_wire::{
    BundleFlags, BundleHeader, ManifestHeader, WireError, DIGEST_LEN, MAX_MANIFEST_ENTRIES,
};

use crate::signer::{encode_bundle, BundleSpec, Session, SignError, Signer, StatementSigner};

/// Why a batch was not built.
#[derive(Debug, Error)]
pub enum BatchError {
    /// Too many bundles for one manifest (or none).
    #[error("a manifest covers 1 to {MAX_MANIFEST_ENTRIES} bundles: {0}")]
    Wire(#[from] WireError),
    /// The signer refused or failed.
    #[error("manifest not signed: {0}")]
    Sign(#[from] SignError),
}

/// A signed manifest and the bundles it covers, in delivery order.
#[derive(Debug)]
pub struct Batch {
    /// The manifest's header (signed).
    pub manifest: ManifestHeader,
    /// The encoded manifest: header then entries.
    pub manifest_bytes: Vec<u8>,
    /// Each covered bundle: its header and its encoded bytes.
    pub bundles: Vec<(BundleHeader, Vec<u8>)>,
    /// SHA-384 of each bundle's signed statement (the manifest's entries).
    pub entries: Vec<[u8; DIGEST_LEN]>,
}

/// The manifest count for `n` bundles, when one manifest may cover them.
fn count(n: usize) -> Result<u32, WireError> {
    u32::try_from(n)
        .ok()
        .filter(|&n| n <= MAX_MANIFEST_ENTRIES)
        .ok_or(WireError::BadValue {
            field: "manifest.count",
            value: n as u64,
        })
}

/// Builds and signs a batch for `items` (at most `MAX_MANIFEST_ENTRIES`, all prefetches),
/// taking the manifest's and the bundles' sequence numbers from `signer`.
pub fn sign_batch(
    signer: &mut Signer,
    session: &Session,
    items: &[BundleSpec<'_>],
) -> Result<Batch, BatchError> {
    count(items.len())?;
    let seq = signer.take_seq();
    let headers: Vec<(BundleHeader, &[u8], &[u8])> = items
        .iter()
        .map(|spec| {
            (
                signer.header(spec, session),
                spec.resource.tree.list.as_slice(),
                spec.resource.content.as_slice(),
            )
        })
        .collect();
    seal_batch(&*signer, session, seq, headers)
}

/// Signs a batch whose sequence numbers are already chosen: the manifest's `seq`, and each
/// bundle's in its header (unsigned; marked IN_MANIFEST here), with its digest list and its
/// content.
pub fn seal_batch(
    signer: &dyn StatementSigner,
    session: &Session,
    seq: u64,
    bundles: Vec<(BundleHeader, &[u8], &[u8])>,
) -> Result<Batch, BatchError> {
    let count = count(bundles.len())?;
    let mut encoded = Vec::with_capacity(bundles.len());
    let mut entries: Vec<[u8; DIGEST_LEN]> = Vec::with_capacity(bundles.len());
    let mut statements = Vec::with_capacity(bundles.len());
    for (mut header, list, content) in bundles {
        header.flags = header.flags.union(BundleFlags::IN_MANIFEST);
        header.signature = [0; 96];
        let tbs = header.to_be_signed();
        entries.push(Sha384::digest(tbs).into());
        statements.push(tbs);
        encoded.push((header, encode_bundle(&header, list, content)));
    }
    let mut manifest = ManifestHeader {
        count,
        session_nonce: session.nonce,
        epoch: session.epoch,
        seq,
        signature: [0; 96],
    };
    let mut statement = manifest.tbs_prefix().to_vec();
    for entry in &entries {
        statement.extend_from_slice(entry);
    }
    manifest.signature = signer.sign_manifest(&statement, &statements)?;
    let mut manifest_bytes = vec![0u8; ManifestHeader::LEN + entries.len() * DIGEST_LEN];
    manifest.encode(&entries, &mut manifest_bytes)?;
    Ok(Batch {
        manifest,
        manifest_bytes,
        bundles: encoded,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use p384::ecdsa::{signature::Verifier, Signature, SigningKey, VerifyingKey};
    use virtio_prefetch_wire::ResourceKind;

    use super::*;
    use crate::store::StoredResource;

    #[test]
    fn a_batch_verifies_and_vouches_for_each_bundle_in_sequence() {
        let key = SigningKey::from_slice(&[3u8; 48]).unwrap();
        let vk = VerifyingKey::from(&key);
        let mut signer = Signer::new(key);
        let session = Session {
            nonce: [4; 32],
            epoch: 2,
        };
        let resources: Vec<StoredResource> = (1..=3u64)
            .map(|id| {
                StoredResource::new(
                    id,
                    1,
                    ResourceKind::Data,
                    5,
                    vec![id as u8; 100 * id as usize],
                )
            })
            .collect();
        let specs: Vec<BundleSpec<'_>> = resources
            .iter()
            .map(|r| BundleSpec {
                resource: r,
                task_id: 9,
                demand_cookie: 0,
            })
            .collect();
        let batch = sign_batch(&mut signer, &session, &specs).unwrap();
        let (parsed, entries) = ManifestHeader::parse_manifest(&batch.manifest_bytes).unwrap();
        assert_eq!((parsed.count, parsed.seq, parsed.epoch), (3, 1, 2));
        let mut statement = parsed.tbs_prefix().to_vec();
        statement.extend_from_slice(entries);
        vk.verify(
            &statement,
            &Signature::from_slice(&parsed.signature).unwrap(),
        )
        .expect("the manifest verifies under the key");
        for (i, (header, bytes)) in batch.bundles.iter().enumerate() {
            let (bundle, content) = BundleHeader::parse_bundle(bytes).unwrap();
            assert_eq!(&bundle, header);
            assert_eq!(content, resources[i].content.as_slice());
            // The entry binds the tree root, and so the content.
            assert_eq!(bundle.tree_root, resources[i].tree.root);
            let mut other_root = bundle;
            other_root.tree_root[0] ^= 1;
            let other: [u8; 48] = Sha384::digest(other_root.to_be_signed()).into();
            assert_ne!(ManifestHeader::entry(entries, i), Some(&other));
            assert_eq!(
                bundle.seq,
                2 + i as u64,
                "bundles follow the manifest's seq"
            );
            assert!(bundle.flags.contains(BundleFlags::IN_MANIFEST));
            assert_eq!(bundle.signature, [0; 96]);
            let digest: [u8; 48] = Sha384::digest(bundle.to_be_signed()).into();
            assert_eq!(ManifestHeader::entry(entries, i), Some(&digest));
        }
        assert_eq!(signer.next_seq(), 5);
        // A flipped entry breaks the manifest's signature.
        let mut forged = statement.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let sig = Signature::from_slice(&parsed.signature).unwrap();
        assert!(vk.verify(&forged, &sig).is_err());
    }

    #[test]
    fn an_oversized_batch_is_refused_before_signing() {
        let mut signer = Signer::new(SigningKey::from_slice(&[3u8; 48]).unwrap());
        let resource = StoredResource::new(1, 1, ResourceKind::Code, 1, Vec::new());
        let spec = BundleSpec {
            resource: &resource,
            task_id: 1,
            demand_cookie: 0,
        };
        let specs = vec![spec; MAX_MANIFEST_ENTRIES as usize + 1];
        let session = Session {
            nonce: [0; 32],
            epoch: 1,
        };
        assert!(sign_batch(&mut signer, &session, &specs).is_err());
        assert_eq!(signer.next_seq(), 1, "no sequence number spent");
    }
}
