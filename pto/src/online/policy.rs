//! The prefetch policy: what to stage, within which budget, and when a staged resource is
//! stale.
//!
//! - **Budget**: the bytes staged and not yet claimed never exceed `budget_bytes`.
//! - **Threshold**: only predictions with a probability of at least `threshold` are staged;
//!   at most `top_k` predictions are considered per request.
//! - **Order**: predictions most likely first, and within one the request type's tasks in
//!   dependency order, each task's resources in catalogue order: what is claimed first is
//!   staged first.
//! - **No duplicates**: a resource already staged (or ordered) is not staged again; it is
//!   marked as still wanted.
//! - **Stale**: a staged resource is stale when the session that ordered it has moved on and
//!   its latest predictions no longer need it, or when no prediction has wanted it for
//!   `stale_after` requests (any session: covers sessions that ended). Stale resources are
//!   evicted first; under budget pressure, resources wanted with a lower probability than
//!   the new one are displaced.
//! - A claim consumes the staged copy (the guest moves it to the task), so a resource that the
//!   current request claims and the next one needs again is re-staged after the request
//!   completes.

use std::collections::{HashMap, HashSet};

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
    /// 40 MiB, 5 %, top 3, stale after 2 requests: on the shop catalogue and the generated
    /// workloads this meets the demo's targets in the replay simulation (`pto simulate`).
    fn default() -> Self {
        Self {
            budget_bytes: 40 << 20,
            threshold: 0.05,
            top_k: 3,
            stale_after: 2,
        }
    }
}

impl Policy {
    /// Checks the values; the error says which one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(format!("threshold {} is not in 0..=1", self.threshold));
        }
        if self.top_k == 0 || self.top_k > 64 {
            return Err(format!("top_k {} is not in 1..=64", self.top_k));
        }
        if self.stale_after == 0 {
            return Err("stale_after must be at least 1 request".into());
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
    /// Staged now, after displacing these.
    Ordered(Vec<Staged>),
    /// Does not fit the budget.
    Skipped,
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

    /// Stages `want` for `session` if it is not staged yet and fits the budget, displacing
    /// resources outside `keep` wanted with a lower probability if it must.
    pub(crate) fn admit(
        &mut self,
        want: &Want,
        session: u64,
        keep: &HashSet<usize>,
        clock: u64,
        budget: u64,
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
        let mut displaced = Vec::new();
        if self.bytes + want.bytes > budget {
            let mut victims: Vec<&Staged> = self
                .entries
                .values()
                .filter(|s| !keep.contains(&s.resource) && s.probability < want.probability)
                .collect();
            victims.sort_by(|a, b| {
                a.probability
                    .total_cmp(&b.probability)
                    .then(a.wanted_at.cmp(&b.wanted_at))
                    .then(a.resource.cmp(&b.resource))
            });
            let freeable: u64 = victims.iter().map(|s| s.bytes).sum();
            if self.bytes - freeable + want.bytes > budget {
                return Admit::Skipped;
            }
            let mut need = self.bytes + want.bytes - budget;
            let chosen: Vec<usize> = victims
                .into_iter()
                .take_while(|s| {
                    let take = need > 0;
                    need = need.saturating_sub(s.bytes);
                    take
                })
                .map(|s| s.resource)
                .collect();
            displaced.extend(chosen.into_iter().filter_map(|r| self.remove(r)));
        }
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
        Admit::Ordered(displaced)
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

    #[test]
    fn admits_once_within_budget() {
        let mut s = Staging::default();
        let keep = HashSet::new();
        assert_eq!(
            s.admit(&want(1, 60, 0.5), 1, &keep, 0, 100),
            Admit::Ordered(vec![])
        );
        assert_eq!(
            s.admit(&want(1, 60, 0.9), 1, &keep, 1, 100),
            Admit::Refreshed
        );
        assert_eq!(s.bytes(), 60);
        // Too big for the budget at all.
        assert_eq!(
            s.admit(&want(2, 101, 1.0), 1, &keep, 1, 100),
            Admit::Skipped
        );
        // Needs room: resource 1 is wanted at 0.9 now, so a 0.8 does not displace it.
        assert_eq!(s.admit(&want(3, 50, 0.8), 1, &keep, 1, 100), Admit::Skipped);
        // A more likely one does.
        match s.admit(&want(3, 50, 0.95), 2, &keep, 1, 100) {
            Admit::Ordered(d) => assert_eq!(d.iter().map(|d| d.resource).collect::<Vec<_>>(), [1]),
            other => panic!("{other:?}"),
        }
        assert_eq!((s.bytes(), s.len()), (50, 1));
        // What the request wants now is never displaced.
        let keep: HashSet<usize> = [3].into();
        assert_eq!(s.admit(&want(4, 60, 1.0), 2, &keep, 1, 100), Admit::Skipped);
        assert!(s.bytes() <= 100);
    }

    #[test]
    fn stale_means_unwanted_by_its_session_or_old() {
        let mut s = Staging::default();
        let none = HashSet::new();
        for (r, session) in [(1, 1), (2, 1), (3, 2)] {
            s.admit(&want(r, 10, 0.5), session, &none, 0, 1000);
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
        assert!(bad.validate().unwrap_err().contains("threshold"));
        let bad = Policy {
            top_k: 0,
            ..Policy::default()
        };
        assert!(bad.validate().unwrap_err().contains("top_k"));
    }
}
