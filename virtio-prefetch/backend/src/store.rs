//! The resource store: where the backend gets the bytes it signs.
//!
//! [`ResourceStore`] is the interface (so an S3-compatible object store, or a wrapper that
//! models a remote origin's latency, can stand in); [`DiskStore`] is the default: a directory
//! of content-addressed objects (`objects/<sha384 hex>`) and an index (`index.json`) of every
//! resource's versions. Writes are atomic (temporary file, then rename), so a crash never
//! leaves a half-written object or index behind.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha384};
use thiserror::Error;
use virtio_prefetch_wire::ResourceKind;

/// Why the store could not answer.
#[derive(Debug, Error)]
pub enum StoreError {
    /// No such resource (or no version at least the one asked for).
    #[error("resource {id} has no version >= {min_version} in the store")]
    Unknown {
        /// The resource.
        id: u64,
        /// The lowest acceptable version.
        min_version: u64,
    },
    /// The store's files could not be read or written.
    #[error("store {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The index does not parse or breaks a rule of the store.
    #[error(
        "store index {path} is corrupt: {problem}; restore it or rebuild the store with `store add`"
    )]
    CorruptIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        problem: IndexProblem,
    },
    /// The index could not be encoded.
    #[error("store index {path} could not be encoded: {error}")]
    EncodeIndex {
        /// The index file.
        path: PathBuf,
        /// The error.
        error: serde_json::Error,
    },
    /// An object's bytes do not hash to its name.
    #[error(
        "object {digest} of resource {id} is corrupt (its SHA-384 differs); re-add the resource"
    )]
    CorruptObject {
        /// The resource.
        id: u64,
        /// The expected digest.
        digest: String,
    },
    /// A version that is not above the current one.
    #[error("resource {id} already has version {current}; a new version must be higher")]
    StaleVersion {
        /// The resource.
        id: u64,
        /// Its current version.
        current: u64,
    },
}

/// What is wrong with a store index.
#[derive(Debug, Error)]
pub enum IndexProblem {
    /// Not JSON of the index's shape.
    #[error("{0}")]
    Json(serde_json::Error),
    /// A resource of a kind other than code or data.
    #[error("resource {id} has kind {kind:?}")]
    Kind {
        /// The resource.
        id: u64,
        /// Its kind.
        kind: String,
    },
    /// A resource without versions, or with versions out of order.
    #[error("resource {id}: versions must be increasing")]
    Versions {
        /// The resource.
        id: u64,
    },
    /// A digest that is not 96 hex digits.
    #[error("resource {id}: a digest is not 96 hex digits")]
    Digest {
        /// The resource.
        id: u64,
    },
}

/// One version of a resource, with its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResource {
    /// The resource.
    pub id: u64,
    /// This version.
    pub version: u64,
    /// Code or data.
    pub kind: ResourceKind,
    /// The app allowed to claim it.
    pub app_id: u32,
    /// The bytes.
    pub content: Vec<u8>,
    /// SHA-384 of `content` (the store's name for it, by which it checks its objects).
    pub sha384: [u8; 48],
    /// The chunk tree of `content` (the bundle carries its list, and its root under the
    /// signature, as is: a store must hand out content and tree that match, the guest checks
    /// them).
    pub tree: crate::tree::ChunkTree,
}

impl StoredResource {
    /// A resource whose digest is computed from `content`.
    pub fn new(id: u64, version: u64, kind: ResourceKind, app_id: u32, content: Vec<u8>) -> Self {
        let sha384 = crate::profile::sha384(&content);
        let tree = crate::profile::chunk_tree(&content);
        Self {
            id,
            version,
            kind,
            app_id,
            content,
            sha384,
            tree,
        }
    }
}

/// Where resources come from.
pub trait ResourceStore: Send + Sync {
    /// The newest version of `id` that is at least `min_version`.
    fn get(&self, id: u64, min_version: u64) -> Result<StoredResource, StoreError>;
    /// A specific version of `id` (older versions are kept; the rollback test uses them).
    fn get_version(&self, id: u64, version: u64) -> Result<StoredResource, StoreError>;
    /// Size in bytes of the newest version, without reading it.
    fn size_of(&self, id: u64) -> Result<u64, StoreError>;
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct VersionEntry {
    version: u64,
    digest: String,
    len: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct ResourceEntry {
    kind: String,
    app: u32,
    versions: Vec<VersionEntry>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Index {
    resources: BTreeMap<u64, ResourceEntry>,
}

/// A content-addressed store in a directory.
#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
    index: Mutex<Index>,
}

fn kind_name(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Code => "code",
        ResourceKind::Data => "data",
    }
}

/// Parses "code" or "data".
pub fn parse_kind(name: &str) -> Option<ResourceKind> {
    match name {
        "code" => Some(ResourceKind::Code),
        "data" => Some(ResourceKind::Data),
        _ => None,
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

impl DiskStore {
    /// Opens (or creates) the store in `dir`, checking its index.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(dir.join("objects")).map_err(io(&dir))?;
        let path = dir.join("index.json");
        let index = match fs::read(&path) {
            Ok(bytes) => {
                let bad = |problem| StoreError::CorruptIndex {
                    path: path.clone(),
                    problem,
                };
                let index: Index =
                    serde_json::from_slice(&bytes).map_err(|e| bad(IndexProblem::Json(e)))?;
                for (&id, entry) in &index.resources {
                    if parse_kind(&entry.kind).is_none() {
                        return Err(bad(IndexProblem::Kind {
                            id,
                            kind: entry.kind.clone(),
                        }));
                    }
                    if entry.versions.is_empty()
                        || entry
                            .versions
                            .windows(2)
                            .any(|w| w[0].version >= w[1].version)
                    {
                        return Err(bad(IndexProblem::Versions { id }));
                    }
                    if entry.versions.iter().any(|v| {
                        v.digest.len() != 96 || !v.digest.bytes().all(|b| b.is_ascii_hexdigit())
                    }) {
                        return Err(bad(IndexProblem::Digest { id }));
                    }
                }
                index
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(io(&path)(e)),
        };
        Ok(Self {
            dir,
            index: Mutex::new(index),
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds `content` as `version` of resource `id` (higher than any stored version).
    pub fn add(
        &self,
        id: u64,
        version: u64,
        kind: ResourceKind,
        app_id: u32,
        content: &[u8],
    ) -> Result<(), StoreError> {
        let mut index = self.index();
        if let Some(current) = index.resources.get(&id).and_then(|e| e.versions.last()) {
            if version <= current.version {
                return Err(StoreError::StaleVersion {
                    id,
                    current: current.version,
                });
            }
        }
        let digest = hex(&Sha384::digest(content));
        let object = self.dir.join("objects").join(&digest);
        if !object.exists() {
            write_atomic(&object, content)?;
        }
        let entry = index.resources.entry(id).or_insert_with(|| ResourceEntry {
            kind: kind_name(kind).into(),
            app: app_id,
            versions: Vec::new(),
        });
        entry.kind = kind_name(kind).into();
        entry.app = app_id;
        entry.versions.push(VersionEntry {
            version,
            digest,
            len: content.len() as u64,
        });
        let bytes =
            serde_json::to_vec_pretty(&*index).map_err(|error| StoreError::EncodeIndex {
                path: self.dir.join("index.json"),
                error,
            })?;
        write_atomic(&self.dir.join("index.json"), &bytes)
    }

    fn load(
        &self,
        id: u64,
        entry: &ResourceEntry,
        v: &VersionEntry,
    ) -> Result<StoredResource, StoreError> {
        let path = self.dir.join("objects").join(&v.digest);
        let content = fs::read(&path).map_err(io(&path))?;
        let sha384 = crate::profile::sha384(&content);
        if hex(&sha384) != v.digest {
            return Err(StoreError::CorruptObject {
                id,
                digest: v.digest.clone(),
            });
        }
        let tree = crate::profile::chunk_tree(&content);
        Ok(StoredResource {
            id,
            version: v.version,
            kind: parse_kind(&entry.kind).unwrap_or(ResourceKind::Data),
            app_id: entry.app,
            content,
            sha384,
            tree,
        })
    }
}

impl ResourceStore for DiskStore {
    fn get(&self, id: u64, min_version: u64) -> Result<StoredResource, StoreError> {
        let index = self.index();
        let entry = index
            .resources
            .get(&id)
            .ok_or(StoreError::Unknown { id, min_version })?;
        let newest = entry.versions.last().filter(|v| v.version >= min_version);
        let newest = newest.ok_or(StoreError::Unknown { id, min_version })?;
        self.load(id, entry, newest)
    }

    fn get_version(&self, id: u64, version: u64) -> Result<StoredResource, StoreError> {
        let index = self.index();
        let unknown = StoreError::Unknown {
            id,
            min_version: version,
        };
        let entry = index.resources.get(&id).ok_or(unknown)?;
        let found = entry.versions.iter().find(|v| v.version == version);
        let found = found.ok_or(StoreError::Unknown {
            id,
            min_version: version,
        })?;
        self.load(id, entry, found)
    }

    fn size_of(&self, id: u64) -> Result<u64, StoreError> {
        let index = self.index();
        let entry = index.resources.get(&id).and_then(|e| e.versions.last());
        entry
            .map(|v| v.len)
            .ok_or(StoreError::Unknown { id, min_version: 0 })
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A store for tests whose fetches of chosen resources block until released.
#[cfg(test)]
pub(crate) mod testing {
    use std::{
        collections::{BTreeMap, BTreeSet},
        sync::{Condvar, Mutex, MutexGuard},
        time::Duration,
    };

    use super::{ResourceStore, StoreError, StoredResource};

    #[derive(Default)]
    struct Gates {
        resources: BTreeMap<u64, StoredResource>,
        closed: BTreeSet<u64>,
        entered: BTreeSet<u64>,
    }

    /// Resources in memory; `get` of a closed resource waits until it is opened.
    #[derive(Default)]
    pub(crate) struct GatedStore {
        gates: Mutex<Gates>,
        changed: Condvar,
    }

    impl GatedStore {
        pub(crate) fn new() -> Self {
            Self::default()
        }

        fn gates(&self) -> MutexGuard<'_, Gates> {
            self.gates.lock().unwrap_or_else(|p| p.into_inner())
        }

        pub(crate) fn add(&self, resource: StoredResource) {
            self.gates().resources.insert(resource.id, resource);
        }

        pub(crate) fn close(&self, id: u64) {
            self.gates().closed.insert(id);
        }

        pub(crate) fn open(&self, id: u64) {
            self.gates().closed.remove(&id);
            self.changed.notify_all();
        }

        /// Whether a fetch of `id` has started.
        pub(crate) fn entered(&self, id: u64) -> bool {
            self.gates().entered.contains(&id)
        }

        /// Waits until a fetch of `id` has started; panics after `limit` (a hung test).
        pub(crate) fn wait_entered(&self, id: u64, limit: Duration) {
            let gates = self.gates();
            let (_gates, timeout) = self
                .changed
                .wait_timeout_while(gates, limit, |g| !g.entered.contains(&id))
                .unwrap_or_else(|p| p.into_inner());
            assert!(!timeout.timed_out(), "no fetch of resource {id} started");
        }
    }

    impl ResourceStore for GatedStore {
        fn get(&self, id: u64, min_version: u64) -> Result<StoredResource, StoreError> {
            let mut gates = self.gates();
            gates.entered.insert(id);
            self.changed.notify_all();
            let gates = self
                .changed
                .wait_while(gates, |g| g.closed.contains(&id))
                .unwrap_or_else(|p| p.into_inner());
            gates
                .resources
                .get(&id)
                .filter(|r| r.version >= min_version)
                .cloned()
                .ok_or(StoreError::Unknown { id, min_version })
        }

        fn get_version(&self, id: u64, version: u64) -> Result<StoredResource, StoreError> {
            self.get(id, version)
                .ok()
                .filter(|r| r.version == version)
                .ok_or(StoreError::Unknown {
                    id,
                    min_version: version,
                })
        }

        fn size_of(&self, id: u64) -> Result<u64, StoreError> {
            let gates = self.gates();
            let r = gates.resources.get(&id);
            r.map(|r| r.content.len() as u64)
                .ok_or(StoreError::Unknown { id, min_version: 0 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_reads_and_keeps_old_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        store.add(3, 1, ResourceKind::Data, 1, b"first").unwrap();
        store.add(3, 2, ResourceKind::Data, 1, b"second").unwrap();
        let newest = store.get(3, 0).unwrap();
        assert_eq!(newest.content, b"second");
        assert_eq!(
            newest,
            StoredResource::new(3, 2, ResourceKind::Data, 1, b"second".to_vec())
        );
        let digest: [u8; 48] = Sha384::digest(b"second").into();
        assert_eq!(
            newest.sha384, digest,
            "the digest handed out is the content's"
        );
        assert_eq!(store.get_version(3, 1).unwrap().content, b"first");
        assert!(matches!(store.get(3, 3), Err(StoreError::Unknown { .. })));
        assert!(matches!(
            store.add(3, 2, ResourceKind::Data, 1, b"x"),
            Err(StoreError::StaleVersion { current: 2, .. })
        ));
        // Reopening reads the same index.
        let again = DiskStore::open(dir.path()).unwrap();
        assert_eq!(again.get(3, 2).unwrap().version, 2);
        assert_eq!(again.size_of(3).unwrap(), 6);
    }

    #[test]
    fn detects_a_corrupt_object_and_a_corrupt_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        store.add(1, 1, ResourceKind::Code, 2, b"bytes").unwrap();
        let object = dir
            .path()
            .join("objects")
            .join(hex(&Sha384::digest(b"bytes")));
        fs::write(&object, b"BYTES").unwrap();
        assert!(matches!(
            store.get(1, 0),
            Err(StoreError::CorruptObject { .. })
        ));
        fs::write(dir.path().join("index.json"), b"{ not json").unwrap();
        assert!(matches!(
            DiskStore::open(dir.path()),
            Err(StoreError::CorruptIndex { .. })
        ));
        fs::write(
            dir.path().join("index.json"),
            br#"{"resources":{"1":{"kind":"code","app":1,"versions":[]}}}"#,
        )
        .unwrap();
        assert!(matches!(
            DiskStore::open(dir.path()),
            Err(StoreError::CorruptIndex { .. })
        ));
    }
}
