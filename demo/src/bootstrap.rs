//! Session-level (cluster) bootstrap intervals. Requests of one session are not independent
//! (a session that starts cold is slow throughout, a predictor that reads a session right
//! reads most of it right), so the unit of resampling is the session, never the request:
//! each resample draws as many sessions as there are, with replacement, and recomputes every
//! statistic on the requests of the drawn sessions. Statistics of several modes computed on
//! the same resample are paired (every mode replayed the same sessions), so a ratio of two
//! modes gets the interval of the ratio, not of two independent estimates.
//!
//! [`resample`] draws the resamples (seeded: the same data always gives the same intervals)
//! and keeps every resample's base statistics; [`Resamples::interval`] turns any function of
//! them (a percentile, a ratio, a share of a gain) into a 95 % percentile interval.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Resamples drawn by the demo's report.
pub const RESAMPLES: usize = 2000;

/// The seed of the demo's resamples.
pub const SEED: u64 = 0x5eed;

/// Two-sided level of the intervals: 95 %.
const ALPHA: f64 = 0.05;

/// A point estimate and its 95 % bootstrap interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// The statistic on the data as measured.
    pub point: f64,
    /// Lower bound (2.5th percentile of the resampled statistic).
    pub lo: f64,
    /// Upper bound (97.5th percentile).
    pub hi: f64,
}

impl Interval {
    /// Whether `x` lies inside the interval (bounds included).
    #[cfg(test)]
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }

    /// Whether the two intervals share a point.
    #[cfg(test)]
    pub fn overlaps(&self, other: &Interval) -> bool {
        self.lo <= other.hi && other.lo <= self.hi
    }

    /// `point [lo, hi]` with `decimals` decimals.
    pub fn show(&self, decimals: usize) -> String {
        format!(
            "{:.d$} [{:.d$}, {:.d$}]",
            self.point,
            self.lo,
            self.hi,
            d = decimals
        )
    }
}

/// How a speedup (the other mode's latency over this mode's) reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The whole interval is above 1.
    Faster,
    /// The whole interval is below 1.
    Slower,
    /// The interval contains 1.
    NoDifference,
}

impl Verdict {
    /// The verdict of a speedup interval (`> 1`: faster).
    pub fn of_speedup(i: &Interval) -> Self {
        if i.lo > 1.0 {
            Verdict::Faster
        } else if i.hi < 1.0 {
            Verdict::Slower
        } else {
            Verdict::NoDifference
        }
    }

    /// "faster", "slower" or "no difference".
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Faster => "faster",
            Verdict::Slower => "slower",
            Verdict::NoDifference => "no difference",
        }
    }
}

/// The base statistics of the data as measured and of every resample.
#[derive(Clone, Debug)]
pub struct Resamples {
    /// On the data as measured.
    pub point: Vec<f64>,
    /// One vector per resample, in the order of `point`.
    pub draws: Vec<Vec<f64>>,
}

/// Resamples `clusters` sessions `resamples` times with replacement (seeded by `seed`).
/// `stats` gets each session's multiplicity in the resample (all 1 for the data as
/// measured) and returns the base statistics.
pub fn resample<F>(clusters: usize, resamples: usize, seed: u64, mut stats: F) -> Resamples
where
    F: FnMut(&[u32]) -> Vec<f64>,
{
    let point = stats(&vec![1; clusters]);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut weights = vec![0u32; clusters];
    let draws = (0..if clusters == 0 { 0 } else { resamples })
        .map(|_| {
            weights.iter_mut().for_each(|w| *w = 0);
            for _ in 0..clusters {
                weights[rng.random_range(0..clusters)] += 1;
            }
            stats(&weights)
        })
        .collect();
    Resamples { point, draws }
}

impl Resamples {
    /// The 95 % percentile interval of `f` of the base statistics; `None` when `f` is not
    /// finite on the data as measured, or on more than 2.5 % of the resamples (a ratio whose
    /// denominator can reach 0 has no interval).
    pub fn interval(&self, f: impl Fn(&[f64]) -> f64) -> Option<Interval> {
        let point = f(&self.point);
        if !point.is_finite() || self.draws.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = self.draws.iter().map(|d| f(d)).collect();
        let n = v.len();
        v.retain(|x| x.is_finite());
        if (n - v.len()) as f64 > ALPHA / 2.0 * n as f64 {
            return None;
        }
        v.sort_by(f64::total_cmp);
        // The non-finite draws count as beyond either end; the bounds are ranks of all n.
        let rank = |q: f64| ((q * n as f64).ceil() as usize).clamp(1, v.len()) - 1;
        Some(Interval {
            point,
            lo: v[rank(ALPHA / 2.0)],
            hi: v[rank(1.0 - ALPHA / 2.0)],
        })
    }

    /// The interval of base statistic `i`.
    #[cfg(test)]
    pub fn of(&self, i: usize) -> Option<Interval> {
        self.interval(|s| s[i])
    }
}

/// The values of `clusters`, each repeated by its weight, sorted.
pub fn weighted_sorted(clusters: &[Vec<u64>], weights: &[u32]) -> Vec<u64> {
    let mut v = Vec::with_capacity(clusters.iter().map(Vec::len).sum());
    for (c, &w) in clusters.iter().zip(weights) {
        for _ in 0..w {
            v.extend_from_slice(c);
        }
    }
    v.sort_unstable();
    v
}

/// p50, p95, p99 (nearest rank, as `see_pto::online::percentile`) and the mean of `sorted`;
/// NaN for no values.
pub fn summary(sorted: &[u64]) -> [f64; 4] {
    if sorted.is_empty() {
        return [f64::NAN; 4];
    }
    let p = |q| see_pto::online::percentile(sorted, q) as f64;
    let mean = sorted.iter().map(|&x| x as f64).sum::<f64>() / sorted.len() as f64;
    [p(0.5), p(0.95), p(0.99), mean]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` sessions of `per` values each, drawn from `draw`.
    fn sessions(
        rng: &mut ChaCha8Rng,
        n: usize,
        per: usize,
        mut draw: impl FnMut(&mut ChaCha8Rng) -> u64,
    ) -> Vec<Vec<u64>> {
        (0..n)
            .map(|_| (0..per).map(|_| draw(rng)).collect())
            .collect()
    }

    #[test]
    fn intervals_cover_the_true_mean_and_median_about_95_percent_of_the_time() {
        // Uniform on 0..1000: mean 499.5, median 499 or 500. Each data set: 40 sessions of
        // 5 requests; 300 data sets, 400 resamples each.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (mut mean_in, mut median_in) = (0, 0);
        let sets = 300;
        for k in 0..sets {
            let data = sessions(&mut rng, 40, 5, |r| r.random_range(0..1000u64));
            let r = resample(data.len(), 400, k, |w| {
                summary(&weighted_sorted(&data, w)).to_vec()
            });
            mean_in += usize::from(r.of(3).unwrap().contains(499.5));
            let m = r.of(0).unwrap();
            median_in += usize::from(m.lo <= 500.0 && m.hi >= 499.0);
        }
        let mean_cov = mean_in as f64 / sets as f64;
        let median_cov = median_in as f64 / sets as f64;
        assert!(
            (0.90..=0.99).contains(&mean_cov),
            "mean coverage {mean_cov}"
        );
        assert!(
            (0.90..=0.995).contains(&median_cov),
            "median coverage {median_cov}"
        );
    }

    #[test]
    fn session_resampling_widens_intervals_of_correlated_sessions() {
        // Every session shares a random offset: its requests are far from independent. The
        // session-level interval of the mean must cover the truth about 95 % of the time,
        // where resampling requests one by one (each its own cluster) covers far less.
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (mut by_session, mut by_request) = (0, 0);
        let sets = 200;
        for k in 0..sets {
            let data: Vec<Vec<u64>> = (0..30)
                .map(|_| {
                    let offset = rng.random_range(0..1000u64);
                    (0..10)
                        .map(|_| offset + rng.random_range(0..100u64))
                        .collect()
                })
                .collect();
            let truth = 499.5 + 49.5;
            let r = resample(data.len(), 300, k, |w| {
                summary(&weighted_sorted(&data, w)).to_vec()
            });
            by_session += usize::from(r.of(3).unwrap().contains(truth));
            let flat: Vec<Vec<u64>> = data.iter().flatten().map(|&x| vec![x]).collect();
            let r = resample(flat.len(), 300, k, |w| {
                summary(&weighted_sorted(&flat, w)).to_vec()
            });
            by_request += usize::from(r.of(3).unwrap().contains(truth));
        }
        let (s, q) = (
            by_session as f64 / sets as f64,
            by_request as f64 / sets as f64,
        );
        assert!(s >= 0.88, "session-level coverage {s}");
        assert!(q < 0.75, "request-level coverage {q} should be too low");
    }

    /// Paired resamples of two modes on the same sessions: base statistics
    /// [a p50, a p95, a p99, a mean, b p50, ...].
    fn paired(a: &[Vec<u64>], b: &[Vec<u64>]) -> Resamples {
        resample(a.len(), 1000, SEED, |w| {
            let mut s = summary(&weighted_sorted(a, w)).to_vec();
            s.extend(summary(&weighted_sorted(b, w)));
            s
        })
    }

    #[test]
    fn a_known_difference_gets_a_speedup_interval_that_excludes_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let slow = sessions(&mut rng, 30, 8, |r| 20_000 + r.random_range(0..4000u64));
        let fast = sessions(&mut rng, 30, 8, |r| 10_000 + r.random_range(0..4000u64));
        let r = paired(&slow, &fast);
        for i in 0..4 {
            let speedup = r.interval(|s| s[i] / s[4 + i]).unwrap();
            assert!(speedup.lo > 1.0, "statistic {i}: {speedup:?}");
            assert!(speedup.contains(speedup.point), "{speedup:?}");
            assert_eq!(Verdict::of_speedup(&speedup), Verdict::Faster);
            let back = r.interval(|s| s[4 + i] / s[i]).unwrap();
            assert_eq!(Verdict::of_speedup(&back), Verdict::Slower);
        }
    }

    #[test]
    fn identical_modes_are_no_difference() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let a = sessions(&mut rng, 30, 8, |r| 10_000 + r.random_range(0..4000u64));
        let r = paired(&a, &a);
        let speedup = r.interval(|s| s[0] / s[4]).unwrap();
        assert_eq!((speedup.lo, speedup.hi), (1.0, 1.0));
        assert_eq!(Verdict::of_speedup(&speedup), Verdict::NoDifference);
        // Two draws of the same distribution: the paired interval covers 1.
        let b = sessions(&mut rng, 30, 8, |r| 10_000 + r.random_range(0..4000u64));
        let r = paired(&a, &b);
        let speedup = r.interval(|s| s[3] / s[7]).unwrap();
        assert_eq!(
            Verdict::of_speedup(&speedup),
            Verdict::NoDifference,
            "{speedup:?}"
        );
        assert!(r.of(3).unwrap().overlaps(&r.of(7).unwrap()));
    }

    #[test]
    fn resampling_is_seeded() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let a = sessions(&mut rng, 20, 4, |r| r.random_range(0..1000u64));
        let stats = |w: &[u32]| summary(&weighted_sorted(&a, w)).to_vec();
        let x = resample(a.len(), 200, 1, stats).of(0);
        assert_eq!(x, resample(a.len(), 200, 1, stats).of(0));
        assert_ne!(x, resample(a.len(), 200, 2, stats).of(0));
    }

    #[test]
    fn a_ratio_whose_denominator_reaches_zero_has_no_interval() {
        // Statistic 1 is 0 in most resamples of these sessions: x / s[1] is infinite there.
        let data = vec![vec![0u64], vec![0], vec![0], vec![5]];
        let r = resample(data.len(), 500, SEED, |w| {
            let v = weighted_sorted(&data, w);
            vec![1.0, v.iter().sum::<u64>() as f64]
        });
        assert_eq!(r.interval(|s| s[0] / s[1]), None);
        assert!(r.of(0).is_some());
        assert!(resample(0, 10, 1, |_| vec![1.0]).of(0).is_none());
    }

    #[test]
    fn summary_uses_nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(summary(&v), [50.0, 95.0, 99.0, 50.5]);
        assert!(summary(&[]).iter().all(|x| x.is_nan()));
        assert_eq!(
            weighted_sorted(&[vec![3, 1], vec![2]], &[2, 0]),
            [1, 1, 3, 3]
        );
    }
}
