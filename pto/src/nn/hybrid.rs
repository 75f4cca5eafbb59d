//! A learned model interpolated with a count baseline: `w * p_model + (1 - w) * p_count`,
//! where the weight `w` depends on how much evidence the count model has for the context.
//! The count model is a [`CountModel`]: the context-blind PPM, or the context-aware PPM where
//! it is the best count model on validation ([`CountModel::select`]), so that the mixture
//! falls back to it where the context decides the next request.
//!
//! Neural models learn long-range structure that counts cannot see, but where a short context
//! has been seen often the counts are sharper than a model trained on the same data. The
//! weight is chosen per evidence bucket (the count of PPM's longest matching context) on the
//! validation split, maximising the held-out log-likelihood over a grid, with the PPM counted
//! on the training split only so that the choice is not biased towards in-sample counts.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{NeuralPredictor, NnError};
use crate::{
    context::Attributes,
    predict::{
        top_k, ContextPpm, CountDistribution, CountModel, Prediction, Predictor, SessionContext,
        SessionState,
    },
    trace::Session,
    vocab::{TypeId, Vocabulary},
};

/// Upper bounds (exclusive) of the evidence buckets; the last bucket is open.
const BUCKETS: [u32; 5] = [1, 4, 16, 64, 256];

/// Mixture weights on the learned model, one per evidence bucket (counts `0`, `1..4`,
/// `4..16`, `16..64`, `64..256`, `256..`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MixWeights(pub [f32; 6]);

impl MixWeights {
    fn bucket(support: u32) -> usize {
        BUCKETS
            .iter()
            .position(|&b| support < b)
            .unwrap_or(BUCKETS.len())
    }

    /// The weight for a context of `support` observations.
    pub fn weight(&self, support: u32) -> f32 {
        self.0[Self::bucket(support)].clamp(0.0, 1.0)
    }
}

/// A learned model mixed with a count model.
#[derive(Clone, Debug)]
pub struct Hybrid {
    name: String,
    model: NeuralPredictor,
    ppm: CountModel,
    weights: MixWeights,
}

impl Hybrid {
    /// Mixes `model` and the count model `ppm` (a [`crate::predict::Ppm`] or a
    /// [`crate::predict::ContextPpm`]) with `weights` on the model; both must use one
    /// vocabulary.
    pub fn new(
        model: NeuralPredictor,
        ppm: impl Into<CountModel>,
        weights: MixWeights,
    ) -> Result<Self, NnError> {
        let ppm = ppm.into();
        if model.vocabulary() != ppm.vocabulary() {
            return Err(NnError::Vocabulary);
        }
        // Online, the request's attribute ids are translated to the one schema the mixture
        // reports ([`Predictor::attributes`]): both parts must read them alike.
        if let (Some(a), Some(b)) = (model.attributes(), ppm.attributes()) {
            if !a.same_ids(b) {
                return Err(NnError::AttributeSchema);
            }
        }
        Ok(Self {
            name: format!("{}+{}", model.name(), ppm.name()),
            model,
            ppm,
            weights,
        })
    }

    /// The weights on the learned model.
    pub fn weights(&self) -> MixWeights {
        self.weights
    }

    /// The count model it mixes with.
    pub fn counts(&self) -> &CountModel {
        &self.ppm
    }

    /// The full mixed distribution.
    pub fn distribution(&self, context: &SessionContext) -> Vec<f32> {
        self.mix(context, self.model.distribution(context))
    }

    fn mix(&self, context: &SessionContext, a: Vec<f32>) -> Vec<f32> {
        let w = self.weights.weight(self.ppm.support(context));
        let b = self.ppm.distribution(context);
        a.iter()
            .zip(&b)
            .map(|(x, y)| w * x + (1.0 - w) * y)
            .collect()
    }
}

/// The weights in `0, 0.05, .., 1` (per evidence bucket) that maximise the log-likelihood of
/// `val` under the mixture of `model` and the count model `ppm` (a [`crate::predict::Ppm`],
/// [`crate::predict::ContextPpm`] or [`CountModel`], which must not have seen `val`). A bucket
/// without validation positions gets the overall best weight.
///
/// The mixture must never score below its better component: the better of the model alone
/// (every weight 1) and PPM alone (every weight 0) on `val` is the one with more top-1 hits,
/// then top-3 hits, then log-likelihood; unless the fitted weights beat it there (as many
/// top-1 and top-3 hits or more, and more of one, or the same and a higher likelihood), its
/// weights are returned instead.
pub fn fit_weights<C: CountDistribution + ?Sized>(
    model: &NeuralPredictor,
    ppm: &C,
    val: &[Session],
) -> MixWeights {
    fit(
        &|ctx| model.distribution(ctx),
        &|ctx| (ppm.distribution(ctx), ppm.support(ctx)),
        val,
    )
}

/// The count model and weights to mix `model` with, as `pto eval`, `pto train` and
/// `pto simulate` choose them: the context-aware PPM's conditioning chosen on `val`
/// ([`ContextPpm::select`], over the attributes `attrs`), then the best count model on `val`
/// among it, the context-blind PPM of `order` and first-order Markov ([`CountModel::select`]),
/// then the weights fitted on `val` ([`fit_weights`]). Every count model is counted on `train`
/// only, the one returned too (count the validation sessions into it before serving); with
/// the validation top-1 of the count models compared.
pub fn choose_mixture(
    model: &NeuralPredictor,
    attrs: &Attributes,
    order: usize,
    train: &[Session],
    val: &[Session],
) -> (CountModel, MixWeights, Vec<(String, f64)>) {
    let vocab = model.vocabulary().clone();
    let (ctx, _) = ContextPpm::select(vocab.clone(), attrs, order, train, val);
    let (counts, tried) = CountModel::select(vocab, ctx, order, train, val);
    let weights = fit_weights(model, &counts, val);
    (counts, weights, tried)
}

const GRID: usize = 21;

/// Where `scores` ranks `k` (0 first), breaking ties towards the lower id as [`top_k`] does;
/// `None` if it is not ranked at all (a zero score).
fn rank(scores: impl Iterator<Item = f64> + Clone, k: usize) -> Option<usize> {
    let s = scores.clone().nth(k).filter(|&s| s > 0.0)?;
    Some(
        scores
            .enumerate()
            .skip(1)
            .filter(|&(j, x)| j != k && (x > s || (x == s && j < k)))
            .count(),
    )
}

/// [`fit_weights`] over the model's distribution and PPM's (distribution, support) of a context.
fn fit(
    model: &dyn Fn(&SessionContext) -> Vec<f32>,
    ppm: &dyn Fn(&SessionContext) -> (Vec<f32>, u32),
    val: &[Session],
) -> MixWeights {
    // Per bucket and grid weight: log-likelihood and top-1 and top-3 hits; row 6 of the
    // likelihood sums the buckets.
    let mut ll = [[0f64; GRID]; 7];
    let mut hits = [[(0u32, 0u32); GRID]; 6];
    let mut seen = [0u32; 6];
    let mut ctx = SessionContext::new();
    for s in val {
        ctx.clear();
        let features = s.features();
        for (t, r) in s.requests.iter().enumerate() {
            if t > 0 {
                let k = r.kind as usize;
                let da = model(&ctx);
                let (db, support) = ppm(&ctx);
                let a = f64::from(da.get(k).copied().unwrap_or(0.0));
                let b = f64::from(db.get(k).copied().unwrap_or(0.0));
                let bucket = MixWeights::bucket(support);
                seen[bucket] += 1;
                let (row, all) = ll.split_at_mut(6);
                for (i, (x, y)) in row[bucket].iter_mut().zip(all[0].iter_mut()).enumerate() {
                    let w = i as f64 / (GRID - 1) as f64;
                    let l = (w * a + (1.0 - w) * b).max(1e-12).ln();
                    *x += l;
                    *y += l;
                    let mixed = da
                        .iter()
                        .zip(&db)
                        .map(|(&x, &y)| w * f64::from(x) + (1.0 - w) * f64::from(y));
                    if let Some(r) = rank(mixed, k) {
                        let h = &mut hits[bucket][i];
                        h.0 += u32::from(r == 0);
                        h.1 += u32::from(r < 3);
                    }
                }
            }
            ctx.push_with(r.kind, features[t]);
        }
    }
    let argmax = |row: &[f64; GRID]| {
        let best = (0..GRID).max_by(|&i, &j| row[i].total_cmp(&row[j]).then(j.cmp(&i)));
        best.unwrap_or(GRID - 1)
    };
    let overall = if seen.iter().all(|&n| n == 0) {
        GRID - 1
    } else {
        argmax(&ll[6])
    };
    let mut fitted = [overall; 6];
    for ((w, n), row) in fitted.iter_mut().zip(seen).zip(&ll) {
        if n > 0 {
            *w = argmax(row);
        }
    }
    // (top-1 hits, top-3 hits, log-likelihood) on `val` of grid weights `g`, one per bucket.
    let score = |g: &[usize; 6]| {
        (0..6).fold((0u32, 0u32, 0f64), |(t1, t3, l), b| {
            let h = hits[b][g[b]];
            (t1 + h.0, t3 + h.1, l + ll[b][g[b]])
        })
    };
    let (model_only, ppm_only) = ([GRID - 1; 6], [0; 6]);
    let (m, p) = (score(&model_only), score(&ppm_only));
    let ppm_better = (p.0, p.1) > (m.0, m.1) || ((p.0, p.1) == (m.0, m.1) && p.2 > m.2);
    let component = if ppm_better { ppm_only } else { model_only };
    let (f, c) = (score(&fitted), score(&component));
    let beats = f.0 >= c.0 && f.1 >= c.1 && ((f.0, f.1) != (c.0, c.1) || f.2 > c.2);
    let chosen = if beats { fitted } else { component };
    MixWeights(chosen.map(|g| g as f32 / (GRID - 1) as f32))
}

impl Predictor for Hybrid {
    fn name(&self) -> &str {
        &self.name
    }

    fn vocabulary(&self) -> &Arc<Vocabulary> {
        self.model.vocabulary()
    }

    fn attributes(&self) -> Option<&crate::context::Attributes> {
        self.model.attributes().or_else(|| self.ppm.attributes())
    }

    fn predict(&self, context: &SessionContext, k: usize) -> Vec<Prediction> {
        top_k(&self.distribution(context), k)
    }

    fn predict_session(
        &self,
        state: &mut SessionState,
        context: &SessionContext,
        k: usize,
    ) -> Vec<Prediction> {
        let a = self.model.distribution_session(state, context);
        top_k(&self.mix(context, a), k)
    }

    /// Online learning goes to the PPM part.
    fn observe(&mut self, context: &SessionContext, next: TypeId) {
        self.ppm.observe(context, next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        generate::{generate, Workload, WorkloadSpec},
        metadata::ServiceCatalogue,
        predict::{observe_sessions, ContextPpm, Ppm},
        split::SplitSpec,
        trace::Request,
    };

    fn sess(kinds: &[TypeId]) -> Session {
        Session {
            requests: kinds.iter().map(|&kind| Request::new(kind, 0)).collect(),
            ..Session::default()
        }
    }

    #[test]
    fn ties_rank_the_lower_id_first() {
        let s = [0.0, 0.2, 0.4, 0.4];
        assert_eq!(rank(s.iter().copied(), 2), Some(0));
        assert_eq!(rank(s.iter().copied(), 3), Some(1));
        assert_eq!(rank(s.iter().copied(), 1), Some(2));
        assert_eq!(rank([0.0, 0.0].iter().copied(), 1), None, "zero is no rank");
    }

    /// Types 1 = x, 2 = y, 3 = z. After x the truth is x (ten times): PPM ranks it first by a
    /// hair over y, the model is sure of y. After y the truth is z (once): PPM gives it almost
    /// nothing, the model is sure of it. The likelihood wants some model weight to rescue the
    /// one z, and any weight that does so costs the ten x: the fitted mixture ranks 0 of 11
    /// first, PPM alone 10 of 11.
    #[test]
    fn a_mixture_that_would_lose_falls_back_to_the_better_component() {
        let model = |ctx: &SessionContext| match ctx.requests.last() {
            Some(1) => vec![0.0, 0.0, 1.0, 0.0],
            _ => vec![0.0, 0.0, 0.0, 1.0],
        };
        let ppm = |ctx: &SessionContext| match ctx.requests.last() {
            Some(1) => (vec![0.0, 0.5, 0.49, 0.01], 8),
            _ => (vec![0.0, 0.5, 0.499, 0.001], 8),
        };
        let mut val: Vec<Session> = (0..10).map(|_| sess(&[1, 1])).collect();
        val.push(sess(&[2, 3]));
        // What the likelihood alone picks: a positive model weight that ranks nothing first.
        let w = 0.1;
        let mixed = |d: Vec<f32>, e: Vec<f32>| {
            d.into_iter()
                .zip(e)
                .map(|(a, b)| w * f64::from(a) + (1.0 - w) * f64::from(b))
                .collect::<Vec<_>>()
        };
        let after_x = SessionContext::from_ids(&[1]);
        assert_eq!(
            rank(mixed(model(&after_x), ppm(&after_x).0).into_iter(), 1),
            Some(1)
        );
        // The fit falls back to PPM alone (weight 0 on the model everywhere).
        assert_eq!(fit(&model, &ppm, &val), MixWeights([0.0; 6]));
        // Where the mixture wins, it is kept: if PPM knows x well (support 100) and y not at
        // all (support 0), trusting PPM after x and the model after y gets all six right,
        // either component alone three.
        let ppm = |ctx: &SessionContext| match ctx.requests.last() {
            Some(1) => (vec![0.0, 0.5, 0.49, 0.01], 100),
            _ => (vec![0.0, 0.5, 0.499, 0.001], 0),
        };
        let mut val: Vec<Session> = (0..3).map(|_| sess(&[1, 1])).collect();
        val.extend((0..3).map(|_| sess(&[2, 3])));
        let w = fit(&model, &ppm, &val);
        assert_eq!((w.weight(0), w.weight(100)), (1.0, 0.0), "{w:?}");
    }

    /// Nobody ranks the truth first here, so top-1 cannot choose; the likelihood wants weight
    /// 0.15 on the model (it rescues the one 2 -> 4 PPM nearly rules out), and that weight
    /// pushes the five 1 -> 3 out of the top 3, where PPM alone has them: the fit must see
    /// the lost top-3 hits and keep PPM alone.
    #[test]
    fn a_mixture_that_loses_top3_falls_back_too() {
        let model = |ctx: &SessionContext| match ctx.requests.last() {
            Some(1) => vec![0.0, 0.0, 0.0, 0.0, 1.0],
            _ => vec![0.0, 0.9, 0.0, 0.0, 0.1],
        };
        let ppm = |ctx: &SessionContext| match ctx.requests.last() {
            Some(1) => (vec![0.0, 0.4, 0.35, 0.1, 0.0], 8),
            _ => (vec![0.0, 0.6, 0.3, 0.1, 1e-6], 8),
        };
        let mut val: Vec<Session> = (0..5).map(|_| sess(&[1, 3])).collect();
        val.push(sess(&[2, 4]));
        assert_eq!(fit(&model, &ppm, &val), MixWeights([0.0; 6]));
    }

    /// Top-1 accuracy on `sessions` of the mixture of `model` and `counts` under `w`.
    fn mixed_top1(
        model: &dyn Fn(&SessionContext) -> Vec<f32>,
        counts: &CountModel,
        w: MixWeights,
        sessions: &[Session],
    ) -> f64 {
        let (mut hit, mut n) = (0u32, 0u32);
        for s in sessions {
            let features = s.features();
            let mut ctx = SessionContext::new();
            for (t, r) in s.requests.iter().enumerate() {
                if t > 0 {
                    let wt = w.weight(counts.support(&ctx));
                    let mixed: Vec<f32> = model(&ctx)
                        .iter()
                        .zip(counts.distribution(&ctx))
                        .map(|(a, b)| wt * a + (1.0 - wt) * b)
                        .collect();
                    n += 1;
                    hit += u32::from(top_k(&mixed, 1).first().map(|p| p.kind) == Some(r.kind));
                }
                ctx.push_with(r.kind, features[t]);
            }
        }
        f64::from(hit) / f64::from(n.max(1))
    }

    /// On a segments trace the next request depends on the cohort and the gap: the
    /// context-aware PPM is the best count model there. A learned model that reads no context
    /// (the blind PPM stands in for it) must not drag the mixture below that count model: the
    /// mixture has to be built with the context-aware PPM, chosen on validation, and fall back
    /// to it. With the blind PPM as the count model (as before) it scores far below.
    #[test]
    fn the_mixture_falls_back_to_the_context_aware_count_model_where_it_wins() {
        let cat = ServiceCatalogue::default_catalogue();
        let spec = WorkloadSpec::preset(Workload::Segments, 1500, 3);
        let trace = generate(&cat.vocabulary(), &spec).unwrap();
        let split = SplitSpec::default().split(&trace.sessions);
        let vocab = Arc::new(trace.vocab.clone());
        let (ctx, _) = ContextPpm::select(
            vocab.clone(),
            &trace.attributes,
            4,
            &split.train,
            &split.val,
        );
        let (counts, tried) = CountModel::select(vocab.clone(), ctx, 4, &split.train, &split.val);
        assert!(
            matches!(counts, CountModel::Context(_)),
            "the context-aware PPM wins on validation: {tried:?}"
        );
        let mut blind = Ppm::new(vocab, 4);
        observe_sessions(&mut blind, &split.train);
        let w = fit(
            &|c| blind.distribution(c),
            &|c| (counts.distribution(c), counts.support(c)),
            &split.val,
        );
        // Refitted on training and validation, scored on test.
        let all: Vec<Session> = split.train.iter().chain(&split.val).cloned().collect();
        let mut counts_all = counts.fresh();
        observe_sessions(&mut counts_all, &all);
        let mut blind_all = blind.fresh();
        observe_sessions(&mut blind_all, &all);
        let model = |c: &SessionContext| blind_all.distribution(c);
        let mix = mixed_top1(&model, &counts_all, w, &split.test);
        let ctx_alone = mixed_top1(&model, &counts_all, MixWeights([0.0; 6]), &split.test);
        let blind_alone = mixed_top1(&model, &counts_all, MixWeights([1.0; 6]), &split.test);
        assert!(
            ctx_alone > blind_alone + 0.05,
            "{ctx_alone} vs {blind_alone}"
        );
        assert!(
            mix >= ctx_alone - 0.005,
            "the mixture {mix} falls below the context-aware PPM {ctx_alone} (weights {w:?})"
        );
        // The old mixture, with the blind PPM as its count model, cannot reach it.
        let old_counts = CountModel::from(blind_all.clone());
        let old = mixed_top1(&model, &old_counts, MixWeights([0.5; 6]), &split.test);
        assert!(old < ctx_alone - 0.05, "{old} vs {ctx_alone}");
    }
}
