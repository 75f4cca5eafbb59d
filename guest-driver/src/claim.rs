//! The claim API: `available`, `claim`, `claim_or_fetch` (demand fetch on a miss), requests
//! from requestq and their completion, and the reports sent on ctrlq. Claims are served from
//! the verified cache (`store.rs`) and leave the resource cached, unless the cache is off
//! ([`crate::DriverConfig::cache`]): then a claim consumes the resource.

use log::debug;

use crate::{
    driver::{AckState, ClaimError, CtrlPurpose, DriverState, PendingDemand},
    msg::{self, RejectReason, ReportKind},
    platform::Platform,
    store::{Resource, Source},
    verify::Ids,
    Driver, IncomingRequest, RequestCompletion,
};

impl<P: Platform> Driver<P> {
    fn ready(&self) -> Result<(), ClaimError> {
        match self.state {
            DriverState::Ready => Ok(()),
            DriverState::Broken(why) => Err(ClaimError::DeviceBroken(why)),
        }
    }

    /// The highest version ever accepted for `resource_id` (its floor).
    fn floor(&self, resource_id: u64) -> u64 {
        self.versions.get(&resource_id).copied().unwrap_or(0)
    }

    /// True if a verified resource for (task, resource) that `app_id` may claim is cached (at
    /// its version floor). Answers false at once when the device is broken.
    pub fn available(&mut self, app_id: u32, task_id: u64, resource_id: u64) -> bool {
        self.poll_rings();
        let floor = self.floor(resource_id);
        self.state == DriverState::Ready
            && self.registry.permits(app_id, task_id, resource_id)
            && self
                .store
                .get(app_id, resource_id)
                .is_some_and(|r| r.version >= floor)
    }

    /// A share of the cached, verified resource `app_id`'s `task_id` could claim (at its
    /// version floor), without claiming it: no report, no change to its LRU place or to
    /// whether its next claim counts as a staged hit. For work the app prepares ahead of the
    /// request that will claim it (the SEE compiles code resources this way); the access rule
    /// is the claim's (the registry must give (task, resource) to the app), and the request
    /// still claims the resource through [`Driver::claim`] before using what was prepared.
    pub fn peek(&mut self, app_id: u32, task_id: u64, resource_id: u64) -> Option<Resource> {
        if !self.available(app_id, task_id, resource_id) {
            return None;
        }
        self.store.get(app_id, resource_id).cloned()
    }

    /// Length of the cached resource `app_id` could claim, if any (for callers that size a
    /// buffer first, like the C ABI).
    pub fn staged_len(&mut self, app_id: u32, task_id: u64, resource_id: u64) -> Option<usize> {
        if !self.available(app_id, task_id, resource_id) {
            return None;
        }
        self.store.get(app_id, resource_id).map(|r| r.content.len())
    }

    /// Hands a share of a cached, verified resource to the caller and reports ClaimHit (the
    /// first claim of a prefetched resource), CacheHit (any other cached one) or Miss. The
    /// resource stays cached. The registry is checked on every claim: a (task, resource) the
    /// app does not own is refused, whatever the cache holds.
    pub fn claim(
        &mut self,
        app_id: u32,
        task_id: u64,
        resource_id: u64,
    ) -> Result<Resource, ClaimError> {
        self.claim_at(app_id, task_id, resource_id, 0)
    }

    /// [`Driver::claim`] of at least `min_version`: a cached copy below it (or below the
    /// resource's version floor) is dropped (reported as evicted) and the claim misses.
    pub fn claim_at(
        &mut self,
        app_id: u32,
        task_id: u64,
        resource_id: u64,
        min_version: u64,
    ) -> Result<Resource, ClaimError> {
        let start = self.p.now_ns();
        self.poll_rings();
        self.ready()?;
        if !self.registry.permits(app_id, task_id, resource_id) {
            return Err(ClaimError::AccessDenied {
                app_id,
                task_id,
                resource_id,
            });
        }
        let floor = self.floor(resource_id).max(min_version);
        if self
            .store
            .get(app_id, resource_id)
            .is_some_and(|r| r.version < floor)
        {
            if let Some(stale) = self.store.remove(app_id, resource_id) {
                self.counters.evicted += 1;
                self.report_resource(ReportKind::Evict, &stale, 0);
            }
        }
        match self.store.claim(app_id, resource_id) {
            Some(hit) => {
                let kind = if hit.staged {
                    self.counters.hits += 1;
                    ReportKind::ClaimHit
                } else {
                    self.counters.cache_hits += 1;
                    ReportKind::CacheHit
                };
                let mut r = hit.resource;
                if !self.config.cache {
                    // Consumed: the share handed over stays valid, the entry goes.
                    let _ = self.store.remove(app_id, resource_id);
                }
                let latency = self.p.now_ns().saturating_sub(start);
                // Reported for the claiming task (the bundle may have been sent for another
                // task of the same app).
                r.task_id = task_id;
                self.report_resource(kind, &r, latency);
                Ok(r)
            }
            None => {
                self.counters.misses += 1;
                let ids = Ids {
                    app_id,
                    task_id,
                    resource_id,
                    version: 0,
                };
                self.report(ReportKind::Miss, None, ids, 0);
                Err(ClaimError::NotStaged)
            }
        }
    }

    /// [`Driver::claim_at`], and on a miss a demand fetch over ctrlq: sends Demand, waits
    /// (with the configured deadlines) for its Ack and then its bundle, verifies it like any
    /// other, caches it and hands a share over. A broken device fails at once.
    pub fn claim_or_fetch(
        &mut self,
        app_id: u32,
        task_id: u64,
        resource_id: u64,
        min_version: u64,
    ) -> Result<Resource, ClaimError> {
        match self.claim_at(app_id, task_id, resource_id, min_version) {
            Err(ClaimError::NotStaged) => self.fetch(app_id, task_id, resource_id, min_version),
            other => other,
        }
    }

    /// A demand fetch, whatever the cache holds: the bundle that comes (or a prefetch of the
    /// same resource that overtakes it) enters the cache and a share is handed over. Asks for
    /// at least `min_version` and at least the highest version already accepted for the
    /// resource.
    pub fn fetch(
        &mut self,
        app_id: u32,
        task_id: u64,
        resource_id: u64,
        min_version: u64,
    ) -> Result<Resource, ClaimError> {
        let start = self.p.now_ns();
        self.ready()?;
        if !self.registry.permits(app_id, task_id, resource_id) {
            return Err(ClaimError::AccessDenied {
                app_id,
                task_id,
                resource_id,
            });
        }
        // Never ask for less than what was already accepted (it would be refused as a rollback).
        let min_version = min_version.max(self.floor(resource_id));
        let cookie = self.next_cookie;
        self.next_cookie = self.next_cookie.checked_add(1).unwrap_or(1);
        self.demands.insert(
            cookie,
            PendingDemand {
                app_id,
                task_id,
                resource_id,
                min_version,
                ack: AckState::Pending,
                outcome: None,
                arrived: 0,
            },
        );
        let result = self.run_demand(cookie, start);
        self.demands.remove(&cookie);
        match &result {
            Ok(r) => {
                self.counters.demands_served += 1;
                self.consume(app_id, resource_id);
                let latency = self.p.now_ns().saturating_sub(start);
                self.report_resource(ReportKind::DemandServed, r, latency);
                self.flush();
            }
            Err(e) => {
                debug!("virtio-prefetch: demand {cookie} failed: {e}");
                self.counters.demands_failed += 1;
            }
        }
        result
    }

    fn run_demand(&mut self, cookie: u32, start: u64) -> Result<Resource, ClaimError> {
        let Some(d) = self.demands.get(&cookie) else {
            return Err(ClaimError::NotStaged);
        };
        let m = msg::encode_demand(cookie, d.app_id, d.task_id, d.resource_id, d.min_version);
        self.send_ctrl(CtrlPurpose::Demand(cookie), &m, true)?;
        let ack_deadline = start.saturating_add(self.config.ctrl_timeout_ns);
        let done = |d: &Self| {
            d.demands
                .get(&cookie)
                .is_none_or(|p| p.ack != AckState::Pending || p.outcome.is_some())
        };
        self.wait_until(ack_deadline, done)?;
        let ack = self.demands.get(&cookie).map(|p| p.ack);
        match ack {
            Some(AckState::Status(s)) => return Err(ClaimError::Refused(s)),
            Some(AckState::Garbled) => return Err(ClaimError::BadAck),
            _ => {}
        }
        let deadline = start.saturating_add(self.config.demand_timeout_ns);
        let Some(p) = self.demands.get(&cookie) else {
            return Err(ClaimError::NotStaged);
        };
        let (app_id, resource_id, min_version) = (p.app_id, p.resource_id, p.min_version);
        // A prefetch of the same resource may overtake the demanded bundle: take either (but
        // not a copy cached before the demand, which the caller chose to bypass).
        let staged = move |d: &Self| {
            d.store
                .get(app_id, resource_id)
                .is_some_and(|r| r.version >= min_version && r.verified_ns >= start)
        };
        let arrived =
            |d: &Self| staged(d) || d.demands.get(&cookie).is_none_or(|p| p.outcome.is_some());
        self.wait_until(deadline, arrived)?;
        match self.demands.get_mut(&cookie).and_then(|p| p.outcome.take()) {
            Some(Ok(r)) => Ok(r),
            Some(Err(reason)) => Err(ClaimError::Rejected(reason)),
            None => {
                let mut r = self
                    .store
                    .get(app_id, resource_id)
                    .cloned()
                    .ok_or(ClaimError::NotStaged)?;
                r.source = Source::Demanded;
                Ok(r)
            }
        }
    }

    /// The next request received on requestq, if any (polls first).
    pub fn next_request(&mut self) -> Option<IncomingRequest> {
        self.poll();
        self.requests.pop_front()
    }

    /// Sends a request completion with its timings on ctrlq (kicked now; does not wait for the
    /// Ack). At most 64 task entries are sent.
    pub fn complete_request(&mut self, completion: &RequestCompletion) -> Result<(), ClaimError> {
        self.poll();
        let m = msg::encode_complete(completion);
        self.send_ctrl(CtrlPurpose::Complete, &m, true)
    }

    pub(crate) fn report_resource(&mut self, kind: ReportKind, r: &Resource, latency: u64) {
        let ids = Ids {
            app_id: r.app_id,
            task_id: r.task_id,
            resource_id: r.resource_id,
            version: r.version,
        };
        self.report(kind, None, ids, latency);
    }

    /// Posts a Report without kicking (the next wait, completion or flush kicks). Dropped (and counted)
    /// when ctrlq is full or the device is broken: reports never block a claim.
    pub(crate) fn report(
        &mut self,
        kind: ReportKind,
        reason: Option<RejectReason>,
        ids: Ids,
        latency_ns: u64,
    ) {
        if self.state != DriverState::Ready {
            return;
        }
        let m = msg::encode_report(kind, reason, ids, latency_ns);
        let _ = self.send_ctrl(CtrlPurpose::Report, &m, false);
        // Reports ride along with the next kick (a wait, a completion, a flush); kick now
        // only when half of ctrlq is taken, so a claim normally costs no register access.
        if let Some(r) = self.rings.as_ref() {
            if u32::from(r.ctrlq.outstanding()) * 2 >= u32::from(self.config.ctrl_chains) {
                self.flush();
            }
        }
    }
}

impl<P: Platform> Driver<P> {
    /// A demanded resource was handed over: the cached copy counts as claimed (later claims
    /// are cache hits), or, without a cache, it is dropped.
    fn consume(&mut self, app_id: u32, resource_id: u64) {
        if self.config.cache {
            let _ = self.store.claim(app_id, resource_id);
        } else {
            let _ = self.store.remove(app_id, resource_id);
        }
    }

    /// Puts a resource back into the cache if it is no longer there (a claim leaves it cached,
    /// so this is only needed when it was evicted meanwhile). Dropped if the device broke, or
    /// if its version is below the resource's floor.
    pub fn restage(&mut self, resource: Resource) {
        if self.state != DriverState::Ready
            || self
                .store
                .get(resource.app_id, resource.resource_id)
                .is_some()
            || resource.version < self.floor(resource.resource_id)
        {
            return;
        }
        for old in self.store.insert(resource) {
            self.counters.evicted += 1;
            self.report_resource(ReportKind::Evict, &old, 0);
        }
    }
}

/// One demand of a [`Driver::claim_each`] batch in flight.
struct InFlight {
    index: usize,
    cookie: u32,
    task_id: u64,
    resource_id: u64,
    min_version: u64,
    start: u64,
}

impl<P: Platform> Driver<P> {
    /// Claims every (task, resource) of `wanted` for `app_id` and hands each to `ready(index,
    /// resource)` as soon as it is there: the cached ones at once, then the missing ones in the
    /// order their demanded bundles arrive (not the order asked). All the missing ones are
    /// demanded together, at most [`crate::DriverConfig::max_demands`] outstanding at a time (the next
    /// is sent as one arrives). Access is checked for every entry before anything is demanded.
    /// On the first error (access denied, a refused or rejected demand, a broken device, a
    /// missed deadline) the demands still outstanding are dropped and the error returned: a
    /// lost device fails the batch at once, not at its deadline.
    pub fn claim_each(
        &mut self,
        app_id: u32,
        wanted: &[(u64, u64)],
        min_version: u64,
        mut ready: impl FnMut(usize, Resource),
    ) -> Result<(), ClaimError> {
        self.ready()?;
        if let Some(&(task_id, resource_id)) = wanted
            .iter()
            .find(|&&(t, r)| !self.registry.permits(app_id, t, r))
        {
            return Err(ClaimError::AccessDenied {
                app_id,
                task_id,
                resource_id,
            });
        }
        let mut missing = alloc::collections::VecDeque::new();
        for (index, &(task_id, resource_id)) in wanted.iter().enumerate() {
            match self.claim_at(app_id, task_id, resource_id, min_version) {
                Ok(r) => ready(index, r),
                Err(ClaimError::NotStaged) => missing.push_back(index),
                Err(e) => return Err(e),
            }
        }
        let limit = usize::from(self.config.max_demands.max(1))
            .min(usize::from(self.config.ctrl_chains / 2).max(1));
        let mut inflight: alloc::vec::Vec<InFlight> = alloc::vec::Vec::new();
        let result = self.run_batch(
            app_id,
            wanted,
            min_version,
            limit,
            &mut missing,
            &mut inflight,
            &mut ready,
        );
        if result.is_err() {
            for f in inflight.drain(..) {
                self.demands.remove(&f.cookie);
                self.counters.demands_failed += 1;
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn run_batch(
        &mut self,
        app_id: u32,
        wanted: &[(u64, u64)],
        min_version: u64,
        limit: usize,
        missing: &mut alloc::collections::VecDeque<usize>,
        inflight: &mut alloc::vec::Vec<InFlight>,
        ready: &mut impl FnMut(usize, Resource),
    ) -> Result<(), ClaimError> {
        while !missing.is_empty() || !inflight.is_empty() {
            // Top up to the bound: every Demand posted, one kick for all of them.
            let mut sent = false;
            while inflight.len() < limit {
                let Some(index) = missing.pop_front() else {
                    break;
                };
                let Some(&(task_id, resource_id)) = wanted.get(index) else {
                    continue;
                };
                let min_version = min_version.max(self.floor(resource_id));
                let cookie = self.next_cookie;
                self.next_cookie = self.next_cookie.checked_add(1).unwrap_or(1);
                self.demands.insert(
                    cookie,
                    PendingDemand {
                        app_id,
                        task_id,
                        resource_id,
                        min_version,
                        ack: AckState::Pending,
                        outcome: None,
                        arrived: 0,
                    },
                );
                let start = self.p.now_ns();
                inflight.push(InFlight {
                    index,
                    cookie,
                    task_id,
                    resource_id,
                    min_version,
                    start,
                });
                let m = msg::encode_demand(cookie, app_id, task_id, resource_id, min_version);
                self.send_ctrl(CtrlPurpose::Demand(cookie), &m, false)?;
                sent = true;
            }
            if sent {
                self.flush();
            }
            // Wait for any of them to be answered (or arrive by a prefetch).
            let deadline = inflight
                .iter()
                .map(|f| {
                    let ack = self.demands.get(&f.cookie).map(|p| p.ack);
                    let budget = if ack == Some(AckState::Pending) {
                        self.config.ctrl_timeout_ns
                    } else {
                        self.config.demand_timeout_ns
                    };
                    f.start.saturating_add(budget)
                })
                .min()
                .unwrap_or(0);
            let answered = |d: &Self, f: &InFlight| {
                d.demands.get(&f.cookie).is_none_or(|p| {
                    p.outcome.is_some() || matches!(p.ack, AckState::Status(_) | AckState::Garbled)
                }) || d
                    .store
                    .get(app_id, f.resource_id)
                    .is_some_and(|r| r.version >= f.min_version && r.verified_ns >= f.start)
            };
            let pending = core::mem::take(inflight);
            self.wait_until(deadline, |d| pending.iter().any(|f| answered(d, f)))
                .inspect_err(|_| inflight.extend(pending.iter().map(|f| InFlight { ..*f })))?;
            let (mut done, waiting): (alloc::vec::Vec<InFlight>, _) =
                pending.into_iter().partition(|f| answered(self, f));
            inflight.extend(waiting);
            // Handed over in the order the bundles arrived (refusals first: they end the batch).
            done.sort_by_key(|f| self.demands.get(&f.cookie).map_or(0, |p| p.arrived));
            for f in done {
                let p = self.demands.remove(&f.cookie);
                let outcome = match p {
                    Some(PendingDemand {
                        ack: AckState::Status(s),
                        ..
                    }) => Err(ClaimError::Refused(s)),
                    Some(PendingDemand {
                        ack: AckState::Garbled,
                        ..
                    }) => Err(ClaimError::BadAck),
                    Some(PendingDemand {
                        outcome: Some(Err(reason)),
                        ..
                    }) => Err(ClaimError::Rejected(reason)),
                    Some(PendingDemand {
                        outcome: Some(Ok(r)),
                        ..
                    }) => Ok(r),
                    _ => self
                        .store
                        .get(app_id, f.resource_id)
                        .cloned()
                        .map(|mut r| {
                            r.source = Source::Demanded;
                            r
                        })
                        .ok_or(ClaimError::NotStaged),
                };
                match outcome {
                    Ok(mut r) => {
                        self.counters.demands_served += 1;
                        self.consume(app_id, f.resource_id);
                        r.task_id = f.task_id;
                        let latency = self.p.now_ns().saturating_sub(f.start);
                        self.report_resource(ReportKind::DemandServed, &r, latency);
                        ready(f.index, r);
                    }
                    Err(e) => {
                        self.counters.demands_failed += 1;
                        return Err(e);
                    }
                }
            }
        }
        self.flush();
        Ok(())
    }
}
