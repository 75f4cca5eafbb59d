//! The verified cache: bundles that passed every check, in private memory, indexed by
//! (app id, resource id), bounded by a byte budget, evicting the least recently used first.
//!
//! Only the driver inserts (after verification), prefetched and demanded bundles alike. A claim
//! does not move the entry out: it hands the task a read-only share of the content
//! ([`Content`], reference-counted), so the entry stays cached for the app's later tasks and
//! requests, and an eviction (LRU or the host's Evict) never frees bytes a task still reads.
//! One entry per (app, resource): a resource is shared by all of the app's tasks that the
//! registry lets claim it, and never by another app (each app has its own entry, verified for
//! it).

use alloc::{collections::BTreeMap, sync::Arc, vec::Vec};
use core::ops::Deref;

/// How a claim was served (and, in the cache, how the resource got there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Pushed by the PTO before the task asked; this is its first claim (a staged hit).
    Prefetched,
    /// Fetched on demand after a miss.
    Demanded,
    /// Already in the cache from an earlier claim or demand fetch (no transfer).
    Cached,
}

/// Verified content: a read-only share of the cached bytes (cloning is a reference count).
///
/// The bytes stay in the allocation they were reassembled in (a bundle's content after its
/// header): verifying and caching a bundle copies nothing.
#[derive(Clone)]
pub struct Content {
    object: Arc<Vec<u8>>,
    /// Where the content starts in `object` (at most its length).
    start: usize,
}

impl Content {
    /// The bytes of `object` from `start` on (none if `start` is past its end), without a copy.
    pub fn from_object(object: Vec<u8>, start: usize) -> Self {
        let start = start.min(object.len());
        Self {
            object: Arc::new(object),
            start,
        }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.object.get(self.start..).unwrap_or_default()
    }

    /// Shares of these bytes alive (the cache's included, if it still holds them).
    pub fn shares(&self) -> usize {
        Arc::strong_count(&self.object)
    }
}

impl core::fmt::Debug for Content {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Content({} bytes)", self.as_slice().len())
    }
}

impl Deref for Content {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for Content {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl From<Vec<u8>> for Content {
    fn from(v: Vec<u8>) -> Self {
        Self::from_object(v, 0)
    }
}

impl Default for Content {
    fn default() -> Self {
        Self::from(Vec::new())
    }
}

impl PartialEq for Content {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Content {}

impl PartialEq<Vec<u8>> for Content {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl PartialEq<[u8]> for Content {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_slice() == other
    }
}

impl PartialEq<&[u8]> for Content {
    fn eq(&self, other: &&[u8]) -> bool {
        self.as_slice() == *other
    }
}

/// A verified resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The app allowed to claim it (signed).
    pub app_id: u32,
    /// The task it was sent for (signed).
    pub task_id: u64,
    /// The resource id (signed).
    pub resource_id: u64,
    /// The resource version (signed).
    pub version: u64,
    /// Bundle kind (1 code, 2 data; signed).
    pub kind: u16,
    /// The content, verified chunk by chunk against the signed tree root (a read-only share).
    pub content: Content,
    /// The root of the content's chunk tree (SPEC.md section 6), checked against the signed
    /// header: it names these exact bytes (equal roots, equal content), so users need not hash
    /// them again to tell contents apart.
    pub tree_root: [u8; 48],
    /// How it reached the cache; in what a claim returns, how that claim was served.
    pub source: Source,
    /// `Platform::now_ns` when it was verified.
    pub verified_ns: u64,
}

impl Resource {
    /// True for a resource of kind code (a task's module; the signed bundle kind).
    pub fn is_code(&self) -> bool {
        self.kind == virtio_prefetch_wire::ResourceKind::Code as u16
    }
}

#[derive(Debug)]
struct Entry {
    resource: Resource,
    /// Last use (insertion or claim), the key in `lru`.
    stamp: u64,
    /// Claimed at least once since it was inserted.
    claimed: bool,
}

/// What [`VerifiedStore::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// A share of the cached resource, `source` saying how this claim was served.
    pub resource: Resource,
    /// True for the first claim of a prefetched resource (a staged hit).
    pub staged: bool,
}

/// The cache.
#[derive(Debug)]
pub struct VerifiedStore {
    map: BTreeMap<(u32, u64), Entry>,
    /// Last-use stamp -> key, least recent first.
    lru: BTreeMap<u64, (u32, u64)>,
    bytes: u64,
    budget: u64,
    stamp: u64,
}

impl VerifiedStore {
    /// An empty cache holding at most `budget` content bytes.
    pub fn new(budget: u64) -> Self {
        Self {
            map: BTreeMap::new(),
            lru: BTreeMap::new(),
            bytes: 0,
            budget,
            stamp: 0,
        }
    }

    fn next_stamp(&mut self) -> u64 {
        self.stamp += 1;
        self.stamp
    }

    /// Inserts `r` as the most recently used entry, replacing the entry for the same (app,
    /// resource) (not an eviction: the resource stays cached), and evicting the least recently
    /// used entries while over budget. Returns what was evicted, least recent first. A
    /// resource larger than the whole budget is still kept (alone) so a demanded resource can
    /// always be handed over.
    pub fn insert(&mut self, r: Resource) -> Vec<Resource> {
        let key = (r.app_id, r.resource_id);
        self.remove(key.0, key.1);
        let len = r.content.len() as u64;
        let mut evicted = Vec::new();
        while self.bytes + len > self.budget {
            let Some((_, &oldest)) = self.lru.iter().next() else {
                break;
            };
            match self.remove(oldest.0, oldest.1) {
                Some(e) => evicted.push(e),
                None => break,
            }
        }
        let stamp = self.next_stamp();
        self.bytes += len;
        self.lru.insert(stamp, key);
        self.map.insert(
            key,
            Entry {
                resource: r,
                stamp,
                claimed: false,
            },
        );
        evicted
    }

    /// The entry for (app, resource), if any (does not count as a use).
    pub fn get(&self, app_id: u32, resource_id: u64) -> Option<&Resource> {
        self.map.get(&(app_id, resource_id)).map(|e| &e.resource)
    }

    /// A claim of (app, resource): marks the entry used (most recent) and claimed, and returns
    /// a share of it; `source` says how the claim was served: `Prefetched` for the first claim
    /// of a prefetched entry, `Cached` otherwise.
    pub fn claim(&mut self, app_id: u32, resource_id: u64) -> Option<Hit> {
        let key = (app_id, resource_id);
        let stamp = self.next_stamp();
        let e = self.map.get_mut(&key)?;
        self.lru.remove(&e.stamp);
        self.lru.insert(stamp, key);
        e.stamp = stamp;
        let staged = !e.claimed && e.resource.source == Source::Prefetched;
        e.claimed = true;
        let mut resource = e.resource.clone();
        resource.source = if staged {
            Source::Prefetched
        } else {
            Source::Cached
        };
        Some(Hit { resource, staged })
    }

    /// Removes the entry for (app, resource). Shares handed out before stay valid.
    pub fn remove(&mut self, app_id: u32, resource_id: u64) -> Option<Resource> {
        let e = self.map.remove(&(app_id, resource_id))?;
        self.lru.remove(&e.stamp);
        self.bytes -= e.resource.content.len() as u64;
        Some(e.resource)
    }

    /// The keys, least recently used first.
    pub fn lru_order(&self) -> Vec<(u32, u64)> {
        self.lru.values().copied().collect()
    }

    /// Drops everything; returns how many entries there were.
    pub fn clear(&mut self) -> usize {
        let n = self.map.len();
        self.map.clear();
        self.lru.clear();
        self.bytes = 0;
        n
    }

    /// Entries stored.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Content bytes stored.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The budget in content bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;

    fn res(app: u32, id: u64, len: usize) -> Resource {
        Resource {
            app_id: app,
            task_id: 1,
            resource_id: id,
            version: 1,
            kind: 2,
            content: vec![id as u8; len].into(),
            tree_root: [0; 48],
            source: Source::Prefetched,
            verified_ns: 0,
        }
    }

    #[test]
    fn kind_one_is_code() {
        let mut r = res(1, 1, 1);
        assert!(!r.is_code());
        r.kind = 1;
        assert!(r.is_code());
    }

    #[test]
    fn evicts_least_recently_used_within_the_budget() {
        let mut s = VerifiedStore::new(100);
        assert!(s.insert(res(1, 1, 40)).is_empty());
        assert!(s.insert(res(1, 2, 40)).is_empty());
        // A claim of 1 makes 2 the least recently used.
        assert!(s.claim(1, 1).unwrap().staged);
        assert_eq!(s.lru_order(), [(1, 2), (1, 1)]);
        let ev = s.insert(res(1, 3, 40));
        assert_eq!(ev.iter().map(|r| r.resource_id).collect::<Vec<_>>(), [2]);
        assert!(s.bytes() <= s.budget());
        // Replacing the same (app, resource) is not an eviction.
        assert!(s.insert(res(1, 3, 10)).is_empty());
        assert_eq!(s.bytes(), 50);
        // One resource larger than the budget is kept alone.
        let ev = s.insert(res(1, 4, 150));
        assert_eq!(ev.len(), 2);
        assert_eq!((s.len(), s.bytes()), (1, 150));
        assert_eq!(s.clear(), 1);
        assert!(s.is_empty() && s.lru_order().is_empty());
    }

    #[test]
    fn content_is_the_object_after_its_header_without_a_copy() {
        let object: Vec<u8> = (0..10).collect();
        let at = object.as_ptr() as usize;
        let c = Content::from_object(object, 4);
        assert_eq!(c.as_slice(), &[4, 5, 6, 7, 8, 9]);
        assert_eq!(c.as_ptr() as usize, at + 4, "the same allocation");
        assert_eq!(c, Content::from(vec![4u8, 5, 6, 7, 8, 9]));
        assert_ne!(c, Content::from(vec![4u8, 5, 6]));
        let share = c.clone();
        assert_eq!((c.shares(), share.len()), (2, 6));
        assert!(
            Content::from_object(vec![1, 2], 3).is_empty(),
            "past the end: empty"
        );
        assert!(Content::default().is_empty());
    }

    #[test]
    fn a_claim_shares_and_keeps_the_entry() {
        let mut s = VerifiedStore::new(100);
        s.insert(res(1, 1, 10));
        let first = s.claim(1, 1).unwrap();
        assert!(first.staged);
        assert_eq!(first.resource.source, Source::Prefetched);
        let again = s.claim(1, 1).unwrap();
        assert!(!again.staged);
        assert_eq!(again.resource.source, Source::Cached);
        assert_eq!(again.resource.content, vec![1u8; 10]);
        assert_eq!((s.len(), s.bytes()), (1, 10));
        // Another app has no entry; removal leaves the shares handed out intact.
        assert!(s.claim(2, 1).is_none());
        assert!(s.remove(1, 1).is_some());
        assert_eq!(first.resource.content, vec![1u8; 10]);
        assert_eq!(first.resource.content.shares(), 2);
        // A demanded entry's claims are cache hits, never staged hits.
        let mut d = res(1, 2, 5);
        d.source = Source::Demanded;
        s.insert(d);
        assert!(!s.claim(1, 2).unwrap().staged);
    }
}
