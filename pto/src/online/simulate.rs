//! A host-only replay of a workload through the [`Orchestrator`] against a simulated guest, in
//! virtual time, so the policy and the targets can be checked before the VM path is ready.
//!
//! The simulated guest runs one request at a time, sessions one after another, with the trace's
//! think time between requests (capped) and a pause between sessions; at the end of each
//! session the orchestrator hears of it ([`Orchestrator::end_session`]). A request runs its tasks in dependency order; each
//! task claims its resources from the guest's verified cache (an LRU within `store_budget`,
//! which keeps what is claimed and what is demanded, as the guest driver does): a cached one
//! costs `claim_ns` (after waiting for it if its prefetch is still on the link: a late hit),
//! a missing one is demand-fetched over the shared
//! origin [`Link`] (`demand_rtt_ns` + the origin's latency and transfer + signature check), then
//! the task works on the bytes for `work_ns_per_byte` per byte ([`measure_work_ns_per_byte`]
//! measures the real [`see_workload::process`] on this host). Prefetches use the same link, in
//! order of issue, so a wasted prefetch delays the fetches behind it.
//!
//! The modes differ as on the VM: `reactive-nocache` runs a guest without the cache (a claim
//! consumes the resource, a demanded bundle is not kept); `push` stages the plan's push set
//! before the request runs, which waits for it (its latency counts from the request's
//! arrival, as at the host). Demand fetches are serial here in every mode, which is what
//! `reactive-nocache` does on the VM; the other modes' guests demand in parallel there.

use std::{collections::HashMap, sync::Arc, time::Instant};

use virtio_prefetch_wire::{ReportKind, TaskTiming};

use super::{
    origin::{Link, OriginModel},
    Completion, Mode, ModeSummary, OnlineError, Orchestrator, PrefetchOrder, Report, WireIds,
};
use crate::{metadata::ServiceCatalogue, trace::Session, vocab::Vocabulary};

/// Costs of the simulated guest and origin.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// The origin.
    pub origin: OriginModel,
    /// Claiming a staged, verified resource (a copy into the task).
    pub claim_ns: u64,
    /// The ctrlq round trip of a demand fetch.
    pub demand_rtt_ns: u64,
    /// Checking a bundle's signature and digest, per bundle (on the critical path for a demand
    /// fetch, in the background for a prefetch).
    pub verify_ns: u64,
    /// Guest work per resource byte.
    pub work_ns_per_byte: f64,
    /// Longest think time taken from the trace, ms.
    pub think_cap_ms: f64,
    /// Pause between two sessions, ms.
    pub session_gap_ms: f64,
    /// The guest's verified cache, bytes: like the guest driver's `VerifiedStore`, it keeps
    /// prefetched and demanded bundles after their claims, and a bundle that does not fit
    /// evicts the least recently used first (each reported as an evict).
    pub store_budget: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            origin: OriginModel::default(),
            claim_ns: 20_000,
            demand_rtt_ns: 100_000,
            verify_ns: 500_000,
            work_ns_per_byte: 1.0,
            think_cap_ms: 2_000.0,
            session_gap_ms: 500.0,
            store_budget: super::Policy::default().budget_bytes,
        }
    }
}

/// Measures [`see_workload::process`] on this host: ns per resource byte, over a 1 MiB
/// resource of the catalogue's kind mix (best of three runs). Fails if a resource cannot be
/// generated or processed: a broken workload must not turn into a made-up cost.
pub fn measure_work_ns_per_byte() -> Result<f64, see_workload::WorkloadError> {
    let mut best = f64::INFINITY;
    for (i, kind) in [
        see_workload::Kind::Data,
        see_workload::Kind::Code,
        see_workload::Kind::Data,
    ]
    .into_iter()
    .enumerate()
    {
        let spec = see_workload::Spec {
            resource_id: 1000 + i as u64,
            version: 1,
            size: 1 << 20,
            kind,
        };
        let bytes = see_workload::generate(&spec)?;
        let start = Instant::now();
        see_workload::process(&bytes)?;
        best = best.min(start.elapsed().as_nanos() as f64 / bytes.len() as f64);
    }
    Ok(best)
}

/// The working set of a replay: the bytes of the distinct resources the requests of
/// `sessions` need, each counted once however often it is claimed.
pub fn working_set_bytes(catalogue: &ServiceCatalogue, sessions: &[Session]) -> u64 {
    let mut seen = std::collections::HashSet::new();
    replay_order(sessions, &catalogue.vocabulary())
        .iter()
        .flat_map(|(_, name)| catalogue.resources_of(name))
        .filter(|r| seen.insert(r.id.as_str()))
        .map(|r| r.size)
        .sum()
}

/// The replay order of `sessions`: (session id from 1, request type name).
pub fn replay_order(sessions: &[Session], vocab: &Vocabulary) -> Vec<(u64, String)> {
    sessions
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            s.requests
                .iter()
                .filter(|r| r.kind != crate::vocab::UNKNOWN)
                .filter_map(move |r| Some((i as u64 + 1, vocab.name(r.kind)?.to_owned())))
        })
        .collect()
}

/// A bundle in the simulated guest's verified cache.
struct Held {
    /// When it is verified and claimable.
    ready: u64,
    bytes: u64,
    /// Last use (arrival or claim): the guest evicts the least recently used first.
    stamp: u64,
    app_id: u32,
    task_id: u64,
    version: u64,
    /// Claimed since it arrived, or demand-fetched: its next claim is a cache hit.
    used: bool,
}

struct Guest<'a> {
    catalogue: &'a ServiceCatalogue,
    cfg: &'a SimConfig,
    /// Keeps what is claimed and demanded (false: `reactive-nocache`).
    cache: bool,
    link: Link,
    staged: HashMap<u64, Held>,
    held_bytes: u64,
    stamp: u64,
}

impl Guest<'_> {
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

    /// Takes `orders` in: each goes over the link, then into the cache, which evicts its least
    /// recently used bundles (reported to `orch`) until the new one fits, as the guest driver
    /// does.
    fn receive(
        &mut self,
        orch: &mut Orchestrator,
        now: u64,
        orders: &[PrefetchOrder],
    ) -> Result<(), OnlineError> {
        for o in orders {
            // The host's Evicts go first (the guest handles requestq before stagingq).
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
            let ready = self.link.fetch(now, o.bytes) + self.cfg.verify_ns;
            let held = Held {
                ready,
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

    /// Runs request `name` from `start`; returns its completion (without id).
    fn run(
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
        let mut now = start;
        let mut claimed = std::collections::HashSet::new();
        let mut tasks = Vec::new();
        for &t in &req.tasks {
            let mut timing = TaskTiming {
                task_id: WireIds::task(t),
                ..TaskTiming::default()
            };
            for &r in &cat.tasks[t].resources {
                if !claimed.insert(r) {
                    continue;
                }
                let res = &cat.resources[r];
                let id = WireIds::resource(r);
                let mut report = Report {
                    kind: ReportKind::ClaimHit,
                    reason: None,
                    app_id,
                    task_id: timing.task_id,
                    resource_id: id,
                    version: res.version,
                    latency_ns: 0,
                };
                self.stamp += 1;
                let stamp = self.stamp;
                if let Some(held) = self.staged.get_mut(&id) {
                    // A claim leaves it cached, most recently used (without a cache it is
                    // consumed, silently, as the guest driver does).
                    held.stamp = stamp;
                    if held.used {
                        report.kind = ReportKind::CacheHit;
                    }
                    held.used = true;
                    let ready = held.ready;
                    if !self.cache {
                        if let Some(h) = self.staged.remove(&id) {
                            self.held_bytes -= h.bytes;
                        }
                    }
                    let took = ready.saturating_sub(now) + self.cfg.claim_ns;
                    now += took;
                    timing.claim_ns += took;
                    timing.hits += 1;
                    report.latency_ns = took;
                    orch.on_report(&report)?;
                } else {
                    report.kind = ReportKind::Miss;
                    orch.on_report(&report)?;
                    orch.on_demand(app_id, timing.task_id, id, 0)?;
                    let half = self.cfg.demand_rtt_ns / 2;
                    let done = self.link.fetch(now + half, res.size) + half + self.cfg.verify_ns;
                    let took = done - now;
                    now = done;
                    timing.fetch_ns += took;
                    timing.misses += 1;
                    // The demanded bundle enters the cache (evicting as it must) before the
                    // guest reports the demand served; without a cache it is not kept.
                    if self.cache {
                        let held = Held {
                            ready: done,
                            bytes: res.size,
                            stamp: 0,
                            app_id,
                            task_id: timing.task_id,
                            version: res.version,
                            used: true,
                        };
                        self.insert(orch, id, held)?;
                    }
                    report.kind = ReportKind::DemandServed;
                    report.latency_ns = took;
                    orch.on_report(&report)?;
                }
                let work = (res.size as f64 * self.cfg.work_ns_per_byte) as u64;
                now += work;
                timing.work_ns += work;
            }
            tasks.push(timing);
        }
        Ok(Completion {
            request_id: 0,
            status: 0,
            total_ns: now - start,
            tasks,
        })
    }
}

/// Replays `sessions` (ids of the catalogue's vocabulary) through `orch` against the
/// simulated guest; returns the mode's summary.
pub fn simulate(
    orch: &mut Orchestrator,
    catalogue: &ServiceCatalogue,
    sessions: &[Session],
    cfg: &SimConfig,
) -> Result<ModeSummary, OnlineError> {
    let vocab = catalogue.vocabulary();
    let mut guest = Guest {
        catalogue,
        cfg,
        cache: orch.mode().guest_cache(),
        link: Link::new(cfg.origin),
        staged: HashMap::new(),
        held_bytes: 0,
        stamp: 0,
    };
    let ms = |x: f64| (x.max(0.0) * 1e6) as u64;
    let mut t = 0u64;
    let primed = orch.prime()?;
    guest.receive(orch, t, &primed)?;
    for (i, s) in sessions.iter().enumerate() {
        let mut prev_at = None;
        for r in &s.requests {
            // A type outside the catalogue cannot be served (Trace::drop_unknown leaves them
            // out before a replay).
            let Some(name) = vocab
                .name(r.kind)
                .filter(|_| r.kind != crate::vocab::UNKNOWN)
            else {
                continue;
            };
            let think = match prev_at {
                Some(p) => ms(((r.at_ms - p) as f64).min(cfg.think_cap_ms)),
                None => ms(cfg.session_gap_ms),
            };
            prev_at = Some(r.at_ms);
            t += think;
            // The policy's evictions stay on the host (the orchestrator sends no Evict): the
            // simulated guest keeps what it was sent, claimed or not, until its cache, full,
            // evicts it (least recently used first).
            let plan = orch.on_request(i as u64 + 1, name, t / 1000)?;
            // The push set goes first and the request is dispatched once it is staged.
            guest.receive(orch, t, &plan.push)?;
            let start = plan
                .push
                .iter()
                .filter_map(|o| guest.staged.get(&o.resource_id).map(|h| h.ready))
                .fold(t, u64::max);
            guest.receive(orch, t, &plan.prefetch)?;
            let mut c = guest.run(orch, name, plan.dispatch.app_id, start)?;
            c.request_id = plan.dispatch.request_id;
            c.total_ns += start - t;
            t += c.total_ns;
            let follow = orch.on_completion(&c)?;
            guest.receive(orch, t, &follow.prefetch)?;
        }
        let follow = orch.end_session(i as u64 + 1)?;
        guest.receive(orch, t, &follow.prefetch)?;
    }
    orch.finish()
}

/// The demo's headline and targets, checked on a table of modes: the best predictor against
/// the best non-predictive mode (the better of `reactive` and `push` at p50), with
/// `reactive-nocache` beside it as the naive baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct Targets {
    /// The predictor with the lowest p50 (static, markov, ppm or learned; ties go to the
    /// higher hit rate).
    pub best: String,
    /// The non-predictive mode with the lowest p50 (`reactive` or `push`).
    pub baseline: String,
    /// baseline p50 / best p50.
    pub speedup: f64,
    /// The share of the oracle's p50 gain over the baseline that the best predictor captures:
    /// (baseline p50 - best p50) / (baseline p50 - oracle p50) (target >= 0.7; None when the
    /// oracle gains nothing).
    pub gain_p50: Option<f64>,
    /// The same at p95 (target >= 0.5).
    pub gain_p95: Option<f64>,
    /// `reactive-nocache` p50 / best p50, when the naive baseline ran.
    pub vs_naive: Option<f64>,
    /// best p50 / oracle p50.
    pub vs_oracle: f64,
    /// best wasted bytes / oracle traffic.
    pub waste_ratio: f64,
    /// best traffic / oracle traffic: all the bytes moved, over what the requests needed
    /// (target <= 1.3).
    pub traffic_vs_oracle: f64,
    /// best traffic / the working set ([`working_set_bytes`]), once
    /// [`Targets::with_working_set`] has told it.
    pub traffic_vs_working_set: Option<f64>,
}

/// The mode a table row is for, if it names one.
fn mode_of(row: &ModeSummary) -> Option<Mode> {
    row.mode.parse().ok()
}

impl Targets {
    /// The figures from `rows`, if the oracle, a predictor and `reactive` or `push` are all
    /// there.
    pub fn from_rows(rows: &[ModeSummary]) -> Option<Self> {
        let by_p50 = |a: &&ModeSummary, b: &&ModeSummary| {
            a.p50_ms
                .total_cmp(&b.p50_ms)
                .then(b.hit_rate.total_cmp(&a.hit_rate))
        };
        let oracle = rows.iter().find(|r| mode_of(r) == Some(Mode::Oracle))?;
        let baseline = rows
            .iter()
            .filter(|r| mode_of(r).is_some_and(Mode::is_baseline))
            .min_by(by_p50)?;
        let best = rows
            .iter()
            .filter(|r| mode_of(r).is_some_and(Mode::predicts))
            .min_by(by_p50)?;
        let naive = rows
            .iter()
            .find(|r| mode_of(r) == Some(Mode::ReactiveNocache));
        let gain = |base: f64, best: f64, oracle: f64| {
            (base - oracle > 0.0).then(|| (base - best) / (base - oracle))
        };
        Some(Self {
            best: best.mode.clone(),
            baseline: baseline.mode.clone(),
            speedup: baseline.p50_ms / best.p50_ms.max(1e-9),
            gain_p50: gain(baseline.p50_ms, best.p50_ms, oracle.p50_ms),
            gain_p95: gain(baseline.p95_ms, best.p95_ms, oracle.p95_ms),
            vs_naive: naive.map(|n| n.p50_ms / best.p50_ms.max(1e-9)),
            vs_oracle: best.p50_ms / oracle.p50_ms.max(1e-9),
            waste_ratio: best.wasted_bytes as f64 / (oracle.traffic_bytes.max(1)) as f64,
            traffic_vs_oracle: best.traffic_bytes as f64 / (oracle.traffic_bytes.max(1)) as f64,
            traffic_vs_working_set: None,
        })
    }

    /// The figures with the best predictor's traffic also as a multiple of `working_set`
    /// bytes (see [`working_set_bytes`]), the best predictor's traffic taken from `rows`.
    pub fn with_working_set(mut self, rows: &[ModeSummary], working_set: u64) -> Self {
        self.traffic_vs_working_set = rows
            .iter()
            .find(|r| r.mode == self.best)
            .map(|r| r.traffic_bytes as f64 / working_set.max(1) as f64);
        self
    }

    /// Whether the default workload's targets hold: at least 70 % of the oracle's p50 gain
    /// over the best non-predictive mode, at least 50 % of its p95 gain, and at most 1.3x the
    /// oracle's traffic.
    pub fn met(&self) -> bool {
        self.gain_p50.is_some_and(|g| g >= 0.7)
            && self.gain_p95.is_some_and(|g| g >= 0.5)
            && self.traffic_vs_oracle <= 1.3
    }
}

impl std::fmt::Display for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ok = |b: bool| if b { "ok" } else { "MISSED" };
        let share = |g: Option<f64>, target: f64| match g {
            Some(g) => format!(
                "{:.0} % (target >= {:.0} %: {})",
                100.0 * g,
                100.0 * target,
                ok(g >= target)
            ),
            None => "n/a (the oracle gains nothing)".to_owned(),
        };
        write!(
            f,
            "best predictor: {}; best non-predictive mode: {}; p50 {:.2}x better than {}",
            self.best, self.baseline, self.speedup, self.baseline
        )?;
        if let Some(n) = self.vs_naive {
            write!(f, " ({n:.2}x better than the naive reactive-nocache)")?;
        }
        write!(
            f,
            "; captures {} of the oracle's p50 gain and {} of its p95 gain; {:.2}x the oracle's p50; wasted bytes {:.2}x the oracle's traffic; traffic {:.2}x the oracle's (target <= 1.3: {})",
            share(self.gain_p50, 0.7),
            share(self.gain_p95, 0.5),
            self.vs_oracle,
            self.waste_ratio,
            self.traffic_vs_oracle,
            ok(self.traffic_vs_oracle <= 1.3)
        )?;
        match self.traffic_vs_working_set {
            Some(x) => write!(f, ", {x:.2}x the working set"),
            None => Ok(()),
        }
    }
}

/// Runs `modes` on `test` sessions, each on a fresh orchestrator; `make` builds the
/// orchestrator of a mode (the oracle gets the replay order).
pub fn run_modes(
    catalogue: &Arc<ServiceCatalogue>,
    test: &[Session],
    modes: &[Mode],
    cfg: &SimConfig,
    make: &mut dyn FnMut(Mode, Vec<(u64, String)>) -> Result<Orchestrator, OnlineError>,
) -> Result<Vec<ModeSummary>, OnlineError> {
    let order = replay_order(test, &catalogue.vocabulary());
    let mut rows = Vec::new();
    for &m in modes {
        let mut orch = make(m, order.clone())?;
        let row = simulate(&mut orch, catalogue, test, cfg)?;
        log::info!("{row}");
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests;
