//! The sealing thread: signs bundles and manifests (through a [`StatementSigner`]) and encodes
//! them, off the device thread.
//!
//! The device gives each job its sequence numbers before sending it, in the order it will
//! deliver, and this one thread seals jobs in the order they come, so results come back in
//! sequence order and the device delivers them as they arrive. Each result goes back on a
//! channel, and an eventfd wakes the device thread to take it. The device keeps at most a few
//! jobs outstanding (see `device::SEAL_AHEAD`), so the channel in stays short.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread,
    time::Instant,
};

use log::warn;
use sha2::{Digest, Sha384};
use virtio_prefetch_wire::{BundleHeader, Floor, FloorsHeader, BUNDLE_TBS_LEN};
use vmm_sys_util::event::EventNotifier;

#[cfg(feature = "fault-injection")]
use crate::fault::{Faults, Tamper};
use crate::{
    api::{BackendThread, ThreadHook},
    manifest::seal_batch,
    profile::{elapsed_ns, HostProfile},
    signer::{encode_bundle, Session, SignError, StatementSigner},
};

/// Work for the sealing thread.
pub(crate) enum SealJob {
    /// One bundle with its own signature.
    Bundle {
        /// The device's session generation when it was sequenced.
        generation: u64,
        /// The unsigned header (sequence number set).
        header: Box<BundleHeader>,
        /// The digest list of the content's chunk tree (computed by the fetch worker).
        list: Vec<u8>,
        content: Vec<u8>,
        /// The fault injection in force when it was ordered.
        #[cfg(feature = "fault-injection")]
        tamper: Tamper,
    },
    /// The session's floors snapshot (header unsigned).
    Floors {
        generation: u64,
        header: FloorsHeader,
        floors: Vec<Floor>,
    },
    /// A manifest (sequence number `seq`) and the bundles it covers: header, digest list,
    /// content.
    Batch {
        generation: u64,
        session: Session,
        seq: u64,
        bundles: Vec<(BundleHeader, Vec<u8>, Vec<u8>)>,
    },
}

/// One object ready for stagingq.
#[derive(Debug)]
pub(crate) struct SealedObject {
    pub(crate) bytes: Vec<u8>,
    /// The header as sent (None for a manifest).
    pub(crate) header: Option<BundleHeader>,
    /// The header as signed and the SHA-384 of its statement (None for a manifest).
    pub(crate) signed: Option<(BundleHeader, [u8; 48])>,
    /// Rewrite the last staging buffer after delivery (Tamper::RewriteAfterDelivery).
    #[cfg(feature = "fault-injection")]
    pub(crate) rewrite: bool,
}

/// A finished job: its objects in delivery order (none when signing failed).
#[derive(Debug)]
pub(crate) struct Sealed {
    pub(crate) generation: u64,
    pub(crate) objects: Vec<SealedObject>,
    /// Its signing and encoding time (for the profile).
    pub(crate) cost: HostProfile,
}

/// Starts the sealing thread; it ends when `jobs`' sender is dropped.
pub(crate) fn spawn(
    signer: Arc<dyn StatementSigner>,
    jobs: mpsc::Receiver<SealJob>,
    done: mpsc::Sender<Sealed>,
    wake: EventNotifier,
    hook: Option<ThreadHook>,
) -> std::io::Result<()> {
    thread::Builder::new()
        .name("prefetch-seal".into())
        .spawn(move || {
            if let Some(hook) = hook {
                hook(BackendThread::Seal);
            }
            for job in jobs {
                let sealed = seal(signer.as_ref(), job);
                if done.send(sealed).is_err() {
                    return;
                }
                if let Err(e) = wake.notify() {
                    warn!("the sealing thread cannot wake the device: {e}");
                }
            }
        })?;
    Ok(())
}

fn object(bytes: Vec<u8>, header: Option<BundleHeader>) -> SealedObject {
    SealedObject {
        bytes,
        header,
        signed: header.map(|h| (h, Sha384::digest(h.to_be_signed()).into())),
        #[cfg(feature = "fault-injection")]
        rewrite: false,
    }
}

/// A signer that counts the time its signatures take.
struct Timed<'a> {
    inner: &'a dyn StatementSigner,
    ns: AtomicU64,
}

impl Timed<'_> {
    fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.ns.fetch_add(elapsed_ns(start), Ordering::Relaxed);
        out
    }
}

impl StatementSigner for Timed<'_> {
    fn sign_statement(&self, statement: &[u8]) -> Result<[u8; 96], SignError> {
        self.time(|| self.inner.sign_statement(statement))
    }

    fn sign_manifest(
        &self,
        statement: &[u8],
        bundles: &[[u8; BUNDLE_TBS_LEN]],
    ) -> Result<[u8; 96], SignError> {
        self.time(|| self.inner.sign_manifest(statement, bundles))
    }

    fn sign_floors(&self, statement: &[u8]) -> Result<[u8; 96], SignError> {
        self.time(|| self.inner.sign_floors(statement))
    }
}

/// Signs and encodes one job; its cost says how long signing took and how long the rest
/// (encoding) did.
pub(crate) fn seal(signer: &dyn StatementSigner, job: SealJob) -> Sealed {
    let start = Instant::now();
    let timed = Timed {
        inner: signer,
        ns: AtomicU64::new(0),
    };
    let mut sealed = seal_untimed(&timed, job);
    let total = elapsed_ns(start);
    let sign_ns = timed.ns.load(Ordering::Relaxed);
    sealed.cost = HostProfile {
        sign_ns,
        chunk_ns: total.saturating_sub(sign_ns),
        ..HostProfile::default()
    };
    sealed
}

fn seal_untimed(signer: &dyn StatementSigner, job: SealJob) -> Sealed {
    match job {
        SealJob::Bundle {
            generation,
            mut header,
            list,
            content,
            #[cfg(feature = "fault-injection")]
            tamper,
        } => {
            let objects = match signer.sign_statement(&header.to_be_signed()) {
                Ok(signature) => {
                    header.signature = signature;
                    vec![seal_bundle(
                        *header,
                        &list,
                        content,
                        #[cfg(feature = "fault-injection")]
                        tamper,
                    )]
                }
                Err(e) => {
                    warn!(
                        "bundle seq {} for resource {} dropped: {e}",
                        header.seq, header.resource_id
                    );
                    Vec::new()
                }
            };
            Sealed {
                generation,
                objects,
                cost: HostProfile::default(),
            }
        }
        SealJob::Floors {
            generation,
            header,
            floors,
        } => Sealed {
            generation,
            objects: seal_floors(signer, header, &floors)
                .map(|bytes| vec![object(bytes, None)])
                .unwrap_or_default(),
            cost: HostProfile::default(),
        },
        SealJob::Batch {
            generation,
            session,
            seq,
            bundles,
        } => {
            let parts = bundles
                .iter()
                .map(|(h, l, c)| (*h, l.as_slice(), c.as_slice()))
                .collect();
            let objects = match seal_batch(signer, &session, seq, parts) {
                Ok(batch) => {
                    let mut objects = Vec::with_capacity(batch.bundles.len() + 1);
                    objects.push(object(batch.manifest_bytes, None));
                    for ((header, bytes), entry) in batch.bundles.into_iter().zip(batch.entries) {
                        objects.push(SealedObject {
                            signed: Some((header, entry)),
                            ..object(bytes, Some(header))
                        });
                    }
                    objects
                }
                Err(e) => {
                    warn!(
                        "manifest seq {seq} for {} prefetches dropped: {e}",
                        bundles.len()
                    );
                    Vec::new()
                }
            };
            Sealed {
                generation,
                objects,
                cost: HostProfile::default(),
            }
        }
    }
}

/// Signs and encodes a floors snapshot; None (logged) when it cannot be.
fn seal_floors(
    signer: &dyn StatementSigner,
    mut header: FloorsHeader,
    floors: &[Floor],
) -> Option<Vec<u8>> {
    let mut out =
        vec![0u8; FloorsHeader::LEN + floors.len() * virtio_prefetch_wire::FLOOR_ENTRY_LEN];
    let entries = match FloorsHeader::encode_entries(floors, &mut out[FloorsHeader::LEN..]) {
        Ok(len) => len,
        Err(e) => {
            warn!("floors snapshot not sent: {e}");
            return None;
        }
    };
    let mut statement = header.tbs_prefix().to_vec();
    statement.extend_from_slice(&out[FloorsHeader::LEN..FloorsHeader::LEN + entries]);
    match signer.sign_floors(&statement) {
        Ok(signature) => header.signature = signature,
        Err(e) => {
            warn!("floors snapshot not sent: {e}");
            return None;
        }
    }
    match header.encode(floors, &mut out) {
        Ok(_) => Some(out),
        Err(e) => {
            warn!("floors snapshot not sent: {e}");
            None
        }
    }
}

/// Encodes a signed bundle, applying the fault injection asked for.
fn seal_bundle(
    header: BundleHeader,
    list: &[u8],
    content: Vec<u8>,
    #[cfg(feature = "fault-injection")] tamper: Tamper,
) -> SealedObject {
    #[cfg(feature = "fault-injection")]
    {
        let mut header = header;
        Faults::resign(tamper, &mut header);
        let signed = Some((header, Sha384::digest(header.to_be_signed()).into()));
        let content = Faults::corrupt(tamper, &mut header, content);
        SealedObject {
            bytes: encode_bundle(&header, list, &content),
            header: Some(header),
            signed,
            rewrite: tamper == Tamper::RewriteAfterDelivery,
        }
    }
    #[cfg(not(feature = "fault-injection"))]
    object(encode_bundle(&header, list, &content), Some(header))
}

#[cfg(test)]
mod tests {
    use p384::ecdsa::{signature::Verifier, Signature, SigningKey, VerifyingKey};
    use virtio_prefetch_wire::{BundleFlags, ManifestHeader, ResourceKind};

    use super::*;
    use crate::signer::{bundle_header, BundleSpec, LocalSigner, SignError};
    use crate::store::StoredResource;

    fn key() -> SigningKey {
        SigningKey::from_slice(&[7u8; 48]).unwrap()
    }

    const SESSION: Session = Session {
        nonce: [3; 32],
        epoch: 5,
    };

    fn header(resource: &StoredResource, seq: u64) -> BundleHeader {
        let spec = BundleSpec {
            resource,
            task_id: 2,
            demand_cookie: 0,
        };
        bundle_header(&spec, &SESSION, seq)
    }

    fn bundle_job(resource: &StoredResource, seq: u64) -> SealJob {
        SealJob::Bundle {
            generation: 4,
            header: Box::new(header(resource, seq)),
            list: resource.tree.list.clone(),
            content: resource.content.clone(),
            #[cfg(feature = "fault-injection")]
            tamper: Tamper::None,
        }
    }

    #[test]
    fn jobs_come_back_sealed_in_the_order_sent() {
        let (jobs_tx, jobs) = mpsc::channel();
        let (done, results) = mpsc::channel();
        let (_consumer, wake) = vmm_sys_util::event::new_event_consumer_and_notifier(
            vmm_sys_util::event::EventFlag::NONBLOCK,
        )
        .unwrap();
        spawn(Arc::new(LocalSigner::new(key())), jobs, done, wake, None).unwrap();
        let a = StoredResource::new(
            1,
            1,
            ResourceKind::Data,
            9,
            (0..200_000).map(|i| i as u8).collect(),
        );
        let b = StoredResource::new(2, 1, ResourceKind::Code, 9, vec![2; 40]);
        jobs_tx.send(bundle_job(&a, 1)).unwrap();
        jobs_tx
            .send(SealJob::Batch {
                generation: 4,
                session: SESSION,
                seq: 2,
                bundles: vec![
                    (header(&a, 3), a.tree.list.clone(), a.content.clone()),
                    (header(&b, 4), b.tree.list.clone(), b.content.clone()),
                ],
            })
            .unwrap();
        let vk = VerifyingKey::from(&key());
        let one = results.recv().unwrap();
        assert_eq!((one.generation, one.objects.len()), (4, 1));
        let (h, list, body) = BundleHeader::parse_tree(&one.objects[0].bytes).unwrap();
        assert_eq!((h.seq, body), (1, a.content.as_slice()));
        // The digest list between header and content, and its root under the signature.
        assert_eq!(list, a.tree.list.as_slice());
        assert_eq!(
            h.tree_root,
            crate::tree::ChunkTree::root_of(body.len() as u64, list)
        );
        vk.verify(
            &h.to_be_signed(),
            &Signature::from_slice(&h.signature).unwrap(),
        )
        .expect("a sealed bundle verifies");
        let batch = results.recv().unwrap();
        assert_eq!(batch.objects.len(), 3, "the manifest, then its two bundles");
        let (m, _) = ManifestHeader::parse_manifest(&batch.objects[0].bytes).unwrap();
        assert_eq!((m.seq, m.count), (2, 2));
        let seqs: Vec<u64> = batch.objects[1..]
            .iter()
            .map(|o| BundleHeader::parse_bundle(&o.bytes).unwrap().0)
            .inspect(|h| assert!(h.flags.contains(BundleFlags::IN_MANIFEST)))
            .map(|h| h.seq)
            .collect();
        assert_eq!(seqs, [3, 4]);
    }

    struct Refusing;

    impl StatementSigner for Refusing {
        fn sign_statement(&self, _: &[u8]) -> Result<[u8; 96], SignError> {
            Err(SignError::Unavailable(
                std::io::ErrorKind::ConnectionRefused.into(),
            ))
        }
    }

    #[test]
    fn a_failed_signature_sends_nothing() {
        let a = StoredResource::new(1, 1, ResourceKind::Data, 9, vec![1; 30]);
        assert!(seal(&Refusing, bundle_job(&a, 1)).objects.is_empty());
        let batch = SealJob::Batch {
            generation: 1,
            session: SESSION,
            seq: 2,
            bundles: vec![(header(&a, 3), a.tree.list.clone(), a.content.clone())],
        };
        assert!(seal(&Refusing, batch).objects.is_empty());
    }
}
