//! The simulated guest of [`super::simulate`]: the driver's verified cache and the serve app's
//! request, in virtual time (ns).
//!
//! A request claims all its resources at once, as `Driver::claim_each` does for the see-kernel
//! serve app: the cached ones are claimed (and worked on) first, in request order; then every
//! missing one is demanded together, at most [`SimConfig::max_demands`] outstanding (the next is
//! sent when one arrives), and each is verified and worked on as it arrives, in arrival order.
//! A prefetch still on the link when it is claimed is a miss (the driver does not know it is
//! coming): it is demanded too, and whichever bundle arrives first serves the claim.
//!
//! The guest has one CPU, and checking a bundle (its signature and the hash of its bytes,
//! [`SimConfig::verify_cost`]) runs on it, where the driver runs it: in its poll of the rings.
//! The driver polls while the app idles between requests (so a bundle that arrives then is
//! checked on arrival, and a request dispatched meanwhile waits for the CPU before it starts),
//! at every claim (so a bundle that arrived while the app worked is checked in the next claim,
//! inside the request), and while a request waits for its demands. A bundle is claimable only
//! once checked.
//!
//! Fetches go through the origin [`Pool`]: the backend's bounded pool of fetchers, whose fetches
//! overlap their latencies and share the link's bandwidth.

use std::collections::{HashMap, HashSet, VecDeque};

use virtio_prefetch_wire::{ReportKind, TaskTiming};

use super::SimConfig;
use crate::{
    metadata::ServiceCatalogue,
    online::{origin::Pool, Completion, OnlineError, Orchestrator, PrefetchOrder, Report, WireIds},
};

/// A bundle in the simulated guest's verified cache.
struct Held {
    /// When it is in the guest's rings (the backend has sent it).
    arrives: u64,
    /// Checked by the driver: claimable.
    verified: bool,
    bytes: u64,
    /// Last use (arrival or claim): the guest evicts the least recently used first.
    stamp: u64,
    app_id: u32,
    task_id: u64,
    version: u64,
    /// Claimed since it arrived, or demand-fetched: its next claim is a cache hit.
    used: bool,
}

/// A demand of the request in flight.
struct InFlight {
    /// Index into the request's wanted list.
    index: usize,
    /// When its bundle (or a prefetch of the same resource) is in the guest.
    arrives: u64,
    /// When it was sent.
    sent: u64,
}

/// How a mode's guest differs from the default one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Quirks {
    /// Keeps what is claimed and demanded (false: a claim consumes the resource, a demanded
    /// bundle is not kept, as for a naive reactive baseline).
    pub cache: bool,
    /// Demands one resource at a time, whatever [`SimConfig::max_demands`] says.
    pub serial_demands: bool,
}

impl Default for Quirks {
    /// The guest every mode but a naive baseline runs on: cache and parallel demands.
    fn default() -> Self {
        Self {
            cache: true,
            serial_demands: false,
        }
    }
}

/// The simulated guest: its verified cache and the origin behind the device.
pub(super) struct Guest<'a> {
    catalogue: &'a ServiceCatalogue,
    cfg: &'a SimConfig,
    quirks: Quirks,
    origin: Pool,
    staged: HashMap<u64, Held>,
    held_bytes: u64,
    stamp: u64,
    /// When the CPU is done with what it did between requests (checking bundles).
    cpu_free: u64,
}

impl<'a> Guest<'a> {
    /// An empty guest in front of an idle origin.
    pub(super) fn new(catalogue: &'a ServiceCatalogue, cfg: &'a SimConfig, quirks: Quirks) -> Self {
        Self {
            catalogue,
            cfg,
            quirks,
            origin: Pool::new(cfg.origin, cfg.origin_workers),
            staged: HashMap::new(),
            held_bytes: 0,
            stamp: 0,
            cpu_free: 0,
        }
    }

    /// When the bundle of `resource_id` the cache holds is (or was) in the guest's rings, if it
    /// holds one: when the daemon hears it is staged.
    pub(super) fn arrives_at(&self, resource_id: u64) -> Option<u64> {
        self.staged.get(&resource_id).map(|h| h.arrives)
    }

    /// Checks, on the CPU from `cpu` on, every bundle not yet checked that arrives by `until`,
    /// in arrival order, each no earlier than its arrival; returns when the CPU is done. With
    /// `until == cpu` this is one poll of the rings; with `until` later it is the guest waiting
    /// (idle, or for its demands) and checking each bundle as it comes.
    fn check_arrived(&mut self, mut cpu: u64, until: u64) -> u64 {
        let mut due: Vec<(u64, u64, u64)> = self
            .staged
            .iter()
            .filter(|(_, h)| !h.verified && h.arrives <= until)
            .map(|(&id, h)| (h.arrives, id, h.bytes))
            .collect();
        due.sort_unstable();
        for (arrives, id, bytes) in due {
            cpu = cpu.max(arrives) + self.cfg.verify_cost(bytes);
            if let Some(h) = self.staged.get_mut(&id) {
                h.verified = true;
            }
        }
        cpu
    }

    /// The request dispatched at `at` (it is in the guest's requestq then): the guest, idle
    /// since its last request, has checked what arrived meanwhile, and the app starts the
    /// request once its poll is done. Returns when the request starts (the guest's clock).
    pub(super) fn dispatch(&mut self, at: u64) -> u64 {
        self.cpu_free = self.check_arrived(self.cpu_free, at);
        self.cpu_free.max(at)
    }

    /// Puts `held` into the cache as the most recently used entry, as the guest driver's
    /// `VerifiedStore::insert` does: a copy of the same resource is replaced (not reported),
    /// then the least recently used entries are evicted (reported to `orch`) until it fits.
    fn insert(
        &mut self,
        orch: &mut Orchestrator,
        resource_id: u64,
        mut held: Held,
    ) -> Result<(), OnlineError> {
        if let Some(old) = self.staged.remove(&resource_id) {
            self.held_bytes -= old.bytes;
        }
        let mut gone = Vec::new();
        while self.held_bytes + held.bytes > self.cfg.store_budget {
            let Some(oldest) = self
                .staged
                .iter()
                .min_by_key(|(_, h)| h.stamp)
                .map(|(&id, _)| id)
            else {
                break;
            };
            if let Some(h) = self.staged.remove(&oldest) {
                self.held_bytes -= h.bytes;
                gone.push((oldest, h));
            }
        }
        for (resource_id, h) in gone {
            orch.on_report(&Report {
                kind: ReportKind::Evict,
                reason: None,
                app_id: h.app_id,
                task_id: h.task_id,
                resource_id,
                version: h.version,
                latency_ns: 0,
            })?;
        }
        self.stamp += 1;
        held.stamp = self.stamp;
        self.held_bytes += held.bytes;
        self.staged.insert(resource_id, held);
        Ok(())
    }

    /// Takes `orders` in at `now`, as the daemon's engine sends them: the host's Evicts first
    /// (the guest handles requestq before stagingq), no second copy of a bundle the guest
    /// already holds, and every other order fetched through the origin pool and put into the
    /// cache once it has arrived and been checked.
    pub(super) fn receive(
        &mut self,
        orch: &mut Orchestrator,
        now: u64,
        orders: &[PrefetchOrder],
    ) -> Result<(), OnlineError> {
        for o in orders {
            for &(app_id, resource_id) in &o.evict_first {
                if let Some(h) = self.staged.remove(&resource_id) {
                    self.held_bytes -= h.bytes;
                    orch.on_report(&Report {
                        kind: ReportKind::Evict,
                        reason: None,
                        app_id,
                        task_id: h.task_id,
                        resource_id,
                        version: h.version,
                        latency_ns: 0,
                    })?;
                }
            }
            if self
                .staged
                .get(&o.resource_id)
                .is_some_and(|h| h.arrives <= now)
            {
                continue;
            }
            let held = Held {
                arrives: self.origin.prefetch(now, o.bytes),
                verified: false,
                bytes: o.bytes,
                stamp: 0,
                app_id: o.app_id,
                task_id: o.task_id,
                version: o.version,
                used: false,
            };
            self.insert(orch, o.resource_id, held)?;
        }
        Ok(())
    }

    /// Runs request `name` dispatched at `start`; returns its completion (without id).
    pub(super) fn run(
        &mut self,
        orch: &mut Orchestrator,
        name: &str,
        app_id: u32,
        start: u64,
    ) -> Result<Completion, OnlineError> {
        let cat = self.catalogue;
        let req = cat
            .request(name)
            .ok_or_else(|| OnlineError::UnknownRequest(name.into()))?;
        // Every (task, resource) of the request, each resource once, in task order.
        let mut seen = HashSet::new();
        let wanted: Vec<(usize, usize)> = req
            .tasks
            .iter()
            .enumerate()
            .flat_map(|(pos, &t)| cat.tasks[t].resources.iter().map(move |&r| (pos, r)))
            .filter(|&(_, r)| seen.insert(r))
            .collect();
        let mut tasks: Vec<TaskTiming> = req
            .tasks
            .iter()
            .map(|&t| TaskTiming {
                task_id: WireIds::task(t),
                ..TaskTiming::default()
            })
            .collect();
        let mut cpu = start;
        let mut idle_since = start;
        let mut missing = VecDeque::new();
        for (index, &(pos, r)) in wanted.iter().enumerate() {
            let res = &cat.resources[r];
            let id = WireIds::resource(r);
            let timing = &mut tasks[pos];
            let mut report = Report {
                kind: ReportKind::ClaimHit,
                reason: None,
                app_id,
                task_id: timing.task_id,
                resource_id: id,
                version: res.version,
                latency_ns: 0,
            };
            // Each claim polls the rings first: what arrived while the app worked is checked
            // now, inside the request.
            let polled = self.check_arrived(cpu, cpu);
            let checking = polled - cpu;
            cpu = polled;
            self.stamp += 1;
            let stamp = self.stamp;
            match self.staged.get_mut(&id).filter(|h| h.verified) {
                Some(held) => {
                    // A claim leaves it cached, most recently used (without a cache it is
                    // consumed, silently, as the guest driver does).
                    held.stamp = stamp;
                    if held.used {
                        report.kind = ReportKind::CacheHit;
                    }
                    held.used = true;
                    if !self.quirks.cache {
                        if let Some(h) = self.staged.remove(&id) {
                            self.held_bytes -= h.bytes;
                        }
                    }
                    cpu += self.cfg.claim_ns;
                    report.latency_ns = checking + self.cfg.claim_ns;
                    orch.on_report(&report)?;
                    timing.hits += 1;
                    timing.claim_ns += cpu - idle_since;
                    let work = (res.size as f64 * self.cfg.work_ns_per_byte) as u64;
                    cpu += work;
                    timing.work_ns += work;
                    idle_since = cpu;
                }
                None => {
                    report.kind = ReportKind::Miss;
                    orch.on_report(&report)?;
                    missing.push_back(index);
                }
            }
        }
        let limit = if self.quirks.serial_demands {
            1
        } else {
            self.cfg.max_demands.max(1)
        };
        let half = self.cfg.demand_rtt_ns / 2;
        let mut inflight: Vec<InFlight> = Vec::new();
        while !missing.is_empty() || !inflight.is_empty() {
            while inflight.len() < limit {
                let Some(index) = missing.pop_front() else {
                    break;
                };
                let (pos, r) = wanted[index];
                let id = WireIds::resource(r);
                orch.on_demand(app_id, tasks[pos].task_id, id, 0)?;
                let mut arrives = self.origin.fetch(cpu + half, cat.resources[r].size) + half;
                // A prefetch of the same resource still on the link may overtake the demand.
                if let Some(h) = self.staged.get(&id) {
                    arrives = arrives.min(h.arrives);
                }
                inflight.push(InFlight {
                    index,
                    arrives,
                    sent: cpu,
                });
            }
            let first = inflight.iter().map(|f| f.arrives).min().unwrap_or(cpu);
            // Waiting, the driver polls: prefetches that come meanwhile are checked as they
            // come, then the poll that finds a demand answered checks what else arrived.
            cpu = self.check_arrived(cpu, first).max(first);
            cpu = self.check_arrived(cpu, cpu);
            let (mut done, waiting): (Vec<InFlight>, Vec<InFlight>) =
                inflight.into_iter().partition(|f| f.arrives <= cpu);
            inflight = waiting;
            done.sort_by_key(|f| f.arrives);
            for f in done {
                let (pos, r) = wanted[f.index];
                let res = &cat.resources[r];
                let id = WireIds::resource(r);
                // The guest checks the bundle's signature and digest before handing it over,
                // unless a prefetch of it arrived first and was checked above.
                if !self.staged.get(&id).is_some_and(|h| h.verified) {
                    cpu += self.cfg.verify_cost(res.size);
                }
                let task_id = tasks[pos].task_id;
                // The demanded bundle enters the cache (evicting as it must) before the guest
                // reports the demand served; without a cache it is not kept.
                if self.quirks.cache {
                    let held = Held {
                        arrives: f.arrives,
                        verified: true,
                        bytes: res.size,
                        stamp: 0,
                        app_id,
                        task_id,
                        version: res.version,
                        used: true,
                    };
                    self.insert(orch, id, held)?;
                } else if let Some(h) = self.staged.remove(&id) {
                    // A late prefetch that served the demand is consumed with it.
                    self.held_bytes -= h.bytes;
                }
                orch.on_report(&Report {
                    kind: ReportKind::DemandServed,
                    reason: None,
                    app_id,
                    task_id,
                    resource_id: id,
                    version: res.version,
                    latency_ns: cpu - f.sent,
                })?;
                let timing = &mut tasks[pos];
                timing.misses += 1;
                timing.fetch_ns += cpu - idle_since;
                let work = (res.size as f64 * self.cfg.work_ns_per_byte) as u64;
                cpu += work;
                timing.work_ns += work;
                idle_since = cpu;
            }
        }
        // The completion's poll and the idle loop check what arrived during the last work.
        self.cpu_free = cpu;
        Ok(Completion {
            request_id: 0,
            status: 0,
            total_ns: cpu - start,
            tasks,
        })
    }
}
