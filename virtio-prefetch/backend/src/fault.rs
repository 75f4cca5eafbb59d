//! Fault injection (cargo feature `fault-injection`, off by default): what a hostile host can
//! do to bundles, for the end-to-end tests. A release build without the feature has none of
//! this: no [`Tamper`], no `BackendHandle::set_tamper`, no foreign key, no replay copy.

use p384::ecdsa::{signature::Signer as _, Signature, SigningKey};
use virtio_prefetch_wire::BundleHeader;
use vm_memory::GuestAddress;

use crate::store::{ResourceStore, StoredResource};

/// Logged when a backend that can tamper with bundles starts, so that a build with fault
/// injection is recognisable (a release binary without the feature does not contain it).
pub const FAULT_INJECTION_MARKER: &str = "see-prefetch-fault-injection-enabled";

/// What a hostile host can do to bundles. Applies to every bundle ordered (prefetch) or
/// demanded while it is set, whenever it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tamper {
    /// Honest.
    #[default]
    None,
    /// Sign with a key the guest does not know.
    ForeignKey,
    /// Flip a bit of a signed header field after signing.
    FlipHeaderBit,
    /// Flip a bit of the content after signing.
    FlipContentBit,
    /// Send the previous bundle again, unchanged, instead of a new one.
    ReplayLast,
    /// Sign the bundle for another task than the one ordered.
    WrongTask,
    /// Serve the previous version of the resource (signed properly).
    Rollback,
    /// Rewrite the staging buffer that held a bundle's last chunk with other bytes, at the
    /// backend's next stagingq run after the delivery (when the guest has had the buffer
    /// back): [`Stats::rewrites`](crate::Stats::rewrites) counts the rewrites done.
    RewriteAfterDelivery,
    /// Sign the bundle, validly, for this task instead of the one ordered or demanded (same app
    /// and resource): a demand answered with a bundle for another task the guest also allows.
    SignForTask(u64),
}

/// A fixed key the guest does not know.
fn foreign_key() -> Option<SigningKey> {
    let mut foreign = [0x42u8; 48];
    foreign[0] = 0x11;
    SigningKey::from_slice(&foreign).ok()
}

/// The device's fault-injection state.
pub(crate) struct Faults {
    /// In force for the orders and demands that arrive from now on.
    pub(crate) tamper: Tamper,
    /// The last bundle built, for [`Tamper::ReplayLast`].
    last_bundle: Option<Vec<u8>>,
    /// The staging buffer to rewrite at the next stagingq run.
    pub(crate) rewrite_pending: Option<(GuestAddress, usize)>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("tamper", &self.tamper)
            .finish_non_exhaustive()
    }
}

impl Faults {
    pub(crate) fn new() -> std::io::Result<Self> {
        log::warn!("{FAULT_INJECTION_MARKER}: this backend can tamper with bundles (a test build)");
        foreign_key().ok_or_else(|| std::io::Error::other("foreign test key"))?;
        Ok(Self {
            tamper: Tamper::None,
            last_bundle: None,
            rewrite_pending: None,
        })
    }

    /// The previous bundle again, when `tamper` asks for a replay and there is one.
    pub(crate) fn replay(&self, tamper: Tamper) -> Option<Vec<u8>> {
        (tamper == Tamper::ReplayLast)
            .then(|| self.last_bundle.clone())
            .flatten()
    }

    /// The previous version of `newest` instead, when `tamper` asks for a rollback.
    pub(crate) fn rollback(
        tamper: Tamper,
        store: &dyn ResourceStore,
        newest: &StoredResource,
    ) -> Option<StoredResource> {
        if tamper == Tamper::Rollback && newest.version > 1 {
            return store.get_version(newest.id, newest.version - 1).ok();
        }
        None
    }

    /// The task to sign for instead of `task_id`.
    pub(crate) fn signed_task(tamper: Tamper, task_id: u64) -> u64 {
        match tamper {
            Tamper::WrongTask => task_id.wrapping_add(1_000_000),
            Tamper::SignForTask(other) => other,
            _ => task_id,
        }
    }

    /// Re-signs `header` with a key the guest does not know when `tamper` asks for it.
    pub(crate) fn resign(tamper: Tamper, header: &mut BundleHeader) {
        if tamper != Tamper::ForeignKey {
            return;
        }
        if let Some(key) = foreign_key() {
            let signature: Signature = key.sign(&header.to_be_signed());
            header.signature.copy_from_slice(&signature.to_bytes());
        }
    }

    /// Flips a bit of the signed header or of `content` when `tamper` asks for it.
    pub(crate) fn corrupt(
        tamper: Tamper,
        header: &mut BundleHeader,
        mut content: Vec<u8>,
    ) -> Vec<u8> {
        match tamper {
            Tamper::FlipHeaderBit => header.resource_version ^= 1 << 62,
            Tamper::FlipContentBit if !content.is_empty() => content[0] ^= 1,
            _ => {}
        }
        content
    }

    /// Keeps a copy of the bundle just built, for a later replay.
    pub(crate) fn remember(&mut self, bytes: &[u8]) {
        self.last_bundle = Some(bytes.to_vec());
    }
}
