//! The prefetch policy: what to stage, within which budget, and when a staged resource is
//! stale.
//!
//! - **Budget**: the guest's verified cache holds at most `budget_bytes` (the VM is started
//!   with its store sized to the budget, `see.store_kib`). It keeps prefetched and demanded
//!   bundles, claimed or not, and when a new one does not fit evicts the least recently used
//!   first (and reports each eviction). The PTO mirrors that cache ([`GuestStore`]) and
//!   orders a resource only when what the cache would push out to make room is something it
//!   no longer wants, or wants less than the new one, and never something the current
//!   request needs.
//! - **Threshold**: only predictions with a probability of at least `threshold` are staged;
//!   at most `top_k` predictions are considered per request.
//! - **Order**: predictions most likely first, and within one the request type's tasks in
//!   dependency order, each task's resources in catalogue order: what is claimed first is
//!   staged first.
//! - **No duplicates**: a resource already staged (or ordered) is not staged again; it is
//!   marked as still wanted.
//! - **Stale**: a staged resource is stale when the session that ordered it has moved on and
//!   its latest predictions no longer need it, or when no prediction has wanted it for
//!   `stale_after` requests (any session: covers sessions that ended). The policy gives up on
//!   a stale resource: the guest keeps it (a later claim still counts as useful) until the
//!   store pushes it out for newer bundles.
//! - **Cache**: a claim leaves the resource in the guest's cache, so what the guest still
//!   holds is never ordered again: a prediction that wants it stages it again without a
//!   transfer (counted as `readopted`).

use std::collections::{BTreeMap, HashMap, HashSet};

/// Policy parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Bytes staged and unclaimed at any time, at most.
    pub budget_bytes: u64,
    /// Smallest probability worth staging.
    pub threshold: f32,
    /// Predictions considered per request.
    pub top_k: usize,
    /// Requests after which a resource no prediction wants is stale.
    pub stale_after: u64,
}

impl Default for Policy {
    /// 16 MiB (about half of the shop catalogue's 29 MiB), 5 %, top 3, stale after 2
    /// requests: on the shop catalogue and the generated workloads this meets the demo's
    /// targets in the replay simulation (`pto simulate`).
    fn default() -> Self {
        Self {
            budget_bytes: 16 << 20,
            threshold: 0.05,
            top_k: 3,
            stale_after: 2,
        }
    }
}

/// A [`Policy`] value out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// The threshold is not a probability.
    #[error("threshold {0} is not in 0..=1: give a probability")]
    Threshold(f32),
    /// Too few or too many predictions considered.
    #[error("top_k {0} is not in 1..=64")]
    TopK(usize),
    /// Staged resources would go stale at once.
    #[error("stale_after must be at least 1 request")]
    StaleAfter,
}

impl Policy {
    /// Checks the values; the error says which one is wrong.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(PolicyError::Threshold(self.threshold));
        }
        if self.top_k == 0 || self.top_k > 64 {
            return Err(PolicyError::TopK(self.top_k));
        }
        if self.stale_after == 0 {
            return Err(PolicyError::StaleAfter);
        }
        Ok(())
    }
}

/// A resource the orchestrator wants staged.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Want {
    pub resource: usize,
    pub task: usize,
    pub app: u32,
    pub bytes: u64,
    pub version: u64,
    pub probability: f32,
    pub for_request: String,
}

/// A staged (or ordered) resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Staged {
    /// Catalogue index of the resource.
    pub resource: usize,
    /// Its length.
    pub bytes: u64,
    /// Session whose prediction ordered it.
    pub session: u64,
    /// Probability of the latest prediction that wanted it.
    pub probability: f32,
    /// Request clock when a prediction last wanted it.
    pub wanted_at: u64,
}

/// What [`Staging::admit`] did.
#[derive(Debug, PartialEq)]
pub(crate) enum Admit {
    /// Already staged: marked as wanted.
    Refreshed,
    /// Ordered now. Making room pushes `pushed_out` (oldest first) out of the guest's store;
    /// `displaced` are those of them the policy still wanted (now removed from staging).
    Ordered {
        /// Resources the guest's store evicts to make room.
        pushed_out: Vec<usize>,
        /// The wanted ones among them.
        displaced: Vec<Staged>,
    },
    /// Does not fit the budget without pushing out something wanted more.
    Skipped,
}

/// The PTO's mirror of the guest's verified cache: what was sent (prefetched or demanded) and
/// is still there (evictions and rejections leave it; claims refresh it), least recently used
/// first, as the guest driver evicts.
#[derive(Clone, Debug, Default)]
pub struct GuestStore {
    /// Arrival stamp -> resource.
    order: BTreeMap<u64, usize>,
    /// Resource -> (arrival stamp, bytes).
    held: HashMap<usize, (u64, u64)>,
    bytes: u64,
    next: u64,
}

impl GuestStore {
    /// Bytes held (or on their way).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether `resource` is held (or on its way).
    pub fn contains(&self, resource: usize) -> bool {
        self.held.contains_key(&resource)
    }

    /// A bundle for `resource` was sent.
    pub(crate) fn arrive(&mut self, resource: usize, bytes: u64) {
        self.leave(resource);
        self.next += 1;
        self.order.insert(self.next, resource);
        self.held.insert(resource, (self.next, bytes));
        self.bytes += bytes;
    }

    /// `resource` was used (claimed, or demand-fetched into the store): it becomes the most
    /// recently used, as in the guest's LRU cache. False if it is not held.
    pub(crate) fn touch(&mut self, resource: usize) -> bool {
        let Some((stamp, bytes)) = self.held.get(&resource).copied() else {
            return false;
        };
        self.order.remove(&stamp);
        self.next += 1;
        self.order.insert(self.next, resource);
        self.held.insert(resource, (self.next, bytes));
        true
    }

    /// `resource` left the store (evicted, rejected); false if it was not there.
    pub(crate) fn leave(&mut self, resource: usize) -> bool {
        let Some((stamp, bytes)) = self.held.remove(&resource) else {
            return false;
        };
        self.order.remove(&stamp);
        self.bytes -= bytes;
        true
    }

    /// The least recently used resources, skipping those `spare` keeps, whose removal makes
    /// room for `bytes` more within `budget` (the host evicts them itself, so the guest's own
    /// LRU never has to choose); None if the others are not enough.
    pub(crate) fn victims_sparing(
        &self,
        bytes: u64,
        budget: u64,
        spare: impl Fn(usize) -> bool,
    ) -> Option<Vec<usize>> {
        let mut need = (self.bytes + bytes).saturating_sub(budget);
        let mut out = Vec::new();
        for &r in self.order.values() {
            if need == 0 {
                break;
            }
            if spare(r) {
                continue;
            }
            need = need.saturating_sub(self.held[&r].1);
            out.push(r);
        }
        (need == 0).then_some(out)
    }
}

/// The PTO's view of the guest's staging area.
#[derive(Clone, Debug, Default)]
pub struct Staging {
    entries: HashMap<usize, Staged>,
    bytes: u64,
}

impl Staging {
    /// Bytes staged and unclaimed.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether `resource` is staged.
    pub fn contains(&self, resource: usize) -> bool {
        self.entries.contains_key(&resource)
    }

    /// Number of staged resources.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes `resource` (claimed, evicted or rejected).
    pub fn remove(&mut self, resource: usize) -> Option<Staged> {
        let s = self.entries.remove(&resource)?;
        self.bytes -= s.bytes;
        Some(s)
    }

    /// Removes everything.
    pub fn drain(&mut self) -> Vec<Staged> {
        self.bytes = 0;
        let mut v: Vec<Staged> = self.entries.drain().map(|(_, s)| s).collect();
        v.sort_by_key(|s| s.resource);
        v
    }

    /// Evicts what is stale at `clock` for a request of `session` (see the module docs);
    /// `keep` holds what the session wants now or is about to claim.
    pub(crate) fn evict_stale(
        &mut self,
        session: u64,
        keep: &HashSet<usize>,
        clock: u64,
        stale_after: u64,
    ) -> Vec<Staged> {
        let mut stale: Vec<usize> = self
            .entries
            .values()
            .filter(|s| !keep.contains(&s.resource))
            .filter(|s| s.session == session || clock.saturating_sub(s.wanted_at) >= stale_after)
            .map(|s| s.resource)
            .collect();
        stale.sort_unstable();
        stale.into_iter().filter_map(|r| self.remove(r)).collect()
    }

    /// Stages `want` for `session` if it is not staged yet and fits the budget: the bundles
    /// the guest's `store` would push out to make room must all be ones the policy gave up on
    /// or wants less than `want` (and not in `keep`, what the current request needs).
    pub(crate) fn admit(
        &mut self,
        want: &Want,
        session: u64,
        keep: &HashSet<usize>,
        clock: u64,
        budget: u64,
        store: &GuestStore,
    ) -> Admit {
        if let Some(s) = self.entries.get_mut(&want.resource) {
            s.wanted_at = clock;
            s.probability = s.probability.max(want.probability);
            s.session = session;
            return Admit::Refreshed;
        }
        if want.bytes > budget {
            return Admit::Skipped;
        }
        // The victims are chosen here (and evicted by the host before the bundle is sent):
        // the least recently used ones the policy does not want as much, never what the
        // current request needs, staged or merely cached.
        let spare = |r: usize| {
            keep.contains(&r)
                || self
                    .entries
                    .get(&r)
                    .is_some_and(|s| s.probability >= want.probability)
        };
        let Some(pushed_out) = store.victims_sparing(want.bytes, budget, spare) else {
            return Admit::Skipped;
        };
        let displaced = pushed_out.iter().filter_map(|&r| self.remove(r)).collect();
        self.insert(want, session, clock);
        Admit::Ordered {
            pushed_out,
            displaced,
        }
    }

    /// Stages `want` again without ordering it: the guest still holds the copy sent before.
    pub(crate) fn readopt(&mut self, want: &Want, session: u64, clock: u64) {
        if !self.entries.contains_key(&want.resource) {
            self.insert(want, session, clock);
        }
    }

    fn insert(&mut self, want: &Want, session: u64, clock: u64) {
        self.bytes += want.bytes;
        self.entries.insert(
            want.resource,
            Staged {
                resource: want.resource,
                bytes: want.bytes,
                session,
                probability: want.probability,
                wanted_at: clock,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(resource: usize, bytes: u64, probability: f32) -> Want {
        Want {
            resource,
            task: 0,
            app: 1,
            bytes,
            version: 1,
            probability,
            for_request: "x".into(),
        }
    }

    /// Admits `w` against `store`, recording what the guest's store would do.
    fn order(
        s: &mut Staging,
        store: &mut GuestStore,
        w: &Want,
        keep: &HashSet<usize>,
        budget: u64,
    ) -> Admit {
        let a = s.admit(w, 1, keep, 0, budget, store);
        if let Admit::Ordered { pushed_out, .. } = &a {
            for &r in pushed_out {
                assert!(store.leave(r));
            }
            store.arrive(w.resource, w.bytes);
        }
        a
    }

    #[test]
    fn admits_once_within_budget() {
        let (mut s, mut store) = (Staging::default(), GuestStore::default());
        let keep = HashSet::new();
        assert_eq!(
            order(&mut s, &mut store, &want(1, 60, 0.5), &keep, 100),
            Admit::Ordered {
                pushed_out: vec![],
                displaced: vec![]
            }
        );
        assert_eq!(
            order(&mut s, &mut store, &want(1, 60, 0.9), &keep, 100),
            Admit::Refreshed
        );
        assert_eq!((s.bytes(), store.bytes()), (60, 60));
        // Too big for the budget at all.
        assert_eq!(
            order(&mut s, &mut store, &want(2, 101, 1.0), &keep, 100),
            Admit::Skipped
        );
        // Needs room: resource 1 is wanted at 0.9 now, so a 0.8 does not push it out.
        assert_eq!(
            order(&mut s, &mut store, &want(3, 50, 0.8), &keep, 100),
            Admit::Skipped
        );
        // A more likely one does.
        match order(&mut s, &mut store, &want(3, 50, 0.95), &keep, 100) {
            Admit::Ordered {
                pushed_out,
                displaced,
            } => {
                assert_eq!(pushed_out, [1]);
                assert_eq!(
                    displaced.iter().map(|d| d.resource).collect::<Vec<_>>(),
                    [1]
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!((s.bytes(), s.len(), store.bytes()), (50, 1, 50));
        // What the request wants now is never pushed out.
        let keep: HashSet<usize> = [3].into();
        assert_eq!(
            order(&mut s, &mut store, &want(4, 60, 1.0), &keep, 100),
            Admit::Skipped
        );
        assert!(store.bytes() <= 100);
    }

    #[test]
    fn the_store_pushes_out_the_oldest_first_given_up_or_not() {
        let (mut s, mut store) = (Staging::default(), GuestStore::default());
        let none = HashSet::new();
        for r in 1..=3 {
            order(&mut s, &mut store, &want(r, 30, 0.5), &none, 100);
        }
        // The policy gives up on 2 (stale); the guest still holds it.
        assert!(s.remove(2).is_some());
        assert_eq!((s.bytes(), store.bytes()), (60, 90));
        // 50 more bytes: the store would evict 1 then 2 (oldest first); 1 is wanted at 0.5.
        assert_eq!(
            order(&mut s, &mut store, &want(4, 50, 0.5), &none, 100),
            Admit::Skipped
        );
        match order(&mut s, &mut store, &want(4, 50, 0.7), &none, 100) {
            Admit::Ordered {
                pushed_out,
                displaced,
            } => {
                assert_eq!(pushed_out, [1, 2]);
                assert_eq!(displaced.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!((store.bytes(), store.contains(2)), (80, false));
        // Readopting what the guest still holds stages it again without a new order.
        assert!(s.remove(3).is_some());
        s.readopt(&want(3, 30, 0.9), 1, 1);
        assert_eq!((s.len(), s.bytes(), store.bytes()), (2, 80, 80));
        // A claim leaves the store; leaving twice is refused.
        assert!(store.leave(3) && !store.leave(3));
    }

    #[test]
    fn stale_means_unwanted_by_its_session_or_old() {
        let mut s = Staging::default();
        let none = HashSet::new();
        let store = GuestStore::default();
        for (r, session) in [(1, 1), (2, 1), (3, 2)] {
            s.admit(&want(r, 10, 0.5), session, &none, 0, 1000, &store);
        }
        // Session 1 moves on and still wants 2: 1 is stale, 3 (session 2) is young.
        let keep: HashSet<usize> = [2].into();
        let gone: Vec<usize> = s
            .evict_stale(1, &keep, 1, 3)
            .iter()
            .map(|x| x.resource)
            .collect();
        assert_eq!(gone, [1]);
        // Three requests later nobody wanted 3: stale by age; 2 is kept by its session.
        let gone: Vec<usize> = s
            .evict_stale(1, &keep, 3, 3)
            .iter()
            .map(|x| x.resource)
            .collect();
        assert_eq!(gone, [3]);
        assert_eq!((s.len(), s.bytes()), (1, 10));
        assert_eq!(s.remove(2).unwrap().bytes, 10);
        assert!(s.is_empty() && s.remove(2).is_none());
    }

    #[test]
    fn validate_names_the_bad_value() {
        assert!(Policy::default().validate().is_ok());
        let bad = Policy {
            threshold: 1.5,
            ..Policy::default()
        };
        assert_eq!(bad.validate(), Err(PolicyError::Threshold(1.5)));
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("threshold"));
        let bad = Policy {
            top_k: 0,
            ..Policy::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("top_k"));
    }
}
