//! Evaluation of predictors on held-out sessions: accuracy, ranking, prefetch figures at a
//! budget and inference cost, plus the Bayes-optimal limit on generated workloads.
//!
//! Every request after the first of a test session is one position: the predictor sees the
//! requests before it and is scored on it, as it would be online when the previous request
//! arrives. One call `predict_session(state, context, 10)` per position is timed and scored
//! (MRR is MRR@10), with one [`SessionState`] per session as the online path keeps it.

use std::{fmt::Write as _, time::Instant};

use serde::Serialize;

use crate::{
    predict::{Predictor, SessionContext, SessionState},
    trace::Session,
};

/// How many predictions the ranking figures look at.
pub const RANK_DEPTH: usize = 10;

/// Prefetch policy under evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalConfig {
    /// Budget K: at most this many predicted request types are staged per request.
    pub budget: usize,
    /// Only predictions at least this likely are staged.
    pub threshold: f32,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            budget: 3,
            threshold: 0.05,
        }
    }
}

/// The figures of one predictor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metrics {
    /// Predictor name.
    pub name: String,
    /// Positions scored.
    pub positions: u64,
    /// Next request ranked first.
    pub top1: f64,
    /// Next request in the first 3.
    pub top3: f64,
    /// Next request in the first 5.
    pub top5: f64,
    /// Mean reciprocal rank (0 beyond rank 10).
    pub mrr: f64,
    /// Positions whose request had been staged (in the top K above the threshold).
    pub staged_hit_rate: f64,
    /// Staged predictions that were used; `None` when nothing was staged.
    pub precision: Option<f64>,
    /// Staged predictions not used, per request.
    pub wasted_per_request: f64,
    /// Mean inference time per request, microseconds (`None` for the Bayes limit).
    pub us_per_request: Option<f64>,
    /// Per position: bit 0 set when the next request was ranked first, bit 1 when it was in
    /// the first 3 (empty for the Bayes limit, which is an expectation). For [`paired`].
    #[serde(skip)]
    pub outcomes: Vec<u8>,
    /// Positions per test session, in order (they partition [`Metrics::outcomes`]): the
    /// clusters [`paired`] resamples. Empty: every position is its own cluster.
    #[serde(skip)]
    pub session_positions: Vec<u32>,
    /// Per position, the probability that the Bayes-optimal top-1 guess is right (only for
    /// the Bayes limit): what [`versus_limit`] pairs a predictor's outcomes with.
    #[serde(skip)]
    pub expected_top1: Vec<f32>,
}

impl Metrics {
    /// Requests per second on one core, from the mean inference time.
    pub fn requests_per_s(&self) -> Option<f64> {
        self.us_per_request.filter(|&u| u > 0.0).map(|u| 1e6 / u)
    }
}

#[derive(Default)]
struct Acc {
    n: u64,
    top: [f64; 3],
    mrr: f64,
    hits: f64,
    staged: f64,
    nanos: u128,
    outcomes: Vec<u8>,
    session_positions: Vec<u32>,
    expected_top1: Vec<f32>,
}

impl Acc {
    fn finish(self, name: &str, timed: bool) -> Metrics {
        let n = self.n.max(1) as f64;
        Metrics {
            name: name.to_owned(),
            positions: self.n,
            top1: self.top[0] / n,
            top3: self.top[1] / n,
            top5: self.top[2] / n,
            mrr: self.mrr / n,
            staged_hit_rate: self.hits / n,
            precision: (self.staged > 0.0).then(|| self.hits / self.staged),
            wasted_per_request: (self.staged - self.hits) / n,
            us_per_request: timed.then(|| self.nanos as f64 / 1e3 / n),
            outcomes: self.outcomes,
            session_positions: self.session_positions,
            expected_top1: self.expected_top1,
        }
    }
}

/// Scores `p` on every position of `sessions`.
pub fn evaluate(p: &dyn Predictor, sessions: &[Session], cfg: EvalConfig) -> Metrics {
    let mut acc = Acc::default();
    let mut ctx = SessionContext::new();
    for s in sessions {
        ctx.clear();
        let mut state = SessionState::default();
        acc.session_positions
            .push(u32::try_from(s.requests.len().saturating_sub(1)).unwrap_or(u32::MAX));
        let features = s.features();
        for (t, r) in s.requests.iter().enumerate() {
            if t > 0 {
                let start = Instant::now();
                let preds = p.predict_session(&mut state, &ctx, RANK_DEPTH.max(cfg.budget));
                acc.nanos += start.elapsed().as_nanos();
                acc.n += 1;
                let rank = preds.iter().position(|x| x.kind == r.kind);
                acc.outcomes.push(match rank {
                    Some(0) => 0b11,
                    Some(1 | 2) => 0b10,
                    _ => 0,
                });
                if let Some(i) = rank {
                    for (j, k) in [1, 3, 5].iter().enumerate() {
                        acc.top[j] += f64::from(u8::from(i < *k));
                    }
                    if i < RANK_DEPTH {
                        acc.mrr += 1.0 / (i + 1) as f64;
                    }
                }
                let staged = preds
                    .iter()
                    .take(cfg.budget)
                    .take_while(|x| x.probability >= cfg.threshold);
                let staged: Vec<_> = staged.collect();
                acc.staged += staged.len() as f64;
                acc.hits += f64::from(u8::from(staged.iter().any(|x| x.kind == r.kind)));
            }
            ctx.push_with(r.kind, features[t]);
        }
    }
    acc.finish(p.name(), true)
}

/// The expected figures of the Bayes-optimal predictor (it ranks by the true distribution),
/// if every session carries its true next-request distributions (generated workloads).
pub fn bayes_optimal(sessions: &[Session], cfg: EvalConfig) -> Option<Metrics> {
    let mut acc = Acc::default();
    for s in sessions {
        if s.truth.len() + 1 < s.requests.len() {
            return None;
        }
        let positions = s.requests.len().saturating_sub(1);
        acc.session_positions
            .push(u32::try_from(positions).unwrap_or(u32::MAX));
        for d in s.truth.iter().take(positions) {
            acc.n += 1;
            acc.expected_top1.push(d.first().map_or(0.0, |x| x.1));
            for (i, &(_, p)) in d.iter().enumerate().take(RANK_DEPTH) {
                let p = f64::from(p);
                acc.mrr += p / (i + 1) as f64;
                if i == 0 {
                    acc.top[0] += p;
                }
                if i < 3 {
                    acc.top[1] += p;
                }
                if i < 5 {
                    acc.top[2] += p;
                }
            }
            for &(_, p) in d
                .iter()
                .take(cfg.budget)
                .take_while(|x| x.1 >= cfg.threshold)
            {
                acc.staged += 1.0;
                acc.hits += f64::from(p);
            }
        }
    }
    (acc.n > 0).then(|| acc.finish("bayes-optimal (limit)", false))
}

/// Mean microseconds of `predict(context, budget)` for contexts of each of `lengths`
/// requests (cycling through the known types), over `reps` calls each: the cost of long
/// sessions, which the test positions rarely reach.
pub fn latency_by_context(
    p: &dyn Predictor,
    lengths: &[usize],
    reps: usize,
    budget: usize,
) -> Vec<f64> {
    let known = (p.vocabulary().len() as u32).saturating_sub(1).max(1);
    lengths
        .iter()
        .map(|&n| {
            let ctx =
                SessionContext::from_ids(&(0..n as u32).map(|i| 1 + i % known).collect::<Vec<_>>());
            let start = Instant::now();
            let mut sink = 0usize;
            for _ in 0..reps.max(1) {
                sink += p.predict(&ctx, budget).len();
            }
            std::hint::black_box(sink);
            start.elapsed().as_secs_f64() * 1e6 / reps.max(1) as f64
        })
        .collect()
}

/// A difference in accuracy between two predictors scored on the same positions, with the
/// half-width of its 95 % confidence interval. Positions of one session are not independent
/// (a predictor that reads a session right tends to read all of it right), so the interval
/// comes from a session-level (cluster) bootstrap: whole sessions are resampled with
/// replacement, and the half-width is 1.96 standard deviations of the resampled means.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Difference {
    /// Mean difference (a fraction: 0.01 is one point).
    pub mean: f64,
    /// 1.96 bootstrap standard errors of the mean.
    pub ci95: f64,
}

/// Bootstrap resamples behind a [`Difference`].
const RESAMPLES: usize = 2000;

impl Difference {
    /// The difference of bit `bit` of `a` over `b`, clustered by `sessions` (positions per
    /// session, summing to the outcomes' length; empty: one cluster per position).
    fn of(a: &[u8], b: &[u8], bit: u8, sessions: &[u32]) -> Self {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(x >> bit & 1) - f64::from(y >> bit & 1));
        Self::of_differences(d, sessions)
    }

    /// The mean of the per-position differences `d`, clustered by `sessions`.
    fn of_differences(d: impl Iterator<Item = f64>, sessions: &[u32]) -> Self {
        use rand::{Rng, SeedableRng};

        // (sum of differences, positions) per cluster.
        let clusters: Vec<(f64, f64)> = if sessions.is_empty() {
            d.map(|x| (x, 1.0)).collect()
        } else {
            let mut d = d;
            sessions
                .iter()
                .map(|&n| ((&mut d).take(n as usize).sum(), f64::from(n)))
                .collect()
        };
        let (sum, n) = clusters
            .iter()
            .fold((0.0, 0.0), |(s, n), c| (s + c.0, n + c.1));
        let mean = sum / n.max(1.0);
        // Fixed seed: the same scores always print the same interval.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed);
        let mut means = Vec::with_capacity(RESAMPLES);
        for _ in 0..RESAMPLES {
            let (mut s, mut m) = (0.0, 0.0);
            for _ in 0..clusters.len() {
                let c = clusters[rng.random_range(0..clusters.len())];
                s += c.0;
                m += c.1;
            }
            if m > 0.0 {
                means.push(s / m);
            }
        }
        let k = means.len().max(1) as f64;
        let centre = means.iter().sum::<f64>() / k;
        let var = means.iter().map(|x| (x - centre).powi(2)).sum::<f64>() / (k - 1.0).max(1.0);
        Self {
            mean,
            ci95: 1.96 * var.sqrt(),
        }
    }

    /// "better", "worse", or "same within noise" when the interval covers zero.
    pub fn verdict(&self) -> &'static str {
        if self.mean - self.ci95 > 0.0 {
            "better"
        } else if self.mean + self.ci95 < 0.0 {
            "worse"
        } else {
            "same within noise"
        }
    }
}

/// Top-1 and top-3 differences of `a` over `b`, paired position by position and resampled
/// by session; `None` unless both were scored on the same positions of the same sessions.
pub fn paired(a: &Metrics, b: &Metrics) -> Option<(Difference, Difference)> {
    let n = a.outcomes.len();
    let sessions = &a.session_positions;
    let same = n == b.outcomes.len()
        && n > 0
        && *sessions == b.session_positions
        && (sessions.is_empty() || sessions.iter().map(|&x| x as usize).sum::<usize>() == n);
    same.then(|| {
        (
            Difference::of(&a.outcomes, &b.outcomes, 0, sessions),
            Difference::of(&a.outcomes, &b.outcomes, 1, sessions),
        )
    })
}

/// The top-1 difference of `a` over the Bayes limit `limit` (its expected top-1 accuracy per
/// position), paired position by position and resampled by session; `None` unless `limit`
/// is a Bayes limit over the same positions of the same sessions.
pub fn versus_limit(a: &Metrics, limit: &Metrics) -> Option<Difference> {
    let n = a.outcomes.len();
    let same = n > 0
        && limit.expected_top1.len() == n
        && a.session_positions == limit.session_positions
        && a.session_positions
            .iter()
            .map(|&x| x as usize)
            .sum::<usize>()
            == n;
    same.then(|| {
        let d = a
            .outcomes
            .iter()
            .zip(&limit.expected_top1)
            .map(|(o, p)| f64::from(o & 1) - f64::from(*p));
        Difference::of_differences(d, &a.session_positions)
    })
}

/// A Markdown table comparing every row not in `baselines` (nor the Bayes limit) with the
/// best of `baselines` by top-1, paired on the same positions; empty if no baseline is there.
pub fn comparison(rows: &[Metrics], baselines: &[&str]) -> String {
    let Some(base) = rows
        .iter()
        .filter(|m| baselines.contains(&m.name.as_str()))
        .max_by(|a, b| a.top1.total_cmp(&b.top1))
    else {
        return String::new();
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| predictor | vs | top-1 points (95 % CI) | | top-3 points (95 % CI) | |"
    );
    let _ = writeln!(out, "| --- | --- | ---: | --- | ---: | --- |");
    for m in rows
        .iter()
        .filter(|m| !baselines.contains(&m.name.as_str()))
    {
        let Some((t1, t3)) = paired(m, base) else {
            continue;
        };
        let cell = |d: Difference| format!("{:+.1} ± {:.1}", 100.0 * d.mean, 100.0 * d.ci95);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            m.name,
            base.name,
            cell(t1),
            t1.verdict(),
            cell(t3),
            t3.verdict()
        );
    }
    out
}

fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

/// A Markdown table of `rows`, one predictor per row.
pub fn table(rows: &[Metrics], cfg: EvalConfig) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| predictor | top-1 % | top-3 % | top-5 % | MRR | staged-hit % (K={k}) | precision % | wasted/req | us/req | req/s |",
        k = cfg.budget
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for m in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.3} | {} | {} | {:.2} | {} | {} |",
            m.name,
            pct(m.top1),
            pct(m.top3),
            pct(m.top5),
            m.mrr,
            pct(m.staged_hit_rate),
            m.precision.map_or("-".into(), pct),
            m.wasted_per_request,
            m.us_per_request.map_or("-".into(), |u| format!("{u:.2}")),
            m.requests_per_s().map_or("-".into(), |r| format!("{r:.0}")),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        generate::{generate, Workload, WorkloadSpec},
        metadata::ServiceCatalogue,
        predict::{observe_sessions, Ppm, Reactive},
        split::SplitSpec,
        trace::Request,
        vocab::Vocabulary,
    };

    fn sess(kinds: &[u32]) -> Session {
        Session {
            requests: kinds.iter().map(|&kind| Request::new(kind, 0)).collect(),
            ..Session::default()
        }
    }

    #[test]
    fn figures_are_counted_by_hand() {
        let v = Arc::new(Vocabulary::from_names(["a", "b", "c"]));
        let mut m = Ppm::markov1(v.clone());
        // a -> b three times, a -> c once
        observe_sessions(
            &mut m,
            &[sess(&[1, 2]), sess(&[1, 2]), sess(&[1, 2]), sess(&[1, 3])],
        );
        let test = [sess(&[1, 2]), sess(&[1, 3])];
        let cfg = EvalConfig {
            budget: 1,
            threshold: 0.0,
        };
        let r = evaluate(&m, &test, cfg);
        assert_eq!(r.positions, 2);
        assert_eq!((r.top1, r.top3), (0.5, 1.0));
        assert!((r.mrr - 0.75).abs() < 1e-9);
        assert_eq!(
            (r.staged_hit_rate, r.precision, r.wasted_per_request),
            (0.5, Some(0.5), 0.5)
        );
        assert!(r.us_per_request.unwrap() > 0.0 && r.requests_per_s().unwrap() > 0.0);
        let none = evaluate(&Reactive::new(v), &test, cfg);
        assert_eq!(
            (none.top1, none.staged_hit_rate, none.precision),
            (0.0, 0.0, None)
        );
        let strict = evaluate(
            &m,
            &test,
            EvalConfig {
                budget: 3,
                threshold: 0.9,
            },
        );
        assert_eq!(
            (strict.staged_hit_rate, strict.precision),
            (0.0, None),
            "nothing is that sure"
        );
        let t = table(&[r, none], cfg);
        assert_eq!(t.lines().count(), 4);
        assert!(t.contains("| markov1 | 50.0 | 100.0 |"), "{t}");
        assert!(
            bayes_optimal(&test, cfg).is_none(),
            "real traces have no truth"
        );
    }

    #[test]
    fn paired_differences_and_their_verdicts() {
        let m = |name: &str, outcomes: Vec<u8>| Metrics {
            name: name.into(),
            positions: outcomes.len() as u64,
            top1: outcomes.iter().filter(|&&o| o & 1 == 1).count() as f64 / outcomes.len() as f64,
            top3: 0.0,
            top5: 0.0,
            mrr: 0.0,
            staged_hit_rate: 0.0,
            precision: None,
            wasted_per_request: 0.0,
            us_per_request: None,
            outcomes,
            session_positions: Vec::new(),
            expected_top1: Vec::new(),
        };
        // 1000 positions: a is right on 600, b on 500 of them, b's a subset of a's.
        let a = m(
            "a",
            (0..1000).map(|i| if i < 600 { 0b11 } else { 0 }).collect(),
        );
        let b = m(
            "b",
            (0..1000).map(|i| if i < 500 { 0b11 } else { 0 }).collect(),
        );
        let (t1, t3) = paired(&a, &b).unwrap();
        assert!((t1.mean - 0.1).abs() < 1e-12 && t1.ci95 > 0.0 && t1.ci95 < 0.03);
        assert_eq!((t1.verdict(), t3.verdict()), ("better", "better"));
        assert_eq!(paired(&b, &a).unwrap().0.verdict(), "worse");
        // The same outcomes but one: same within noise.
        let mut c = a.clone();
        c.name = "c".into();
        c.outcomes[0] = 0;
        assert_eq!(paired(&c, &a).unwrap().0.verdict(), "same within noise");
        // Different positions are not compared.
        let short = m("s", vec![1; 10]);
        assert!(paired(&a, &short).is_none());
        let t = comparison(&[a, b, c], &["b"]);
        assert!(t.contains("| a | b | +10.0 ± "), "{t}");
        assert_eq!(t.lines().count(), 4, "{t}");
    }

    /// 20 sessions of 50 positions: in 10 of them a is right everywhere and b wrong, in the
    /// other 10 both are right. Taken position by position the 1000 differences look like a
    /// tight +0.5; but there are only 20 independent sessions, and the interval must say so.
    #[test]
    fn paired_intervals_resample_whole_sessions() {
        let m = |name: &str, outcomes: Vec<u8>| Metrics {
            name: name.into(),
            positions: outcomes.len() as u64,
            top1: 0.0,
            top3: 0.0,
            top5: 0.0,
            mrr: 0.0,
            staged_hit_rate: 0.0,
            precision: None,
            wasted_per_request: 0.0,
            us_per_request: None,
            outcomes,
            session_positions: vec![50; 20],
            expected_top1: Vec::new(),
        };
        let a = m("a", vec![0b11; 1000]);
        let b = m(
            "b",
            (0..1000).map(|i| if i < 500 { 0 } else { 0b11 }).collect(),
        );
        let (t1, _) = paired(&a, &b).unwrap();
        assert!((t1.mean - 0.5).abs() < 1e-12);
        // Position by position (normal approximation): 1.96 * sqrt(0.25 / 1000) = 0.031.
        let per_position = Difference::of(&a.outcomes, &b.outcomes, 0, &[]);
        assert!(
            (per_position.ci95 - 0.031).abs() < 0.005,
            "{per_position:?}"
        );
        // By session: 1.96 * sqrt(0.25 / 20) = 0.219, and that is what `paired` reports.
        assert!((t1.ci95 - 0.219).abs() < 0.03, "{t1:?}");
        assert!(t1.ci95 > 5.0 * per_position.ci95);
        // Scores of other sessions are not paired.
        let mut other = b.clone();
        other.session_positions = vec![100; 10];
        assert!(paired(&a, &other).is_none());
        // Session lengths that do not add up to the positions are refused too.
        let (mut a2, mut b2) = (a.clone(), b.clone());
        a2.session_positions = vec![50; 19];
        b2.session_positions = vec![50; 19];
        assert!(paired(&a2, &b2).is_none());
    }

    #[test]
    fn no_predictor_beats_the_bayes_limit_on_generated_data() {
        let cat = ServiceCatalogue::default_catalogue();
        let trace = generate(
            &cat.vocabulary(),
            &WorkloadSpec::preset(Workload::Markov, 1500, 5),
        )
        .unwrap();
        let split = SplitSpec::default().split(&trace.sessions);
        let mut ppm = Ppm::new(Arc::new(trace.vocab.clone()), 2);
        observe_sessions(&mut ppm, &split.train);
        let cfg = EvalConfig::default();
        let got = evaluate(&ppm, &split.test, cfg);
        let limit = bayes_optimal(&split.test, cfg).unwrap();
        assert_eq!(got.positions, limit.positions);
        // The empirical score can exceed the expectation by sampling noise only.
        assert!(
            got.top1 <= limit.top1 + 0.03,
            "{} vs {}",
            got.top1,
            limit.top1
        );
        assert!(
            got.top1 > 0.8 * limit.top1,
            "an order-2 model nearly reaches it: {} vs {}",
            got.top1,
            limit.top1
        );
        // Paired with the limit position by position: the same mean gap, with an interval.
        let d = versus_limit(&got, &limit).unwrap();
        assert!((d.mean - (got.top1 - limit.top1)).abs() < 1e-6, "{d:?}");
        assert!(d.ci95 > 0.0 && d.ci95 < 0.05, "{d:?}");
        assert_ne!(d.verdict(), "better", "{d:?}");
        assert!(
            versus_limit(&got, &got).is_none(),
            "only a limit is a limit"
        );
    }
}
