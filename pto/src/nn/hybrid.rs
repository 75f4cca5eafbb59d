//! A learned model interpolated with the PPM baseline: `w * p_model + (1 - w) * p_ppm`, where
//! the weight `w` depends on how much evidence PPM has for the context.
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
    predict::{top_k, Ppm, Prediction, Predictor, SessionContext, SessionState},
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

/// A learned model mixed with a PPM model.
#[derive(Clone, Debug)]
pub struct Hybrid {
    name: String,
    model: NeuralPredictor,
    ppm: Ppm,
    weights: MixWeights,
}

impl Hybrid {
    /// Mixes `model` and `ppm` with `weights` on the model; both must use one vocabulary.
    pub fn new(model: NeuralPredictor, ppm: Ppm, weights: MixWeights) -> Result<Self, NnError> {
        if model.vocabulary() != ppm.vocabulary() {
            return Err(NnError::Vocabulary);
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
/// `val` under the mixture of `model` and `ppm` (which must not have seen `val`). A bucket
/// without validation positions gets the overall best weight.
pub fn fit_weights(model: &NeuralPredictor, ppm: &Ppm, val: &[Session]) -> MixWeights {
    const GRID: usize = 21;
    let mut ll = [[0f64; GRID]; 7]; // 6 buckets + overall
    let mut seen = [0u32; 6];
    let mut ctx = SessionContext::new();
    for s in val {
        ctx.requests.clear();
        for (t, r) in s.requests.iter().enumerate() {
            if t > 0 {
                let k = r.kind as usize;
                let a = f64::from(model.distribution(&ctx).get(k).copied().unwrap_or(0.0));
                let b = f64::from(ppm.distribution(&ctx).get(k).copied().unwrap_or(0.0));
                let bucket = MixWeights::bucket(ppm.support(&ctx));
                seen[bucket] += 1;
                let (row, all) = ll.split_at_mut(6);
                for (i, (x, y)) in row[bucket].iter_mut().zip(all[0].iter_mut()).enumerate() {
                    let w = i as f64 / (GRID - 1) as f64;
                    let l = (w * a + (1.0 - w) * b).max(1e-12).ln();
                    *x += l;
                    *y += l;
                }
            }
            ctx.push(r.kind);
        }
    }
    let argmax = |row: &[f64; GRID]| {
        let best = (0..GRID).max_by(|&i, &j| row[i].total_cmp(&row[j]).then(j.cmp(&i)));
        best.unwrap_or(GRID - 1) as f32 / (GRID - 1) as f32
    };
    let overall = if seen.iter().all(|&n| n == 0) {
        1.0
    } else {
        argmax(&ll[6])
    };
    let mut w = [overall; 6];
    for ((w, n), row) in w.iter_mut().zip(seen).zip(&ll) {
        if n > 0 {
            *w = argmax(row);
        }
    }
    MixWeights(w)
}

impl Predictor for Hybrid {
    fn name(&self) -> &str {
        &self.name
    }

    fn vocabulary(&self) -> &Arc<Vocabulary> {
        self.model.vocabulary()
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
