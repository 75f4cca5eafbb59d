//! The resource store: where the backend gets the bytes it signs.
//!
//! [`ResourceStore`] is the interface (so an S3-compatible object store, or a wrapper that
//! models a remote origin's latency, can stand in); [`DiskStore`] is the default: a directory
//! of content-addressed objects (`objects/<sha384 hex>`) and an index (`index.json`) of every
//! resource's versions. Writes are atomic (temporary file, then rename), so a crash never
//! leaves a half-written object or index behind.
//!
//! Each version's index entry holds the object's SHA-384 (its name) and, since the chunk tree,
//! the root of its chunk tree (SPEC.md section 6), both computed once when it is added. A read
//! hashes the content once: it computes the chunk tree (the bundle needs it anyway; SHA-256,
//! SHA-NI where the CPU has it) and checks its root against the index's, which binds the bytes
//! and their length as the SHA-384 does; the SHA-384 handed out is the index's. An entry
//! written before roots were recorded (no `root`) is checked by its SHA-384 instead; its root
//! is then kept in memory and written to the index with the next `add`, so an old store keeps
//! working and upgrades without a reader ever writing the index.

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
    /// An object's bytes do not match the index (their chunk tree root, or for an entry
    /// without a root their SHA-384, differs from the index's).
    #[error(
        "object {digest} of resource {id} is corrupt (its {check} differs from the index's); re-add the resource"
    )]
    CorruptObject {
        /// The resource.
        id: u64,
        /// The object's name (its SHA-384 as the index records it).
        digest: String,
        /// What was compared: "chunk tree root" or "SHA-384".
        check: &'static str,
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
    /// A chunk tree root that is not 96 hex digits.
    #[error("resource {id}: a chunk tree root is not 96 hex digits")]
    Root {
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
    /// SHA-384 of the content, lower-case hex: the object's name.
    digest: String,
    len: u64,
    /// Root of the content's chunk tree, lower-case hex (absent in indexes written before
    /// the chunk tree: such a version is checked by `digest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    root: Option<String>,
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
                    if entry.versions.iter().any(|v| unhex48(&v.digest).is_none()) {
                        return Err(bad(IndexProblem::Digest { id }));
                    }
                    if entry
                        .versions
                        .iter()
                        .any(|v| v.root.as_deref().is_some_and(|r| unhex48(r).is_none()))
                    {
                        return Err(bad(IndexProblem::Root { id }));
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
        let root = hex(&crate::tree::ChunkTree::of(content).root);
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
            root: Some(root),
        });
        let bytes =
            serde_json::to_vec_pretty(&*index).map_err(|error| StoreError::EncodeIndex {
                path: self.dir.join("index.json"),
                error,
            })?;
        write_atomic(&self.dir.join("index.json"), &bytes)
    }

    /// Reads version `v` of resource `id` and checks it against the index (without holding
    /// the index's lock: fetch workers read and hash in parallel).
    fn load(
        &self,
        id: u64,
        kind: ResourceKind,
        app_id: u32,
        v: &VersionEntry,
    ) -> Result<StoredResource, StoreError> {
        let path = self.dir.join("objects").join(&v.digest);
        let content = fs::read(&path).map_err(io(&path))?;
        let corrupt = |check| StoreError::CorruptObject {
            id,
            digest: v.digest.clone(),
            check,
        };
        // Checked by `open`; an unparsable name is a corrupt index, not a corrupt object.
        let named = unhex48(&v.digest).ok_or_else(|| corrupt("SHA-384"))?;
        let tree = crate::profile::chunk_tree(&content);
        let sha384 = match v.root.as_deref().and_then(unhex48) {
            Some(root) if root == tree.root => named,
            Some(_) => return Err(corrupt("chunk tree root")),
            None => {
                // An entry from before the chunk tree: check by the SHA-384, and keep the
                // root (for this process, and for the index's next write).
                if crate::profile::sha384(&content) != named {
                    return Err(corrupt("SHA-384"));
                }
                self.remember_root(id, v, &tree.root);
                named
            }
        };
        Ok(StoredResource {
            id,
            version: v.version,
            kind,
            app_id,
            content,
            sha384,
            tree,
        })
    }

    /// Records `root` for version `v` of `id` in the in-memory index (if the entry is still
    /// the one read), so later reads check it and the next `add` writes it.
    fn remember_root(&self, id: u64, v: &VersionEntry, root: &[u8; 48]) {
        let mut index = self.index();
        let entry = index.resources.get_mut(&id);
        let found = entry.and_then(|e| {
            e.versions
                .iter_mut()
                .find(|x| x.version == v.version && x.digest == v.digest)
        });
        if let Some(found) = found {
            found.root.get_or_insert_with(|| hex(root));
        }
    }

    /// The kind, app and entry of the version `pick` chooses, copied out of the index so the
    /// lock is not held while reading.
    fn entry(
        &self,
        id: u64,
        min_version: u64,
        pick: impl Fn(&[VersionEntry]) -> Option<&VersionEntry>,
    ) -> Result<(ResourceKind, u32, VersionEntry), StoreError> {
        let index = self.index();
        let entry = index
            .resources
            .get(&id)
            .ok_or(StoreError::Unknown { id, min_version })?;
        let v = pick(&entry.versions).ok_or(StoreError::Unknown { id, min_version })?;
        let kind = parse_kind(&entry.kind).unwrap_or(ResourceKind::Data);
        Ok((kind, entry.app, v.clone()))
    }
}

impl ResourceStore for DiskStore {
    fn get(&self, id: u64, min_version: u64) -> Result<StoredResource, StoreError> {
        let (kind, app, v) = self.entry(id, min_version, |versions| {
            versions.last().filter(|v| v.version >= min_version)
        })?;
        self.load(id, kind, app, &v)
    }

    fn get_version(&self, id: u64, version: u64) -> Result<StoredResource, StoreError> {
        let (kind, app, v) = self.entry(id, version, |versions| {
            versions.iter().find(|v| v.version == version)
        })?;
        self.load(id, kind, app, &v)
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

/// The 48 bytes that 96 hex digits (either case) spell, or None.
fn unhex48(text: &str) -> Option<[u8; 48]> {
    let text = text.as_bytes();
    if text.len() != 96 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 48];
    for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *o = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
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
        let index = fs::read_to_string(dir.path().join("index.json")).unwrap();
        let bad_root = index.replace(&hex(&crate::tree::ChunkTree::of(b"bytes").root), "zz");
        assert_ne!(bad_root, index, "the index records the root");
        fs::write(dir.path().join("index.json"), bad_root).unwrap();
        assert!(matches!(
            DiskStore::open(dir.path()),
            Err(StoreError::CorruptIndex {
                problem: IndexProblem::Root { id: 1 },
                ..
            })
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

    /// Three tree chunks and a bit, none alike.
    fn multi_chunk() -> Vec<u8> {
        let len = 3 * virtio_prefetch_wire::TREE_CHUNK_LEN + 100;
        (0..len).map(|i| (i * 7 % 253) as u8).collect()
    }

    fn flip_byte(dir: &Path, content: &[u8], at: usize) {
        let object = dir.join("objects").join(hex(&Sha384::digest(content)));
        let mut bytes = fs::read(&object).unwrap();
        bytes[at] ^= 0x01;
        fs::write(&object, bytes).unwrap();
    }

    #[test]
    fn a_flipped_byte_in_an_object_is_refused_by_its_tree_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        let content = multi_chunk();
        store.add(5, 1, ResourceKind::Data, 1, &content).unwrap();
        let read = store.get(5, 0).unwrap();
        assert_eq!(read.tree, crate::tree::ChunkTree::of(&content));
        assert_eq!(read.sha384, <[u8; 48]>::from(Sha384::digest(&content)));
        flip_byte(
            dir.path(),
            &content,
            2 * virtio_prefetch_wire::TREE_CHUNK_LEN + 5,
        );
        let err = store.get(5, 0).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::CorruptObject {
                    id: 5,
                    check: "chunk tree root",
                    ..
                }
            ),
            "{err}"
        );
    }

    /// An index written before chunk tree roots were recorded.
    fn strip_roots(dir: &Path) {
        let path = dir.join("index.json");
        let mut index: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        for entry in index["resources"].as_object_mut().unwrap().values_mut() {
            for v in entry["versions"].as_array_mut().unwrap() {
                assert!(v.as_object_mut().unwrap().remove("root").is_some());
            }
        }
        fs::write(&path, serde_json::to_vec_pretty(&index).unwrap()).unwrap();
    }

    #[test]
    fn an_old_index_without_roots_is_read_checked_and_upgraded_on_the_next_add() {
        let dir = tempfile::tempdir().unwrap();
        let content = multi_chunk();
        DiskStore::open(dir.path())
            .unwrap()
            .add(6, 1, ResourceKind::Code, 2, &content)
            .unwrap();
        strip_roots(dir.path());
        let old_index = fs::read(dir.path().join("index.json")).unwrap();
        assert!(!String::from_utf8_lossy(&old_index).contains("root"));

        // Read: checked by its SHA-384, tree computed, nothing written by the reader.
        let store = DiskStore::open(dir.path()).unwrap();
        let read = store.get(6, 1).unwrap();
        assert_eq!(
            read,
            StoredResource::new(6, 1, ResourceKind::Code, 2, content.clone())
        );
        assert_eq!(fs::read(dir.path().join("index.json")).unwrap(), old_index);

        // A tampered object under the old index is refused by its SHA-384 ...
        let fresh = DiskStore::open(dir.path()).unwrap();
        flip_byte(dir.path(), &content, 10);
        let err = fresh.get(6, 1).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::CorruptObject {
                    check: "SHA-384",
                    ..
                }
            ),
            "{err}"
        );
        // ... and, once a read has learnt the root, by the root.
        let err = store.get(6, 1).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::CorruptObject {
                    check: "chunk tree root",
                    ..
                }
            ),
            "{err}"
        );
        flip_byte(dir.path(), &content, 10);

        // The next add writes the learnt root along with the new version: no version lost.
        store.add(6, 2, ResourceKind::Code, 2, b"two").unwrap();
        let index = fs::read_to_string(dir.path().join("index.json")).unwrap();
        assert!(index.contains(&hex(&crate::tree::ChunkTree::of(&content).root)));
        let again = DiskStore::open(dir.path()).unwrap();
        assert_eq!(again.get_version(6, 1).unwrap().content, content);
        assert_eq!(again.get(6, 0).unwrap().content, b"two");
    }
}
