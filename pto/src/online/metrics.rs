//! Per-mode figures of the online path: request latency percentiles, staged-hit rate,
//! precision, wasted staged bytes, demand fetches and traffic.

use std::fmt;

/// Counters the orchestrator keeps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Request latencies (ns), as the guest measured them.
    pub latencies_ns: Vec<u64>,
    /// Claims that found their resource staged (the first claim of a prefetched resource).
    pub hits: u64,
    /// Claims served from the guest's cache otherwise (claimed before, or demanded earlier).
    pub cache_hits: u64,
    /// Claims that missed and demand-fetched.
    pub misses: u64,
    /// Resources prefetched (orders issued).
    pub prefetched: u64,
    /// Bytes prefetched.
    pub prefetched_bytes: u64,
    /// Prefetched resources that were claimed.
    pub useful: u64,
    /// Bytes of prefetched resources claimed.
    pub useful_bytes: u64,
    /// Prefetched resources the guest evicted, rejected or never claimed.
    pub wasted: u64,
    /// Their bytes.
    pub wasted_bytes: u64,
    /// Demand fetches served.
    pub demand_fetches: u64,
    /// Their bytes.
    pub demand_bytes: u64,
    /// Bundles the guest rejected.
    pub rejected: u64,
    /// Orders skipped because they did not fit the budget.
    pub skipped_budget: u64,
    /// Resources the policy wanted again while the guest still held the copy it had given
    /// up on: staged again without being sent.
    pub readopted: u64,
    /// Requests that completed with an error status.
    pub failed: u64,
    /// Wall time spent planning (`on_request` and `on_completion`), ns.
    pub plan_ns: u64,
}

/// The `q`-quantile (0..=1) of `sorted` by nearest rank; 0 for none.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One row of the per-mode table.
#[derive(Clone, Debug, PartialEq)]
pub struct ModeSummary {
    /// The mode (or predictor) name.
    pub mode: String,
    /// Requests completed.
    pub requests: u64,
    /// Latency percentiles, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Claims served without a transfer (staged hits and cache hits) over all claims.
    pub hit_rate: f64,
    /// Claimed prefetches over prefetches; `None` when nothing was prefetched.
    pub precision: Option<f64>,
    /// Bytes prefetched and never claimed.
    pub wasted_bytes: u64,
    /// Demand fetches.
    pub demand_fetches: u64,
    /// Bytes moved into the guest (prefetched + demanded).
    pub traffic_bytes: u64,
    /// Bytes prefetched.
    pub prefetched_bytes: u64,
    /// Mean wall time the orchestrator spent planning per request (prediction included), us.
    pub plan_us: f64,
}

impl Metrics {
    /// Adds `other`'s counters and latencies to these: the figures of several runs pooled
    /// (the simulation's repetitions, each on a fresh orchestrator).
    pub fn merge(&mut self, other: &Metrics) {
        self.latencies_ns.extend_from_slice(&other.latencies_ns);
        self.hits += other.hits;
        self.cache_hits += other.cache_hits;
        self.misses += other.misses;
        self.prefetched += other.prefetched;
        self.prefetched_bytes += other.prefetched_bytes;
        self.useful += other.useful;
        self.useful_bytes += other.useful_bytes;
        self.wasted += other.wasted;
        self.wasted_bytes += other.wasted_bytes;
        self.demand_fetches += other.demand_fetches;
        self.demand_bytes += other.demand_bytes;
        self.rejected += other.rejected;
        self.skipped_budget += other.skipped_budget;
        self.readopted += other.readopted;
        self.failed += other.failed;
        self.plan_ns += other.plan_ns;
    }

    /// The summary row for `mode`.
    pub fn summary(&self, mode: &str) -> ModeSummary {
        let mut l = self.latencies_ns.clone();
        l.sort_unstable();
        let ms = |q| percentile(&l, q) as f64 / 1e6;
        let claims = self.hits + self.cache_hits + self.misses;
        ModeSummary {
            mode: mode.into(),
            requests: l.len() as u64,
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            hit_rate: if claims == 0 {
                0.0
            } else {
                (self.hits + self.cache_hits) as f64 / claims as f64
            },
            precision: (self.prefetched > 0).then(|| self.useful as f64 / self.prefetched as f64),
            wasted_bytes: self.wasted_bytes,
            demand_fetches: self.demand_fetches,
            traffic_bytes: self.prefetched_bytes + self.demand_bytes,
            prefetched_bytes: self.prefetched_bytes,
            plan_us: if l.is_empty() {
                0.0
            } else {
                self.plan_ns as f64 / 1e3 / l.len() as f64
            },
        }
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

impl ModeSummary {
    /// The table header matching [`fmt::Display`].
    pub fn header() -> String {
        format!(
            "{:<16} {:>6} {:>9} {:>9} {:>9} {:>7} {:>9} {:>11} {:>8} {:>11} {:>8}",
            "mode",
            "reqs",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "hit %",
            "precis %",
            "wasted MiB",
            "demands",
            "traffic MiB",
            "plan us"
        )
    }
}

impl fmt::Display for ModeSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<16} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>7.1} {:>9} {:>11.1} {:>8} {:>11.1} {:>8.1}",
            self.mode,
            self.requests,
            self.p50_ms,
            self.p95_ms,
            self.p99_ms,
            100.0 * self.hit_rate,
            self.precision
                .map_or_else(|| "n/a".into(), |p| format!("{:.1}", 100.0 * p)),
            mib(self.wasted_bytes),
            self.demand_fetches,
            mib(self.traffic_bytes),
            self.plan_us
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 0.95), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn merged_runs_pool_their_latencies_and_counters() {
        let a = Metrics {
            latencies_ns: vec![1_000_000, 3_000_000],
            hits: 2,
            misses: 1,
            demand_fetches: 1,
            demand_bytes: 10,
            ..Metrics::default()
        };
        let b = Metrics {
            latencies_ns: vec![2_000_000],
            cache_hits: 1,
            prefetched: 4,
            prefetched_bytes: 40,
            useful: 1,
            ..Metrics::default()
        };
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(m.latencies_ns, [1_000_000, 3_000_000, 2_000_000]);
        let s = m.summary("x");
        assert_eq!((s.requests, s.p50_ms), (3, 2.0));
        assert_eq!(s.hit_rate, 0.75);
        assert_eq!(s.precision, Some(0.25));
        assert_eq!(s.traffic_bytes, 50);
    }

    #[test]
    fn summary_rates() {
        let m = Metrics {
            latencies_ns: vec![3_000_000, 1_000_000, 2_000_000],
            hits: 3,
            misses: 1,
            prefetched: 4,
            useful: 3,
            prefetched_bytes: 400,
            demand_bytes: 100,
            wasted_bytes: 100,
            ..Metrics::default()
        };
        let s = m.summary("x");
        assert_eq!((s.requests, s.p50_ms, s.p99_ms), (3, 2.0, 3.0));
        assert_eq!(
            (s.hit_rate, s.precision, s.traffic_bytes),
            (0.75, Some(0.75), 500)
        );
        assert!(s.to_string().starts_with("x "));
        assert!(s.to_string().contains(" 75.0 "), "{s}");
        // Nothing prefetched: no precision, and the table says so.
        let none = Metrics::default().summary("r");
        assert_eq!(none.precision, None);
        assert!(none.to_string().contains(" n/a "), "{none}");
    }
}
