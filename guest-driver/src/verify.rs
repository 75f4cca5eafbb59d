//! Verification of reassembled objects (bundles, manifests and floors snapshots) against the
//! session, the version floors, the app registry and the embedded key.
//!
//! [`check`] only reads: it takes the private copy of an object and the trusted state, and
//! says what to change. The caller changes trusted state only on `Ok`. Cheap checks run first;
//! the content check and the ECDSA verification run last, so a flood of stale or foreign
//! bundles costs little. A bundle's content is hashed as it arrives ([`crate::reassembly`]):
//! here it passes only with the tree root that reassembly checked its digest list and every
//! chunk against, and that root must be the signed header's. Replay state is keyed on the signed sequence number, never on signature bytes.

use alloc::{
    collections::{BTreeMap, BTreeSet},
    vec::Vec,
};

use p384::ecdsa::{signature::Verifier, Signature, VerifyingKey};
use sha2::{Digest, Sha384};

use virtio_prefetch_wire::{
    BundleFlags, BundleHeader, Floor, FloorsHeader, ManifestHeader, RejectReason, WireError,
    FLOORS_TBS_PREFIX_LEN, MANIFEST_TBS_PREFIX_LEN,
};

use crate::{
    driver::{AckState, PendingDemand},
    platform::Platform,
    registry::AppRegistry,
    store::{Resource, Source},
};

/// Most manifest digests held at once (a manifest lists at most 1024).
const MAX_MANIFEST_DIGESTS: usize = 4096;

/// The session: what the driver sent in Hello and what it has accepted since.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub nonce: [u8; 32],
    pub epoch: u64,
    /// Highest sequence number accepted (bundles and manifests share it).
    pub last_seq: Option<u64>,
    pub manifest_digests: BTreeSet<[u8; 48]>,
    pub hello_ack: AckState,
    /// A floors snapshot of this session was accepted: bundles may be (fail closed before).
    pub has_floors: bool,
}

impl Default for Session {
    fn default() -> Self {
        Self {
            nonce: [0; 32],
            epoch: 0,
            last_seq: None,
            manifest_digests: BTreeSet::new(),
            hello_ack: AckState::Pending,
            has_floors: false,
        }
    }
}

impl Session {
    /// A new session with a random nonce.
    pub fn fresh<P: Platform>(p: &mut P, epoch: u64) -> Self {
        let mut s = Self {
            epoch,
            ..Self::default()
        };
        p.fill_random(&mut s.nonce);
        s
    }

    /// Adds the digests of a verified manifest (bounded: the oldest set is forgotten).
    pub fn add_manifest(&mut self, digests: Vec<[u8; 48]>) {
        if self.manifest_digests.len() + digests.len() > MAX_MANIFEST_DIGESTS {
            self.manifest_digests.clear();
        }
        self.manifest_digests.extend(digests);
    }
}

/// The signed identity of a bundle (for reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ids {
    pub app_id: u32,
    pub task_id: u64,
    pub resource_id: u64,
    pub version: u64,
}

/// A refused object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reject {
    /// Why.
    pub reason: RejectReason,
    /// What the object claimed to be (unverified; for the report only).
    pub ids: Ids,
    /// The pending demand it named, if any (so the demand fails at once).
    pub demand: Option<u32>,
}

/// A bundle that passed every check.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub resource: Resource,
    /// Where the content starts in the object (after the header and the digest list).
    pub content_offset: usize,
    pub seq: u64,
    pub demand: Option<u32>,
    pub manifest_digest: Option<[u8; 48]>,
}

/// What the guest trusts about floors snapshots across its sessions (since boot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FloorsTrust {
    /// Highest serial accepted since boot.
    pub serial: Option<u64>,
    /// Lower bound on the time (seconds since the Unix epoch): the measured minimum, raised to
    /// the issue time of every snapshot accepted.
    pub time_floor: u64,
}

/// What to change after a successful check.
#[derive(Debug)]
pub(crate) enum Verdict {
    Bundle(Accepted),
    Manifest {
        seq: u64,
        digests: Vec<[u8; 48]>,
    },
    Floors {
        serial: u64,
        issued_at: u64,
        floors: Vec<Floor>,
    },
}

/// Times the costly checks for the profile ([`crate::Profile`]).
pub(crate) struct Stopwatch<'a> {
    now: &'a dyn Fn() -> u64,
    /// Nanoseconds checking signatures (or manifest entries).
    pub signature_ns: u64,
}

impl<'a> Stopwatch<'a> {
    /// A stopwatch reading `now` (nanoseconds).
    pub fn new(now: &'a dyn Fn() -> u64) -> Self {
        Self {
            now,
            signature_ns: 0,
        }
    }

    /// Runs `f`, returning its result and the nanoseconds it took.
    fn time<T>(&self, f: impl FnOnce() -> T) -> (T, u64) {
        let start = (self.now)();
        let out = f();
        (out, (self.now)().saturating_sub(start))
    }
}

/// The refusal of a bundle with header `header` (None: it did not parse), for `reason`: the
/// ids it claimed (unverified, for the report) and the pending demand it named, if any.
pub(crate) fn reject_for(
    header: Option<&BundleHeader>,
    demands: &BTreeMap<u32, PendingDemand>,
    reason: RejectReason,
) -> Reject {
    let Some(b) = header else {
        return Reject {
            reason,
            ids: Ids::default(),
            demand: None,
        };
    };
    Reject {
        reason,
        ids: Ids {
            app_id: b.app_id,
            task_id: b.task_id,
            resource_id: b.resource_id,
            version: b.resource_version,
        },
        demand: (b.demand_cookie != 0)
            .then_some(b.demand_cookie)
            .filter(|c| demands.contains_key(c)),
    }
}

/// Checks one reassembled object (private memory). `tree_root` is the root reassembly checked
/// a bundle's digest list and every content chunk against as they arrived (None: not
/// checked, and no bundle passes). An accepted bundle's content is
/// `object[content_offset..]`; the returned resource's `content` is left empty for the caller
/// to fill from the object it owns.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check(
    watch: &mut Stopwatch<'_>,
    object: &[u8],
    tree_root: Option<[u8; 48]>,
    key: &VerifyingKey,
    session: &Session,
    versions: &BTreeMap<u64, u64>,
    registry: &AppRegistry,
    demands: &BTreeMap<u32, PendingDemand>,
    max_content_len: u32,
    manifests: bool,
    trust: FloorsTrust,
) -> Result<Verdict, Reject> {
    let malformed = Reject {
        reason: RejectReason::Malformed,
        ids: Ids::default(),
        demand: None,
    };
    if FloorsHeader::is_floors(object) {
        return check_floors(object, key, session, trust).map_err(|reason| Reject {
            reason,
            ..malformed
        });
    }
    if ManifestHeader::is_manifest(object) {
        let fail = |reason| Reject {
            reason,
            ..malformed
        };
        if !manifests {
            return Err(fail(RejectReason::Unexpected));
        }
        let (m, entries) =
            ManifestHeader::parse_manifest(object).map_err(|_| fail(RejectReason::Malformed))?;
        if m.session_nonce != session.nonce || m.epoch != session.epoch {
            return Err(fail(RejectReason::WrongSession));
        }
        // One sequence space for bundles and manifests (SPEC.md).
        if session.last_seq.is_some_and(|last| m.seq <= last) {
            return Err(fail(RejectReason::Replay));
        }
        let mut statement = Vec::new();
        statement
            .try_reserve_exact(MANIFEST_TBS_PREFIX_LEN + entries.len())
            .map_err(|_| fail(RejectReason::TooLarge))?;
        statement.extend_from_slice(&m.tbs_prefix());
        statement.extend_from_slice(entries);
        let (verified, ns) = watch.time(|| verify_signature(key, &statement, &m.signature));
        watch.signature_ns += ns;
        verified.map_err(fail)?;
        let digests = (0..m.count as usize)
            .filter_map(|i| ManifestHeader::entry(entries, i).copied())
            .collect();
        return Ok(Verdict::Manifest {
            seq: m.seq,
            digests,
        });
    }
    let (b, content) = match BundleHeader::parse_bundle(object) {
        Ok(parsed) => parsed,
        Err(WireError::TooLarge { .. }) => {
            return Err(Reject {
                reason: RejectReason::TooLarge,
                ..malformed
            })
        }
        Err(_) => return Err(malformed),
    };
    let ids = Ids {
        app_id: b.app_id,
        task_id: b.task_id,
        resource_id: b.resource_id,
        version: b.resource_version,
    };
    let demand = (b.demand_cookie != 0)
        .then_some(b.demand_cookie)
        .filter(|c| demands.contains_key(c));
    let fail = |reason| Reject {
        reason,
        ids,
        demand,
    };
    // The order of SPEC.md section 6: structure, session, routing, sequence, version,
    // content, signature.
    if b.content_len > u64::from(max_content_len) {
        return Err(fail(RejectReason::TooLarge));
    }
    if b.session_nonce != session.nonce || b.epoch != session.epoch {
        return Err(fail(RejectReason::WrongSession));
    }
    if !session.has_floors {
        return Err(fail(RejectReason::NoFloors));
    }
    if !registry.permits(b.app_id, b.task_id, b.resource_id) {
        return Err(fail(RejectReason::WrongTask));
    }
    if b.demand_cookie != 0 && demand.is_none() {
        return Err(fail(RejectReason::Unexpected));
    }
    if let Some(d) = demand.and_then(|c| demands.get(&c)) {
        if (d.app_id, d.task_id, d.resource_id) != (b.app_id, b.task_id, b.resource_id) {
            return Err(fail(RejectReason::WrongTask));
        }
    }
    if session.last_seq.is_some_and(|last| b.seq <= last) {
        return Err(fail(RejectReason::Replay));
    }
    let floor = versions.get(&b.resource_id).copied().unwrap_or(0);
    let demanded_floor = demand
        .and_then(|c| demands.get(&c))
        .map_or(0, |d| d.min_version);
    if b.resource_version < floor.max(demanded_floor) {
        return Err(fail(RejectReason::Rollback));
    }
    // Content: reassembly checked the digest list against this root and every chunk against
    // the list, in the private copy, as they arrived; without that, nothing passes.
    if tree_root != Some(b.tree_root) || content.len() as u64 != b.content_len {
        return Err(fail(RejectReason::DigestMismatch));
    }
    let statement = b.to_be_signed();
    let (manifest_digest, ns) = watch.time(|| {
        if b.flags.contains(BundleFlags::IN_MANIFEST) {
            let d: [u8; 48] = Sha384::digest(statement).into();
            if !session.manifest_digests.contains(&d) {
                return Err(fail(RejectReason::NotInManifest));
            }
            Ok(Some(d))
        } else {
            verify_signature(key, &statement, &b.signature).map_err(fail)?;
            Ok(None)
        }
    });
    watch.signature_ns += ns;
    let manifest_digest = manifest_digest?;
    Ok(Verdict::Bundle(Accepted {
        resource: Resource {
            app_id: b.app_id,
            task_id: b.task_id,
            resource_id: b.resource_id,
            version: b.resource_version,
            kind: b.kind as u16,
            // Filled by the caller from the object it owns (no second copy).
            content: Default::default(),
            tree_root: b.tree_root,
            source: Source::Prefetched,
            verified_ns: 0,
        },
        content_offset: b.content_offset(),
        seq: b.seq,
        demand,
        manifest_digest,
    }))
}

/// Checks a floors snapshot (SPEC.md section 8): structure, session, expiry and serial, then
/// the signature.
fn check_floors(
    object: &[u8],
    key: &VerifyingKey,
    session: &Session,
    trust: FloorsTrust,
) -> Result<Verdict, RejectReason> {
    let (f, entries) = FloorsHeader::parse_floors(object).map_err(|_| RejectReason::Malformed)?;
    if f.session_nonce != session.nonce || f.epoch != session.epoch {
        return Err(RejectReason::WrongSession);
    }
    if f.expires_at <= trust.time_floor || trust.serial.is_some_and(|s| f.serial < s) {
        return Err(RejectReason::StaleFloors);
    }
    let mut statement = Vec::new();
    statement
        .try_reserve_exact(FLOORS_TBS_PREFIX_LEN + entries.len())
        .map_err(|_| RejectReason::TooLarge)?;
    statement.extend_from_slice(&f.tbs_prefix());
    statement.extend_from_slice(entries);
    verify_signature(key, &statement, &f.signature)?;
    let mut floors = Vec::new();
    floors
        .try_reserve_exact(f.count as usize)
        .map_err(|_| RejectReason::TooLarge)?;
    floors.extend(FloorsHeader::iter(entries));
    Ok(Verdict::Floors {
        serial: f.serial,
        issued_at: f.issued_at,
        floors,
    })
}

fn verify_signature(
    key: &VerifyingKey,
    statement: &[u8],
    signature: &[u8; 96],
) -> Result<(), RejectReason> {
    let sig = Signature::from_slice(signature).map_err(|_| RejectReason::BadSignature)?;
    key.verify(statement, &sig)
        .map_err(|_| RejectReason::BadSignature)
}
