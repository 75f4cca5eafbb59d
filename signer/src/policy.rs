//! The signer's policy: what it agrees to sign. A bundle statement must name a resource
//! version that is in the signer's own read-only view of the store, with the kind, app,
//! length the store holds and the chunk-tree root of its bytes (the store's SHA-384 and the
//! tree recomputed from the object's bytes the first time that version is asked for). A manifest statement must list exactly the digests
//! of the bundle statements sent with it, all of its session, each passing the bundle check.
//!
//! The store's index is re-read when its file changes, so resources published after the
//! signer started are found. Verified versions are cached (a version's content never
//! changes: the store only adds versions); the cache is bounded.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::SystemTime,
};

use see_prefetch_backend::store::{DiskStore, ResourceStore, StoreError};
use virtio_prefetch_wire::{
    FloorsHeader, ResourceKind, DIGEST_LEN, FLOORS_CONTEXT, FLOORS_TBS_PREFIX_LEN,
};

use crate::{
    protocol::{Kind, Refusal, Request},
    statement::{BundleStatement, ManifestStatement},
};

/// Versions remembered as verified, at most.
const MAX_CACHED: usize = 4096;

/// What the store says about one resource version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Published {
    kind: ResourceKind,
    app_id: u32,
    len: u64,
    /// The chunk-tree root of the content (SPEC.md section 6), what a bundle signs.
    tree_root: [u8; DIGEST_LEN],
}

/// What a checked request signs, for the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The resource (0 for a manifest).
    pub resource: u64,
    /// Its version (0 for a manifest).
    pub version: u64,
    /// The statement's sequence number.
    pub seq: u64,
    /// The statement's session epoch.
    pub epoch: u64,
}

/// The policy over one store directory.
#[derive(Debug)]
pub struct Policy {
    dir: PathBuf,
    store: DiskStore,
    index_mtime: Option<SystemTime>,
    verified: HashMap<(u64, u64), Published>,
    /// The highest version of each resource this signer has passed for signing since it
    /// started: no floors snapshot it signs may let the guest go below it.
    signed: HashMap<u64, u64>,
}

fn index_mtime(dir: &Path) -> Option<SystemTime> {
    std::fs::metadata(dir.join("index.json"))
        .and_then(|m| m.modified())
        .ok()
}

impl Policy {
    /// Opens the store in `dir` (created empty if missing, so the signer may start before
    /// the store is filled).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let index_mtime = index_mtime(dir);
        Ok(Self {
            store: DiskStore::open(dir)?,
            dir: dir.to_path_buf(),
            index_mtime,
            verified: HashMap::new(),
            signed: HashMap::new(),
        })
    }

    /// Checks `request` against the policy.
    pub fn check(&mut self, request: &Request) -> Result<Checked, Refusal> {
        match request.kind {
            Kind::Bundle => {
                let s = BundleStatement::parse(&request.statement)?;
                self.check_bundle(&s)?;
                Ok(Checked {
                    resource: s.resource_id,
                    version: s.resource_version,
                    seq: s.seq,
                    epoch: s.epoch,
                })
            }
            Kind::Manifest => {
                let m = ManifestStatement::parse(&request.statement)?;
                for s in m.check_bundles(&request.bundles)? {
                    self.check_bundle(&s)?;
                }
                Ok(Checked {
                    resource: 0,
                    version: 0,
                    seq: m.seq,
                    epoch: m.epoch,
                })
            }
            Kind::Floors => {
                self.check_floors(&request.statement)?;
                Ok(Checked {
                    resource: 0,
                    version: 0,
                    seq: 0,
                    epoch: 0,
                })
            }
        }
    }

    /// A floors snapshot's statement: the floors context, and a floor for every resource this
    /// signer has signed at no less than the version it signed (a rollback otherwise).
    fn check_floors(&self, statement: &[u8]) -> Result<(), Refusal> {
        if statement.len() < FLOORS_TBS_PREFIX_LEN || !statement.starts_with(FLOORS_CONTEXT) {
            return Err(Refusal::Malformed);
        }
        // A BTreeMap: a HashMap's random seed would be a getrandom call, which the confined
        // worker thread may not make.
        let floors: std::collections::BTreeMap<u64, u64> =
            FloorsHeader::iter(&statement[FLOORS_TBS_PREFIX_LEN..])
                .map(|f| (f.resource_id, f.min_version))
                .collect();
        for (&resource, &version) in &self.signed {
            if floors.get(&resource).is_none_or(|&floor| floor < version) {
                return Err(Refusal::Rollback { resource, version });
            }
        }
        Ok(())
    }

    fn check_bundle(&mut self, s: &BundleStatement) -> Result<(), Refusal> {
        let (resource, version) = (s.resource_id, s.resource_version);
        let published = self.published(resource, version)?;
        if published.len != s.content_len || published.tree_root != s.tree_root {
            return Err(Refusal::HashMismatch { resource, version });
        }
        if published.kind != s.kind || published.app_id != s.app_id {
            return Err(Refusal::MetadataMismatch { resource, version });
        }
        let signed = self.signed.entry(resource).or_insert(version);
        *signed = (*signed).max(version);
        Ok(())
    }

    /// The store's record of a version, verified against the object's bytes.
    fn published(&mut self, resource: u64, version: u64) -> Result<Published, Refusal> {
        if let Some(p) = self.verified.get(&(resource, version)) {
            return Ok(*p);
        }
        let found = match self.store.get_version(resource, version) {
            Err(StoreError::Unknown { .. }) if self.reload() => {
                self.store.get_version(resource, version)
            }
            other => other,
        };
        let stored = found.map_err(|e| match e {
            StoreError::Unknown { .. } => Refusal::UnknownResource { resource, version },
            StoreError::CorruptObject { .. } => Refusal::HashMismatch { resource, version },
            other => {
                log::warn!("store: {other}");
                Refusal::StoreUnavailable
            }
        })?;
        // `get_version` recomputed the digest from the bytes and refused a mismatch, and
        // computed the chunk tree from the same bytes.
        let p = Published {
            kind: stored.kind,
            app_id: stored.app_id,
            len: stored.content.len() as u64,
            tree_root: stored.tree.root,
        };
        if self.verified.len() >= MAX_CACHED {
            self.verified.clear();
        }
        self.verified.insert((resource, version), p);
        Ok(p)
    }

    /// Re-reads the index if its file changed; true when it did.
    fn reload(&mut self) -> bool {
        let mtime = index_mtime(&self.dir);
        if mtime.is_none() || mtime == self.index_mtime {
            return false;
        }
        match DiskStore::open(&self.dir) {
            Ok(store) => {
                self.store = store;
                self.index_mtime = mtime;
                true
            }
            Err(e) => {
                log::warn!("store index not reloaded: {e}");
                false
            }
        }
    }
}
