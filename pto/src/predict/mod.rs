//! Predictors of the next request type, all behind one trait.
//!
//! A predictor sees the session so far ([`SessionContext`], request types as ids of its
//! [`Vocabulary`]) and returns the `k` most likely next request types with probabilities,
//! most likely first. It never names [`UNKNOWN`]. Online, the caller predicts on every
//! incoming request and may feed the request that really came back with
//! [`Predictor::observe`].

mod baseline;
mod context_ppm;
mod counts;
mod static_graph;

use std::sync::Arc;

pub use baseline::{Markov1, Popularity, Ppm, Reactive};
pub use context_ppm::ContextPpm;
pub use counts::{CountDistribution, CountModel, CountSpec, CountSpecError, MAX_COUNT_KEYS};
pub use static_graph::StaticGraph;

use crate::{
    context::{Attributes, Features},
    trace::Session,
    vocab::{TypeId, Vocabulary, UNKNOWN},
};

/// The session so far: its request types, oldest first, and each request's context
/// (attributes and time features; all unknown where the caller has none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionContext {
    /// Request types of the session so far; [`UNKNOWN`] for types the vocabulary lacks.
    pub requests: Vec<TypeId>,
    /// The context of each request of `requests` (same length when filled by the methods
    /// here; a shorter list reads as unknown context for the rest).
    pub features: Vec<Features>,
}

impl SessionContext {
    /// An empty session.
    pub fn new() -> Self {
        Self::default()
    }

    /// A session holding `requests`.
    pub fn from_ids(requests: &[TypeId]) -> Self {
        Self {
            requests: requests.to_vec(),
            features: vec![Features::default(); requests.len()],
        }
    }

    /// A session holding `requests` with their contexts `features` (same length).
    pub fn with_features(requests: &[TypeId], features: &[Features]) -> Self {
        let mut c = Self::new();
        for (i, &r) in requests.iter().enumerate() {
            c.push_with(r, features.get(i).copied().unwrap_or_default());
        }
        c
    }

    /// A session of named request types; unknown names become [`UNKNOWN`].
    pub fn from_names<S: AsRef<str>>(vocab: &Vocabulary, names: &[S]) -> Self {
        let ids: Vec<TypeId> = names
            .iter()
            .map(|n| vocab.id_or_unknown(n.as_ref()))
            .collect();
        Self::from_ids(&ids)
    }

    /// Appends the request that just arrived, without context.
    pub fn push(&mut self, kind: TypeId) {
        self.push_with(kind, Features::default());
    }

    /// Appends the request that just arrived with its context.
    pub fn push_with(&mut self, kind: TypeId, features: Features) {
        self.features
            .resize(self.requests.len(), Features::default());
        self.requests.push(kind);
        self.features.push(features);
    }

    /// Empties it, for the next session.
    pub fn clear(&mut self) {
        self.requests.clear();
        self.features.clear();
    }

    /// The context of request `i` (unknown when not given).
    pub fn feature(&self, i: usize) -> Features {
        self.features.get(i).copied().unwrap_or_default()
    }

    /// The context of the last request (unknown for an empty session).
    pub fn last_features(&self) -> Features {
        self.requests
            .len()
            .checked_sub(1)
            .map_or_else(Features::default, |i| self.feature(i))
    }

    /// The last request, if any.
    pub fn last(&self) -> Option<TypeId> {
        self.requests.last().copied()
    }
}

/// One predicted next request type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    /// The request type.
    pub kind: TypeId,
    /// Its probability, in 0..=1.
    pub probability: f32,
}

/// State a predictor may keep for one live session between its requests, so that each
/// prediction costs one step instead of a pass over the whole session. Create one per session
/// with `SessionState::default()` and pass it with that session's growing context only.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionState {
    /// How many tokens of the context (the start token included) the state has consumed.
    pub(crate) consumed: usize,
    /// The model's carried values (an LSTM's hidden and cell state).
    pub(crate) values: Vec<f32>,
}

/// A next-request predictor.
pub trait Predictor: Send {
    /// A short name for tables ("markov1", "lstm", ...).
    fn name(&self) -> &str;

    /// The vocabulary its ids refer to.
    fn vocabulary(&self) -> &Arc<Vocabulary>;

    /// The `k` most likely next request types after `context`, most likely first. May return
    /// fewer (or none, when it knows nothing); never [`UNKNOWN`].
    fn predict(&self, context: &SessionContext, k: usize) -> Vec<Prediction>;

    /// Like [`Predictor::predict`] for a live session whose previous contexts were passed with
    /// the same `state`: the same answer, computed incrementally where the model can (the
    /// LSTM). The default ignores `state`.
    fn predict_session(
        &self,
        state: &mut SessionState,
        context: &SessionContext,
        k: usize,
    ) -> Vec<Prediction> {
        let _ = state;
        self.predict(context, k)
    }

    /// The attribute schema its context ids refer to, for a predictor that reads attributes
    /// (the online path maps a request's attribute names and values through it).
    fn attributes(&self) -> Option<&Attributes> {
        None
    }

    /// Learns online that `next` followed `context`. The default ignores it.
    fn observe(&mut self, context: &SessionContext, next: TypeId) {
        let _ = (context, next);
    }
}

/// Feeds every transition of `sessions` to `p.observe`: how the count-based baselines train.
pub fn observe_sessions(p: &mut dyn Predictor, sessions: &[Session]) {
    let mut ctx = SessionContext::new();
    for s in sessions {
        ctx.clear();
        for (r, f) in s.requests.iter().zip(s.features()) {
            p.observe(&ctx, r.kind);
            ctx.push_with(r.kind, f);
        }
    }
}

/// The `k` best entries of a dense score vector indexed by [`TypeId`] (scores are normalised
/// over the known types); ties go to the smaller id.
pub fn top_k(scores: &[f32], k: usize) -> Vec<Prediction> {
    let total: f32 = scores
        .iter()
        .skip(1)
        .filter(|s| s.is_finite() && **s > 0.0)
        .sum();
    if total <= 0.0 || k == 0 {
        return Vec::new();
    }
    let mut idx: Vec<usize> = (1..scores.len())
        .filter(|&i| scores[i].is_finite() && scores[i] > 0.0)
        .collect();
    let by_score = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    if idx.len() > k {
        idx.select_nth_unstable_by(k - 1, by_score);
        idx.truncate(k);
    }
    idx.sort_by(by_score);
    idx.into_iter()
        .map(|i| Prediction {
            kind: i as TypeId,
            probability: scores[i] / total,
        })
        .filter(|p| p.kind != UNKNOWN)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_ranks_normalises_and_skips_unknown() {
        let p = top_k(&[9.0, 1.0, 3.0, 0.0, 4.0, f32::NAN], 2);
        assert_eq!(p.iter().map(|p| p.kind).collect::<Vec<_>>(), [4, 2]);
        assert!((p[0].probability - 0.5).abs() < 1e-6);
        assert_eq!(top_k(&[1.0, 0.0], 3), []);
        assert_eq!(top_k(&[0.0, 1.0, 1.0], 5).len(), 2);
        let tie = top_k(&[0.0, 1.0, 1.0, 1.0], 1);
        assert_eq!(tie[0].kind, 1);
    }

    #[test]
    fn contexts_map_unknown_names() {
        let v = Vocabulary::from_names(["a", "b"]);
        let c = SessionContext::from_names(&v, &["b", "zzz"]);
        assert_eq!(c.requests, [2, UNKNOWN]);
        assert_eq!(c.last(), Some(UNKNOWN));
    }
}
