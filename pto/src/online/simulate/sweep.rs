//! Sweeps: where prediction wins and where it does not.
//!
//! A sweep varies one [`Param`] of the simulated run over its [`Param::default_points`]
//! (origin latency, the budget as a share of the working set, the think-time cap, the size
//! scale), every other setting held at its [`Point`]. At each point every mode replays the same
//! sessions, repetition by repetition ([`super::replay_modes`]); [`analyse`] then compares the
//! best predictor with the best non-predictive mode ([`best_non_predictive`]) on the host's p50
//! (from the request's arrival at the host, so that `push`'s wait for its set counts, as the
//! demo's headline counts it), with session-level bootstrap 95 % intervals: whole sessions (of
//! every repetition) are resampled with replacement, the same ones for every mode, and the
//! interval is the 2.5th to 97.5th percentile of the resampled figure. Beside it each mode has
//! the guest's p50 as the demo reports it to `cargo xtask bench sweep` (the median over the
//! repetitions of each one's p50), which is what [`compare_vm`] compares with the VM.
//!
//! Each [`Point`] is one `see-demo` run ([`Point::demo_flags`]), so the VM can be run at the same
//! points and compared ([`compare_vm`]).

use std::fmt::{self, Write as _};

use rand::{Rng, SeedableRng};

use super::Replay;
use crate::online::{percentile, ModeSummary};

/// What a sweep varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Param {
    /// The origin's latency per fetch, ms.
    OriginLatency,
    /// The guest's store (and the staging budget) as a share of the working set.
    Budget,
    /// The longest think time taken from the trace (and the pause before a session), ms.
    ThinkCap,
    /// The factor on every resource's size.
    SizeScale,
}

impl Param {
    /// Every parameter, in report order.
    pub const ALL: [Param; 4] = [
        Param::OriginLatency,
        Param::Budget,
        Param::ThinkCap,
        Param::SizeScale,
    ];

    /// Its name on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Param::OriginLatency => "origin-latency",
            Param::Budget => "budget",
            Param::ThinkCap => "think-cap",
            Param::SizeScale => "size-scale",
        }
    }

    /// The points swept unless told otherwise.
    pub fn default_points(self) -> &'static [f64] {
        match self {
            Param::OriginLatency => &[0.0, 5.0, 20.0, 50.0],
            Param::Budget => &[0.10, 0.25, 0.50, 1.00],
            Param::ThinkCap => &[0.0, 50.0, 200.0, 1000.0],
            Param::SizeScale => &[0.0625, 0.25, 0.5, 1.0],
        }
    }

    /// The axis label of its plot.
    pub fn axis(self) -> &'static str {
        match self {
            Param::OriginLatency => "origin latency (ms)",
            Param::Budget => "budget (share of the working set)",
            Param::ThinkCap => "think-time cap (ms)",
            Param::SizeScale => "size scale",
        }
    }

    /// `value` as printed in tables.
    pub fn show(self, value: f64) -> String {
        match self {
            Param::OriginLatency | Param::ThinkCap => format!("{value} ms"),
            Param::Budget => format!("{}%", (value * 1000.0).round() / 10.0),
            Param::SizeScale => format!("x{value}"),
        }
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Param {
    type Err = crate::names::UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::names::parse("sweep parameter", s, &Self::ALL, Self::name)
    }
}

/// The settings of one simulated run, named as the demo's flags are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Origin latency per fetch, ms (`--latency-ms`).
    pub latency_ms: f64,
    /// Origin bandwidth, MiB/s (`--bandwidth-mib`).
    pub bandwidth_mib: f64,
    /// The guest's store and the staging budget as a share of the replay's working set (the
    /// demo's `--budget-mib` is this times the working set at this size scale).
    pub budget_share: f64,
    /// The think-time cap, ms (`--think-ms`).
    pub think_ms: f64,
    /// Factor on every resource's size (`--size-scale`).
    pub size_scale: f64,
}

impl Point {
    /// This point with `param` set to `value`.
    pub fn with(mut self, param: Param, value: f64) -> Self {
        match param {
            Param::OriginLatency => self.latency_ms = value,
            Param::Budget => self.budget_share = value,
            Param::ThinkCap => self.think_ms = value,
            Param::SizeScale => self.size_scale = value,
        }
        self
    }

    /// The value of `param` here.
    pub fn get(&self, param: Param) -> f64 {
        match param {
            Param::OriginLatency => self.latency_ms,
            Param::Budget => self.budget_share,
            Param::ThinkCap => self.think_ms,
            Param::SizeScale => self.size_scale,
        }
    }

    /// Checks the values: a clear error for each that cannot be run.
    pub fn validate(&self) -> Result<(), String> {
        let ok = |x: f64, min: f64| x.is_finite() && x >= min;
        if !ok(self.latency_ms, 0.0) {
            return Err(format!(
                "origin latency {} ms must be >= 0",
                self.latency_ms
            ));
        }
        if !(ok(self.bandwidth_mib, 0.0) && self.bandwidth_mib > 0.0) {
            return Err(format!(
                "bandwidth {} MiB/s must be positive",
                self.bandwidth_mib
            ));
        }
        if !(ok(self.budget_share, 0.0) && self.budget_share > 0.0) {
            return Err(format!(
                "budget share {} of the working set must be positive",
                self.budget_share
            ));
        }
        if !ok(self.think_ms, 0.0) {
            return Err(format!("think-time cap {} ms must be >= 0", self.think_ms));
        }
        if !(ok(self.size_scale, 0.0) && self.size_scale > 0.0) {
            return Err(format!("size scale {} must be positive", self.size_scale));
        }
        Ok(())
    }

    /// The budget in bytes for a replay whose working set is `working_set` bytes.
    pub fn budget_bytes(&self, working_set: u64) -> u64 {
        ((working_set as f64 * self.budget_share).round() as u64).max(1)
    }

    /// The `see-demo` flags that run this point in the VM (with `budget_bytes` from
    /// [`Point::budget_bytes`] at this size scale). The workload, the replayed requests and the
    /// modes are passed separately.
    pub fn demo_flags(&self, budget_bytes: u64) -> String {
        format!(
            "--latency-ms {} --bandwidth-mib {} --size-scale {} --think-ms {} --budget-mib {:.4}",
            self.latency_ms,
            self.bandwidth_mib,
            self.size_scale,
            self.think_ms.round() as u64,
            budget_bytes as f64 / 1048576.0
        )
    }
}

/// Modes that do not predict across requests: the baseline is the best of these that ran.
pub const NON_PREDICTIVE: [&str; 2] = ["reactive", "push"];

/// Modes that are neither a predictor nor a baseline.
const NEITHER: [&str; 2] = ["oracle", "reactive-nocache"];

/// Whether `mode` predicts (and so competes for the best predictor).
pub fn is_predictor(mode: &str) -> bool {
    !NON_PREDICTIVE.contains(&mode) && !NEITHER.contains(&mode)
}

/// The row of the best non-predictive mode (lowest p50 of [`NON_PREDICTIVE`]), if one ran.
pub fn best_non_predictive(rows: &[ModeSummary]) -> Option<usize> {
    best_of(rows, |m| NON_PREDICTIVE.contains(&m))
}

/// The row of the best predictor (lowest p50 among [`is_predictor`] modes), if one ran.
pub fn best_predictor(rows: &[ModeSummary]) -> Option<usize> {
    best_of(rows, is_predictor)
}

fn best_of(rows: &[ModeSummary], keep: impl Fn(&str) -> bool) -> Option<usize> {
    rows.iter()
        .enumerate()
        .filter(|(_, r)| keep(&r.mode))
        .min_by(|a, b| {
            a.1.p50_ms
                .total_cmp(&b.1.p50_ms)
                .then(b.1.hit_rate.total_cmp(&a.1.hit_rate))
        })
        .map(|(i, _)| i)
}

/// A figure with its bootstrap 95 % interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// On all the sessions.
    pub estimate: f64,
    /// 2.5th percentile of the resampled figure.
    pub lo: f64,
    /// 97.5th percentile of the resampled figure.
    pub hi: f64,
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2} [{:.2}, {:.2}]", self.estimate, self.lo, self.hi)
    }
}

/// One mode at one point.
#[derive(Clone, Debug, PartialEq)]
pub struct ModePoint {
    /// The table row (the guest's latencies, every repetition pooled).
    pub summary: ModeSummary,
    /// The host's p50, ms, every repetition pooled.
    pub p50: Interval,
    /// The host's p95, ms.
    pub p95: Interval,
    /// The guest's p50, ms: the median over the repetitions of each one's p50.
    pub guest_p50: f64,
}

/// One sweep point: every mode, and the best predictor against the best non-predictive mode.
#[derive(Clone, Debug, PartialEq)]
pub struct PointResult {
    /// The swept parameter.
    pub param: Param,
    /// Every setting at this point.
    pub point: Point,
    /// The budget, bytes.
    pub budget_bytes: u64,
    /// Every mode, in run order.
    pub modes: Vec<ModePoint>,
    /// The best predictor's mode name.
    pub best_predictor: Option<String>,
    /// The best non-predictive mode's name.
    pub baseline: Option<String>,
    /// Baseline host p50 over the best predictor's host p50 (above 1: prediction wins).
    pub speedup: Option<Interval>,
    /// Baseline host p50 over the oracle's: the most prediction could win.
    pub oracle_speedup: Option<Interval>,
}

impl PointResult {
    /// The swept value.
    pub fn value(&self) -> f64 {
        self.point.get(self.param)
    }
}

/// Session-level bootstrap resamples behind every interval.
pub const RESAMPLES: usize = 1000;

/// The latencies of the sessions `pick` of `sessions`, sorted.
fn pooled(sessions: &[Vec<u64>], pick: &[usize]) -> Vec<u64> {
    let mut v: Vec<u64> = pick
        .iter()
        .flat_map(|&i| sessions[i].iter().copied())
        .collect();
    v.sort_unstable();
    v
}

/// Analyses one point: `replays` are the modes' replays of the same sessions. The modes are
/// ranked, and the speedups taken, on the host's latencies. Deterministic (a fixed seed): the
/// same replays always print the same intervals.
pub fn analyse(
    param: Param,
    point: Point,
    budget_bytes: u64,
    replays: &[Replay],
    resamples: usize,
) -> PointResult {
    let n = replays.iter().map(|r| r.host.len()).min().unwrap_or(0);
    let ms = |sorted: &[u64], q: f64| percentile(sorted, q) as f64 / 1e6;
    let all: Vec<usize> = (0..n).collect();
    // Per resample: every mode's p50 and p95.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed_5eed);
    let mut samples: Vec<Vec<(f64, f64)>> = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        if n == 0 {
            break;
        }
        let pick: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
        samples.push(
            replays
                .iter()
                .map(|r| {
                    let l = pooled(&r.host, &pick);
                    (ms(&l, 0.5), ms(&l, 0.95))
                })
                .collect(),
        );
    }
    let interval = |estimate: f64, mut xs: Vec<f64>| {
        xs.retain(|x| x.is_finite());
        xs.sort_by(f64::total_cmp);
        if xs.is_empty() {
            return Interval {
                estimate,
                lo: estimate,
                hi: estimate,
            };
        }
        let at = |q: f64| xs[((q * (xs.len() - 1) as f64).round() as usize).min(xs.len() - 1)];
        Interval {
            estimate,
            lo: at(0.025),
            hi: at(0.975),
        }
    };
    let modes = replays
        .iter()
        .enumerate()
        .map(|(m, r)| {
            let l = pooled(&r.host, &all);
            ModePoint {
                summary: r.summary.clone(),
                p50: interval(ms(&l, 0.5), samples.iter().map(|s| s[m].0).collect()),
                p95: interval(ms(&l, 0.95), samples.iter().map(|s| s[m].1).collect()),
                guest_p50: r.median_rep_p50_ms(false),
            }
        })
        .collect::<Vec<_>>();
    // Ranked on the host's p50 (ties to the higher hit rate).
    let ranked: Vec<ModeSummary> = modes
        .iter()
        .map(|m| ModeSummary {
            p50_ms: m.p50.estimate,
            ..m.summary.clone()
        })
        .collect();
    let best = best_predictor(&ranked);
    let base = best_non_predictive(&ranked);
    let oracle = ranked.iter().position(|s| s.mode == "oracle");
    let ratio = |num: usize, den: usize| {
        let est = modes[num].p50.estimate / modes[den].p50.estimate.max(1e-9);
        interval(
            est,
            samples
                .iter()
                .map(|s| s[num].0 / s[den].0.max(1e-9))
                .collect(),
        )
    };
    PointResult {
        param,
        point,
        budget_bytes,
        best_predictor: best.map(|i| ranked[i].mode.clone()),
        baseline: base.map(|i| ranked[i].mode.clone()),
        speedup: base.zip(best).map(|(b, p)| ratio(b, p)),
        oracle_speedup: base.zip(oracle).map(|(b, o)| ratio(b, o)),
        modes,
    }
}

/// The verdict on a speedup interval: a win or a loss only when the interval excludes 1.
pub fn verdict(s: &Interval) -> &'static str {
    if s.lo > 1.0 {
        "prediction wins"
    } else if s.hi < 1.0 {
        "prediction loses"
    } else {
        "no difference"
    }
}

/// The table of a sweep: one block per point, every mode's host p50 and p95 with intervals and
/// its guest p50 (median of the repetitions'), then the speedup of the best predictor over the
/// best non-predictive mode at the host.
pub fn table(results: &[PointResult]) -> String {
    let mut out = String::new();
    for r in results {
        let _ = writeln!(
            out,
            "{} = {} (budget {:.2} MiB; {})",
            r.param,
            r.param.show(r.value()),
            r.budget_bytes as f64 / 1048576.0,
            r.point.demo_flags(r.budget_bytes)
        );
        let _ = writeln!(
            out,
            "  {:<18} {:>26} {:>26} {:>10} {:>7}",
            "mode", "host p50 ms [95% CI]", "host p95 ms [95% CI]", "guest p50", "hits"
        );
        for m in &r.modes {
            let _ = writeln!(
                out,
                "  {:<18} {:>26} {:>26} {:>10.2} {:>6.1}%",
                m.summary.mode,
                m.p50.to_string(),
                m.p95.to_string(),
                m.guest_p50,
                m.summary.hit_rate * 100.0
            );
        }
        match (&r.best_predictor, &r.baseline, &r.speedup) {
            (Some(p), Some(b), Some(s)) => {
                let _ = writeln!(
                    out,
                    "  speedup of {p} over {b} (host p50): {s}x: {}",
                    verdict(s)
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "  speedup: n/a (needs a predictor and one of {})",
                    NON_PREDICTIVE.join(", ")
                );
            }
        }
        if let Some(s) = &r.oracle_speedup {
            let _ = writeln!(out, "  oracle over the baseline (host p50): {s}x");
        }
    }
    out
}

/// A VM figure to compare: the demo's guest p50 of `mode` at `value` of `param`.
#[derive(Clone, Debug, PartialEq)]
pub struct VmFigure {
    /// The swept parameter.
    pub param: Param,
    /// Its value.
    pub value: f64,
    /// The mode.
    pub mode: String,
    /// The VM's p50, ms.
    pub p50_ms: f64,
}

/// Why a VM figures file cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("VM figures line {line}: {why}; want `param,value,mode,p50_ms` (e.g. `origin-latency,20,reactive,31.5`)")]
pub struct VmFiguresError {
    /// Line number, from 1.
    pub line: usize,
    /// What is wrong.
    pub why: String,
}

/// Reads VM figures: CSV lines `param,value,mode,p50_ms`; blank lines, `#` comments and a
/// header line starting `param` are skipped.
pub fn parse_vm_figures(text: &str) -> Result<Vec<VmFigure>, VmFiguresError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("param") {
            continue;
        }
        let err = |why: String| VmFiguresError { line: i + 1, why };
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let [param, value, mode, p50] = f[..] else {
            return Err(err(format!("{} fields, not 4", f.len())));
        };
        let param: Param = param.parse().map_err(|e| err(format!("{e}")))?;
        let num = |s: &str, what: &str| {
            s.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| err(format!("{what} {s:?} is not a number >= 0")))
        };
        out.push(VmFigure {
            param,
            value: num(value, "value")?,
            mode: mode.to_owned(),
            p50_ms: num(p50, "p50")?,
        });
    }
    Ok(out)
}

/// The most the simulation's p50 may differ from the VM's, as a share of the VM's.
pub const VM_TOLERANCE: f64 = 0.15;

/// The simulation beside the VM: one line per VM figure that matches a simulated point and
/// mode (the simulated guest p50, the median over the repetitions as the VM's is, the VM's,
/// their ratio, and whether the sim is within [`VM_TOLERANCE`]), and a count of those within
/// it.
pub fn compare_vm(results: &[PointResult], vm: &[VmFigure]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:>10} {:<18} {:>10} {:>10} {:>8}  within {:.0}%",
        "sweep",
        "value",
        "mode",
        "sim p50",
        "VM p50",
        "sim/VM",
        VM_TOLERANCE * 100.0
    );
    let (mut within, mut compared) = (0, 0);
    for f in vm {
        let found = results
            .iter()
            .filter(|r| r.param == f.param && (r.value() - f.value).abs() < 1e-9)
            .flat_map(|r| r.modes.iter())
            .find(|m| m.summary.mode == f.mode);
        let Some(m) = found else {
            let _ = writeln!(
                out,
                "{:<16} {:>10} {:<18} {:>10} {:>10.2} {:>8}  not simulated",
                f.param.name(),
                f.value,
                f.mode,
                "-",
                f.p50_ms,
                "-"
            );
            continue;
        };
        let sim = m.guest_p50;
        let ratio = sim / f.p50_ms.max(1e-9);
        let ok = (ratio - 1.0).abs() <= VM_TOLERANCE;
        compared += 1;
        within += usize::from(ok);
        let _ = writeln!(
            out,
            "{:<16} {:>10} {:<18} {:>10.2} {:>10.2} {:>8.2}  {}",
            f.param.name(),
            f.value,
            f.mode,
            sim,
            f.p50_ms,
            ratio,
            if ok { "yes" } else { "NO" }
        );
    }
    let _ = writeln!(
        out,
        "{within} of {compared} simulated p50s within {:.0}% of the VM's",
        VM_TOLERANCE * 100.0
    );
    out
}

#[cfg(test)]
mod tests;
