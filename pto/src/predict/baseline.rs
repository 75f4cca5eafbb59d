//! Count-based baselines: reactive (no prediction), popularity, first-order Markov and
//! variable-order Markov (PPM with Witten-Bell back-off).

use std::{collections::HashMap, sync::Arc};

use super::{top_k, Prediction, Predictor, SessionContext};
use crate::vocab::{TypeId, Vocabulary, UNKNOWN};

/// Predicts nothing: the reactive system, which fetches on demand.
#[derive(Debug)]
pub struct Reactive {
    vocab: Arc<Vocabulary>,
}

impl Reactive {
    /// A reactive "predictor" over `vocab`.
    pub fn new(vocab: Arc<Vocabulary>) -> Self {
        Self { vocab }
    }
}

impl Predictor for Reactive {
    fn name(&self) -> &str {
        "reactive"
    }

    fn vocabulary(&self) -> &Arc<Vocabulary> {
        &self.vocab
    }

    fn predict(&self, _: &SessionContext, _: usize) -> Vec<Prediction> {
        Vec::new()
    }
}

#[derive(Clone, Debug, Default)]
struct Counts {
    total: u32,
    next: Vec<(TypeId, u32)>,
}

impl Counts {
    fn add(&mut self, t: TypeId) {
        self.total = self.total.saturating_add(1);
        match self.next.iter_mut().find(|e| e.0 == t) {
            Some(e) => e.1 = e.1.saturating_add(1),
            None => self.next.push((t, 1)),
        }
    }
}

/// Variable-order Markov model: counts of every context of length 0 to `max_order`, blended
/// from the shortest to the longest with Witten-Bell weights (the escape mass of a context is
/// the number of distinct successors it has seen). Order 0 is add-one smoothed popularity, so
/// every known type gets a probability and an unknown context backs off to shorter ones.
#[derive(Clone, Debug)]
pub struct Ppm {
    name: String,
    vocab: Arc<Vocabulary>,
    max_order: usize,
    /// `orders[o]` maps a hashed context of length `o` to its successor counts.
    orders: Vec<HashMap<u64, Counts>>,
}

/// Popularity: the most frequent request types, whatever the context.
pub type Popularity = Ppm;
/// First-order Markov: the successors of the last request, backed off to popularity.
pub type Markov1 = Ppm;

/// The longest context a [`Ppm`] accepts.
pub const MAX_PPM_ORDER: usize = 8;

fn context_key(ctx: &[TypeId]) -> u64 {
    // FNV-1a over the ids; the order (length) has its own map, so only equal-length contexts
    // can collide, with probability ~2^-64.
    ctx.iter().fold(0xcbf2_9ce4_8422_2325, |h, &t| {
        (h ^ u64::from(t)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Ppm {
    /// A model of contexts up to `max_order` (at most 8), named `ppmN`.
    pub fn new(vocab: Arc<Vocabulary>, max_order: usize) -> Self {
        let max_order = max_order.min(MAX_PPM_ORDER);
        Self {
            name: format!("ppm{max_order}"),
            vocab,
            max_order,
            orders: vec![HashMap::new(); max_order + 1],
        }
    }

    /// The popularity baseline (order 0).
    pub fn popularity(vocab: Arc<Vocabulary>) -> Self {
        Self {
            name: "popularity".into(),
            ..Self::new(vocab, 0)
        }
    }

    /// The first-order Markov baseline.
    pub fn markov1(vocab: Arc<Vocabulary>) -> Self {
        Self {
            name: "markov1".into(),
            ..Self::new(vocab, 1)
        }
    }

    /// The same model (name and order), untrained: to refit it on more data.
    pub fn fresh(&self) -> Self {
        Self {
            name: self.name.clone(),
            vocab: self.vocab.clone(),
            max_order: self.max_order,
            orders: vec![HashMap::new(); self.max_order + 1],
        }
    }

    /// The longest context used.
    pub fn max_order(&self) -> usize {
        self.max_order
    }

    /// How many times the longest context of `context` that this model has seen (of order 1
    /// or more) was followed by anything: 0 when it knows no context of the session.
    pub fn support(&self, context: &SessionContext) -> u32 {
        let h = &context.requests;
        let mut support = 0;
        for o in 1..=self.max_order.min(h.len()) {
            match self.orders[o].get(&context_key(&h[h.len() - o..])) {
                Some(c) => support = c.total,
                None => break,
            }
        }
        support
    }

    /// The full next-request distribution, dense over the vocabulary ([`UNKNOWN`] is 0).
    pub fn distribution(&self, context: &SessionContext) -> Vec<f32> {
        let v = self.vocab.len();
        let mut p = vec![0f32; v];
        if v <= 1 {
            return p;
        }
        let known = (v - 1) as f32;
        let c0 = self.orders[0].get(&context_key(&[]));
        let total0 = c0.map_or(0, |c| c.total) as f32;
        for x in p.iter_mut().skip(1) {
            *x = 1.0 / (total0 + known);
        }
        if let Some(c) = c0 {
            for &(t, n) in &c.next {
                if let Some(x) = p.get_mut(t as usize) {
                    *x += n as f32 / (total0 + known);
                }
            }
        }
        self.blend(&mut p, context, 1, 0.0);
        p[UNKNOWN as usize] = 0.0;
        p
    }

    /// `base` (a distribution dense over the vocabulary) refined by this model's counts of
    /// every order from 0, each blended in with its Witten-Bell weight plus `prior` pseudo
    /// counts on the side of what came before: where this model has seen little, `base`
    /// stays. How a context-conditioned model backs off to a blind one.
    pub fn distribution_over(
        &self,
        mut base: Vec<f32>,
        context: &SessionContext,
        prior: f32,
    ) -> Vec<f32> {
        base.resize(self.vocab.len(), 0.0);
        self.blend(&mut base, context, 0, prior.max(0.0));
        if let Some(x) = base.get_mut(UNKNOWN as usize) {
            *x = 0.0;
        }
        base
    }

    /// Blends the counts of orders `from..=max_order` into `p`, shortest first.
    fn blend(&self, p: &mut [f32], context: &SessionContext, from: usize, prior: f32) {
        let h = &context.requests;
        for o in from..=self.max_order.min(h.len()) {
            let Some(c) = self.orders[o].get(&context_key(&h[h.len() - o..])) else {
                break; // a longer context containing an unseen one is unseen too
            };
            let escape = c.next.len() as f32 + prior;
            let denom = c.total as f32 + escape;
            for x in p.iter_mut() {
                *x *= escape / denom;
            }
            for &(t, n) in &c.next {
                if let Some(x) = p.get_mut(t as usize) {
                    *x += n as f32 / denom;
                }
            }
        }
    }

    /// True before anything was observed.
    pub fn is_empty(&self) -> bool {
        self.orders[0].is_empty()
    }
}

impl Predictor for Ppm {
    fn name(&self) -> &str {
        &self.name
    }

    fn vocabulary(&self) -> &Arc<Vocabulary> {
        &self.vocab
    }

    fn predict(&self, context: &SessionContext, k: usize) -> Vec<Prediction> {
        if self.orders[0].is_empty() {
            return Vec::new(); // never trained: no basis for a guess
        }
        top_k(&self.distribution(context), k)
    }

    fn observe(&mut self, context: &SessionContext, next: TypeId) {
        if next == UNKNOWN || next as usize >= self.vocab.len() {
            return;
        }
        let h = &context.requests;
        for o in 0..=self.max_order.min(h.len()) {
            self.orders[o]
                .entry(context_key(&h[h.len() - o..]))
                .or_default()
                .add(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::observe_sessions;
    use crate::trace::{Request, Session};

    fn session(kinds: &[TypeId]) -> Session {
        Session {
            requests: kinds.iter().map(|&kind| Request::new(kind, 0)).collect(),
            ..Session::default()
        }
    }

    fn vocab() -> Arc<Vocabulary> {
        Arc::new(Vocabulary::from_names(["a", "b", "c", "d"]))
    }

    #[test]
    fn untrained_models_predict_nothing_and_reactive_never_does() {
        let ctx = SessionContext::from_ids(&[1]);
        assert!(Ppm::markov1(vocab()).predict(&ctx, 3).is_empty());
        assert!(Reactive::new(vocab()).predict(&ctx, 3).is_empty());
    }

    #[test]
    fn markov1_follows_the_last_request_and_backs_off() {
        let mut m = Ppm::markov1(vocab());
        // a -> b always; c -> d always; popularity: b, d most frequent after the starts.
        observe_sessions(
            &mut m,
            &[
                session(&[1, 2]),
                session(&[1, 2]),
                session(&[3, 4]),
                session(&[1, 2]),
            ],
        );
        let p = m.predict(&SessionContext::from_ids(&[1]), 4);
        assert_eq!(p[0].kind, 2);
        assert_eq!(p.len(), 4, "back-off fills the ranks");
        let total: f32 = m.distribution(&SessionContext::from_ids(&[3])).iter().sum();
        assert!((total - 1.0).abs() < 1e-5, "a distribution: {total}");
        assert_eq!(m.predict(&SessionContext::from_ids(&[3]), 1)[0].kind, 4);
        // unknown and never-seen contexts fall back to popularity (a and b are the most seen)
        let unk = m.predict(&SessionContext::from_ids(&[UNKNOWN]), 1);
        let empty = m.predict(&SessionContext::new(), 1);
        assert_eq!(unk, empty);
        assert!(unk[0].kind == 1 || unk[0].kind == 2);
    }

    #[test]
    fn ppm_uses_long_contexts_that_markov1_cannot_see() {
        // After "b", the next depends on what came before b: a b -> c, d b -> d.
        let data: Vec<Session> = (0..10)
            .flat_map(|_| [session(&[1, 2, 3]), session(&[4, 2, 4])])
            .collect();
        let mut ppm = Ppm::new(vocab(), 3);
        let mut m1 = Ppm::markov1(vocab());
        observe_sessions(&mut ppm, &data);
        observe_sessions(&mut m1, &data);
        assert_eq!(
            ppm.predict(&SessionContext::from_ids(&[1, 2]), 1)[0].kind,
            3
        );
        assert_eq!(
            ppm.predict(&SessionContext::from_ids(&[4, 2]), 1)[0].kind,
            4
        );
        let a = m1.predict(&SessionContext::from_ids(&[1, 2]), 1);
        let b = m1.predict(&SessionContext::from_ids(&[4, 2]), 1);
        assert_eq!(a, b, "order 1 cannot tell them apart");
        assert_eq!(ppm.name(), "ppm3");
        assert_eq!(ppm.support(&SessionContext::from_ids(&[1, 2])), 10);
        assert_eq!(
            ppm.support(&SessionContext::from_ids(&[3, 2])),
            20,
            "order 1 after an unseen order 2"
        );
        assert_eq!(ppm.support(&SessionContext::from_ids(&[UNKNOWN])), 0);
        assert_eq!(Ppm::new(vocab(), 99).max_order(), MAX_PPM_ORDER);
    }

    #[test]
    fn out_of_range_observations_are_ignored() {
        let mut m = Ppm::popularity(vocab());
        m.observe(&SessionContext::new(), 77);
        m.observe(&SessionContext::new(), UNKNOWN);
        assert!(m.predict(&SessionContext::new(), 1).is_empty());
    }
}
