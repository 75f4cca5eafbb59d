//! The verified store: bundles that passed every check, in private memory, indexed by
//! (task id, resource id), bounded by a byte budget.
//!
//! Only the driver inserts (after verification); a claim moves the entry out.

use alloc::{collections::BTreeMap, vec::Vec};

/// How a resource reached the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Pushed by the PTO before the task asked.
    Prefetched,
    /// Fetched on demand after a miss.
    Demanded,
}

/// A verified resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The app allowed to claim it (signed).
    pub app_id: u32,
    /// The task it belongs to (signed).
    pub task_id: u64,
    /// The resource id (signed).
    pub resource_id: u64,
    /// The resource version (signed).
    pub version: u64,
    /// Bundle kind (1 code, 2 data; signed).
    pub kind: u16,
    /// The content, verified against the signed SHA-384.
    pub content: Vec<u8>,
    /// The SHA-384 of `content`, checked against the signed header: users need not hash the
    /// bytes again.
    pub content_sha384: [u8; 48],
    /// Prefetched or demanded.
    pub source: Source,
    /// `Platform::now_ns` when it was verified.
    pub verified_ns: u64,
}

#[derive(Debug)]
struct Entry {
    resource: Resource,
    /// Insertion order, for eviction of the oldest.
    stamp: u64,
}

/// The store.
#[derive(Debug)]
pub struct VerifiedStore {
    map: BTreeMap<(u64, u64), Entry>,
    bytes: u64,
    budget: u64,
    stamp: u64,
}

impl VerifiedStore {
    /// An empty store holding at most `budget` content bytes.
    pub fn new(budget: u64) -> Self {
        Self {
            map: BTreeMap::new(),
            bytes: 0,
            budget,
            stamp: 0,
        }
    }

    /// Inserts `r`, replacing an entry for the same (task, resource) and evicting the oldest
    /// entries while over budget. Returns what was evicted. A resource larger than the whole
    /// budget is still kept (alone) so a demanded resource can always be handed over.
    pub fn insert(&mut self, r: Resource) -> Vec<Resource> {
        let mut evicted = Vec::new();
        let key = (r.task_id, r.resource_id);
        if let Some(old) = self.map.remove(&key) {
            self.bytes -= old.resource.content.len() as u64;
            evicted.push(old.resource);
        }
        let len = r.content.len() as u64;
        while self.bytes + len > self.budget {
            let Some((&oldest, _)) = self.map.iter().min_by_key(|(_, e)| e.stamp) else {
                break;
            };
            if let Some(e) = self.map.remove(&oldest) {
                self.bytes -= e.resource.content.len() as u64;
                evicted.push(e.resource);
            }
        }
        self.stamp += 1;
        self.bytes += len;
        self.map.insert(
            key,
            Entry {
                resource: r,
                stamp: self.stamp,
            },
        );
        evicted
    }

    /// The entry for (task, resource), if any.
    pub fn get(&self, task_id: u64, resource_id: u64) -> Option<&Resource> {
        self.map.get(&(task_id, resource_id)).map(|e| &e.resource)
    }

    /// Moves the entry for (task, resource) out of the store.
    pub fn take(&mut self, task_id: u64, resource_id: u64) -> Option<Resource> {
        let e = self.map.remove(&(task_id, resource_id))?;
        self.bytes -= e.resource.content.len() as u64;
        Some(e.resource)
    }

    /// Drops everything; returns how many entries there were.
    pub fn clear(&mut self) -> usize {
        let n = self.map.len();
        self.map.clear();
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
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;

    fn res(task: u64, id: u64, len: usize) -> Resource {
        Resource {
            app_id: 1,
            task_id: task,
            resource_id: id,
            version: 1,
            kind: 2,
            content: vec![id as u8; len],
            content_sha384: [0; 48],
            source: Source::Prefetched,
            verified_ns: 0,
        }
    }

    #[test]
    fn replaces_evicts_oldest_and_takes() {
        let mut s = VerifiedStore::new(100);
        assert!(s.insert(res(1, 1, 40)).is_empty());
        assert!(s.insert(res(1, 2, 40)).is_empty());
        let ev = s.insert(res(1, 3, 40));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].resource_id, 1);
        let ev = s.insert(res(1, 2, 10));
        assert_eq!(ev[0].resource_id, 2);
        assert_eq!(s.bytes(), 50);
        assert_eq!(s.take(1, 3).unwrap().content, vec![3u8; 40]);
        assert!(s.take(1, 3).is_none());
        assert_eq!(s.clear(), 1);
        assert!(s.is_empty());
    }
}
