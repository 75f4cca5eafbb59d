//! A host-only replay of a workload through the [`Orchestrator`] against a simulated guest, in
//! virtual time, so the policy, the targets and the sweeps ([`sweep`]) can be run cheaply.
//!
//! It models what the VM run does (the daemon's engine, the see-kernel serve app, the guest
//! driver and the backend's origin):
//! - sessions one after another, one request at a time, with the trace's think time between
//!   requests (capped) and a pause before each session's first request; at the end of each
//!   session the orchestrator hears of it ([`Orchestrator::end_session`]);
//! - the plan's prefetch orders are sent when the request completes (the engine's default),
//!   or at dispatch with [`SimConfig::eager_prefetch`]; an order for a bundle the guest holds
//!   is not sent, as the engine skips it;
//! - the guest's verified cache (an LRU within `store_budget` that keeps what is claimed and
//!   what is demanded) and a request that claims all its resources at once, demanding the
//!   missing ones in parallel (at most [`SimConfig::max_demands`] outstanding) and working on
//!   each as it arrives, on one CPU (the `guest` module);
//! - the origin behind the backend's bounded pool of fetchers
//!   ([`crate::online::origin::Pool`]): concurrent fetches overlap their latencies and share
//!   the bandwidth.
//!
//! Costs: a cached claim costs `claim_ns`; a demand costs the ctrlq round trip
//! (`demand_rtt_ns`) and the origin's latency and transfer; every bundle, prefetched or
//! demanded, costs the guest's check of it ([`SimConfig::verify_cost`]: a signature check and a
//! hash of its bytes, [`measure_verify_cost`] times the real ones on this host) on the guest's
//! one CPU, where the driver runs it (see the `guest` module); work costs `work_ns_per_byte`
//! per byte ([`measure_work_ns_per_byte`] measures the real [`see_workload::process`] on this
//! host).
//!
//! Two latencies are kept per request ([`Replay`]): the guest's, from the moment the app starts
//! the request to its completion (the demo's "guest" column and the orchestrator's summary),
//! and the host's, from the request's arrival at the host (which the demo's HTTP client
//! measures; the simulation leaves out the front door's own cost). They differ by what
//! happens before the guest starts the request: `push` waits at the host until the request
//! type's recorded set is staged, and any request waits while the guest's CPU finishes
//! checking bundles that arrived before it.
//!
//! Repetitions ([`rep_groups`], [`replay_modes`]) are run as the demo runs them: the held-out
//! sessions cut in order into disjoint groups of `requests` requests, and every mode replays
//! every group on a fresh orchestrator (cold predictor state) and a fresh guest (cold cache).
//!
//! The modes differ as on the VM: `reactive-nocache` runs a guest without the cache (a claim
//! consumes the resource, a demanded bundle is not kept) that demands one resource at a time;
//! `push` stages the plan's push set before the request is dispatched.

mod guest;
pub mod sweep;

use std::{sync::Arc, time::Instant};

use super::{origin::OriginModel, Mode, ModeSummary, OnlineError, Orchestrator};
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
    /// The guest's check of a bundle: its signature, per bundle (on the guest's CPU, like
    /// [`SimConfig::verify_ns_per_byte`]).
    pub verify_sig_ns: u64,
    /// The guest's check of a bundle: the hash of its bytes, per byte.
    pub verify_ns_per_byte: f64,
    /// Demand fetches a request keeps outstanding at once (the guest driver's `max_demands`).
    pub max_demands: usize,
    /// Origin fetches in progress at once (the backend's pool of fetchers, `fetch_workers`:
    /// 4 by default; prefetches may hold all but one).
    pub origin_workers: usize,
    /// Send a request's prefetch orders at dispatch instead of at its completion (the
    /// daemon's and the demo's `--eager-prefetch`).
    pub eager_prefetch: bool,
    /// Guest work per resource byte.
    pub work_ns_per_byte: f64,
    /// Longest think time taken from the trace, ms.
    pub think_cap_ms: f64,
    /// Pause before a session's first request, ms (the demo pauses `--think-ms`).
    pub session_gap_ms: f64,
    /// The guest's verified cache, bytes: like the guest driver's `VerifiedStore`, it keeps
    /// prefetched and demanded bundles after their claims, and a bundle that does not fit
    /// evicts the least recently used first (each reported as an evict).
    pub store_budget: u64,
}

impl Default for SimConfig {
    /// The bundle check's defaults are the guest's figures in BENCHMARKS.md (virtio-prefetch:
    /// about 0.5 ms per signature, 1.2 ms per MiB hashed); `pto simulate` times them here.
    fn default() -> Self {
        Self {
            origin: OriginModel::default(),
            claim_ns: 20_000,
            demand_rtt_ns: 100_000,
            verify_sig_ns: 500_000,
            verify_ns_per_byte: 1.2,
            max_demands: 8,
            origin_workers: 4,
            eager_prefetch: false,
            work_ns_per_byte: 1.0,
            think_cap_ms: 2_000.0,
            session_gap_ms: 500.0,
            store_budget: super::Policy::default().budget_bytes,
        }
    }
}

impl SimConfig {
    /// The guest's check of a bundle of `bytes` bytes: one signature and the hash of its bytes.
    pub fn verify_cost(&self, bytes: u64) -> u64 {
        self.verify_sig_ns + (bytes as f64 * self.verify_ns_per_byte) as u64
    }
}

/// What the guest's check of a bundle costs: a signature, and a hash per byte.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VerifyCost {
    /// One ECDSA P-384 signature check, ns.
    pub sig_ns: f64,
    /// SHA-384, ns per byte.
    pub ns_per_byte: f64,
}

impl VerifyCost {
    /// This cost on a CPU `factor` times slower.
    pub fn scaled(self, factor: f64) -> Self {
        Self {
            sig_ns: self.sig_ns * factor,
            ns_per_byte: self.ns_per_byte * factor,
        }
    }
}

/// Why the guest's check could not be timed.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// The signature of the timed bundle did not check: a broken check must not turn into a
    /// made-up cost.
    #[error("timing the guest's bundle check: {0} (the p384 build is broken)")]
    Signature(#[from] p384::ecdsa::Error),
}

/// Times the guest driver's check of a bundle on this host, with the same code the driver runs
/// (`see-guest-driver`'s verify: an ECDSA P-384 signature over the bundle's signed statement
/// and a SHA-384 of its content): the best of five signature checks, and a hash of 1 MiB (best
/// of three).
pub fn measure_verify_cost() -> Result<VerifyCost, MeasureError> {
    use p384::ecdsa::{
        signature::{Signer, Verifier},
        Signature, SigningKey,
    };
    use sha2::{Digest, Sha384};
    let key = SigningKey::from_slice(&[0x5e; 48])?;
    // A statement the size of a bundle header's: ids, version, sequence and the digest.
    let statement = [0xa5u8; 160];
    let sig: Signature = key.sign(&statement);
    let verifying = key.verifying_key();
    let mut sig_ns = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        verifying.verify(std::hint::black_box(&statement), &sig)?;
        sig_ns = sig_ns.min(start.elapsed().as_nanos() as f64);
    }
    let content: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut ns_per_byte = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        std::hint::black_box(Sha384::digest(std::hint::black_box(&content)));
        ns_per_byte = ns_per_byte.min(start.elapsed().as_nanos() as f64 / content.len() as f64);
    }
    Ok(VerifyCost {
        sig_ns,
        ns_per_byte,
    })
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

/// The mean bytes a replayed request of `sessions` works on: its distinct resources' sizes
/// (what the guest's work costs per request is this times the work per byte).
pub fn mean_request_bytes(catalogue: &ServiceCatalogue, sessions: &[Session]) -> f64 {
    let order = replay_order(sessions, &catalogue.vocabulary());
    let total: u64 = order
        .iter()
        .map(|(_, name)| {
            catalogue
                .resources_of(name)
                .iter()
                .map(|r| r.size)
                .sum::<u64>()
        })
        .sum();
    total as f64 / order.len().max(1) as f64
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

/// The first sessions of `test` holding `requests` requests, the last one cut short (the
/// demo's `--requests` picks its replay the same way).
pub fn first_requests(test: &[Session], requests: usize) -> Vec<Session> {
    let mut out = Vec::new();
    let mut n = 0;
    for s in test {
        if n >= requests {
            break;
        }
        let mut s = s.clone();
        s.requests.truncate(requests - n);
        s.truth.truncate(s.requests.len());
        n += s.requests.len();
        if !s.requests.is_empty() {
            out.push(s);
        }
    }
    out
}

/// Why the held-out sessions cannot be cut into repetitions.
#[derive(Debug, thiserror::Error)]
#[error("repetition {rep} needs {requests} held-out requests but only {got} are left: the {sessions} held-out sessions hold {held} requests; raise --sessions or lower --reps or --requests")]
pub struct NotEnoughHeldOut {
    /// The repetition that came up short, from 1.
    pub rep: usize,
    /// Requests per repetition.
    pub requests: usize,
    /// Requests it found.
    pub got: usize,
    /// Held-out sessions.
    pub sessions: usize,
    /// Their requests.
    pub held: usize,
}

/// Cuts `test` into `reps` disjoint groups of `requests` requests each, in order, as the demo
/// does: each group is [`first_requests`] of what the groups before it left, and a group's last
/// session, cut short, is not replayed again.
pub fn rep_groups(
    test: &[Session],
    reps: usize,
    requests: usize,
) -> Result<Vec<Vec<Session>>, NotEnoughHeldOut> {
    let mut groups = Vec::with_capacity(reps);
    let mut rest = test;
    for rep in 1..=reps {
        let group = first_requests(rest, requests);
        let got: usize = group.iter().map(|s| s.requests.len()).sum();
        if got < requests {
            return Err(NotEnoughHeldOut {
                rep,
                requests,
                got,
                sessions: test.len(),
                held: test.iter().map(|s| s.requests.len()).sum(),
            });
        }
        rest = &rest[group.len().min(rest.len())..];
        groups.push(group);
    }
    Ok(groups)
}

/// One mode's replay of one or more repetitions: its summary and every request's latency, by
/// session.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    /// The table row: every repetition's counters and guest latencies pooled.
    pub summary: ModeSummary,
    /// The guest's latency of each request (ns, from the app's start of the request to its
    /// completion), one list per replayed session, in order, repetition after repetition.
    pub sessions: Vec<Vec<u64>>,
    /// The host's latency of the same requests (ns, from the request's arrival at the host:
    /// the guest's plus the wait for a push set and for the guest's CPU).
    pub host: Vec<Vec<u64>>,
    /// How many of `sessions` each repetition replayed, in order.
    pub reps: Vec<usize>,
}

impl Replay {
    /// Each repetition's p50 (ms, nearest rank), of the host's latencies or the guest's.
    pub fn rep_p50s_ms(&self, host: bool) -> Vec<f64> {
        let all = if host { &self.host } else { &self.sessions };
        let mut at = 0;
        self.reps
            .iter()
            .map(|&n| {
                let end = (at + n).min(all.len());
                let mut l: Vec<u64> = all[at..end].iter().flatten().copied().collect();
                at = end;
                l.sort_unstable();
                super::percentile(&l, 0.5) as f64 / 1e6
            })
            .collect()
    }

    /// The median over the repetitions of their p50s (ms): the figure `cargo xtask bench
    /// sweep` reads from the demo (the upper middle one for an even count, as it takes).
    pub fn median_rep_p50_ms(&self, host: bool) -> f64 {
        let mut v = self.rep_p50s_ms(host);
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
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
    replay(orch, catalogue, sessions, cfg).map(|r| r.summary)
}

/// [`simulate`] as one repetition (a fresh guest), keeping every request's latency.
pub fn replay(
    orch: &mut Orchestrator,
    catalogue: &ServiceCatalogue,
    sessions: &[Session],
    cfg: &SimConfig,
) -> Result<Replay, OnlineError> {
    let vocab = catalogue.vocabulary();
    let mode = orch.mode();
    let quirks = guest::Quirks {
        cache: mode.guest_cache(),
        serial_demands: mode.serial_demands(),
    };
    let mut guest = guest::Guest::new(catalogue, cfg, quirks);
    let ms = |x: f64| (x.max(0.0) * 1e6) as u64;
    let mut t = 0u64;
    let primed = orch.prime()?;
    guest.receive(orch, t, &primed)?;
    let mut latencies = Vec::with_capacity(sessions.len());
    let mut host = Vec::with_capacity(sessions.len());
    for (i, s) in sessions.iter().enumerate() {
        let mut prev_at = None;
        let mut mine = Vec::with_capacity(s.requests.len());
        let mut mine_host = Vec::with_capacity(s.requests.len());
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
            let plan = orch.on_request_replayed(i as u64 + 1, name, t / 1000, &r.attrs)?;
            // The push set goes first and the request is dispatched once it is staged (in the
            // guest's rings); the guest starts it once its CPU is free.
            guest.receive(orch, t, &plan.push)?;
            let dispatched = plan
                .push
                .iter()
                .filter_map(|o| guest.arrives_at(o.resource_id))
                .fold(t, u64::max);
            let start = guest.dispatch(dispatched);
            if cfg.eager_prefetch {
                guest.receive(orch, start, &plan.prefetch)?;
            }
            let mut c = guest.run(orch, name, plan.dispatch.app_id, start)?;
            c.request_id = plan.dispatch.request_id;
            mine.push(c.total_ns);
            let done = start + c.total_ns;
            mine_host.push(done - t);
            t = done;
            let follow = orch.on_completion(&c)?;
            if !cfg.eager_prefetch {
                guest.receive(orch, t, &plan.prefetch)?;
            }
            guest.receive(orch, t, &follow.prefetch)?;
        }
        latencies.push(mine);
        host.push(mine_host);
        let follow = orch.end_session(i as u64 + 1)?;
        guest.receive(orch, t, &follow.prefetch)?;
    }
    Ok(Replay {
        summary: orch.finish()?,
        reps: vec![latencies.len()],
        sessions: latencies,
        host,
    })
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

/// Runs `modes` on every repetition's sessions (`groups`, see [`rep_groups`]), each mode and
/// repetition on a fresh orchestrator and guest; `make` builds the orchestrator of a mode (the
/// oracle gets the repetition's replay order).
pub fn run_modes(
    catalogue: &Arc<ServiceCatalogue>,
    groups: &[Vec<Session>],
    modes: &[Mode],
    cfg: &SimConfig,
    make: &mut dyn FnMut(Mode, Vec<(u64, String)>) -> Result<Orchestrator, OnlineError>,
) -> Result<Vec<ModeSummary>, OnlineError> {
    Ok(replay_modes(catalogue, groups, modes, cfg, make)?
        .into_iter()
        .map(|r| r.summary)
        .collect())
}

/// [`run_modes`], keeping every request's latency: one [`Replay`] per mode, its repetitions
/// pooled in order.
pub fn replay_modes(
    catalogue: &Arc<ServiceCatalogue>,
    groups: &[Vec<Session>],
    modes: &[Mode],
    cfg: &SimConfig,
    make: &mut dyn FnMut(Mode, Vec<(u64, String)>) -> Result<Orchestrator, OnlineError>,
) -> Result<Vec<Replay>, OnlineError> {
    let vocab = catalogue.vocabulary();
    let mut rows = Vec::new();
    for &m in modes {
        let mut metrics = super::Metrics::default();
        let mut all = Replay {
            summary: super::Metrics::default().summary(m.name()),
            sessions: Vec::new(),
            host: Vec::new(),
            reps: Vec::new(),
        };
        for group in groups {
            let mut orch = make(m, replay_order(group, &vocab))?;
            let r = replay(&mut orch, catalogue, group, cfg)?;
            metrics.merge(orch.metrics());
            all.reps.push(r.sessions.len());
            all.sessions.extend(r.sessions);
            all.host.extend(r.host);
        }
        all.summary = metrics.summary(m.name());
        log::info!("{}", all.summary);
        rows.push(all);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests;
