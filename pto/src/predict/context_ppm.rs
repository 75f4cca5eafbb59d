//! The context-aware count baseline: a PPM per value of the request's context (an attribute,
//! a time bucket, or a pair of them), each backed off to the context-blind PPM where its own
//! counts are thin, with the conditioning chosen on the validation split.
//!
//! The context of a position is that of the last request seen (the one whose arrival the
//! prediction answers). A value's model refines the blind model's distribution with its own
//! counts of every order, each weighted as Witten-Bell weighs a longer context against a
//! shorter one, with a few pseudo-counts more on the blind side: a value seen a few times
//! barely moves the blind answer, a value seen often replaces it.

use std::{collections::HashMap, sync::Arc};

use super::{observe_sessions, top_k, Ppm, Prediction, Predictor, SessionContext};
use crate::{
    context::{Attributes, ContextKey, Features},
    trace::Session,
    vocab::{TypeId, Vocabulary},
};

/// Most candidate conditionings tried on validation (single keys first, then pairs of the
/// best single keys).
const MAX_CANDIDATES: usize = 16;
/// Single keys whose pairs are tried.
const PAIR_FROM_BEST: usize = 4;
/// Pseudo-counts on the blind model's side at every order of a value's model: a value seen
/// a handful of times moves the blind answer a little, one seen hundreds of times replaces it.
const BACKOFF_PRIOR: f32 = 4.0;

/// A PPM conditioned on some context keys (none: the blind PPM under another name).
#[derive(Clone, Debug)]
pub struct ContextPpm {
    name: String,
    vocab: Arc<Vocabulary>,
    attrs: Attributes,
    keys: Vec<ContextKey>,
    order: usize,
    blind: Ppm,
    by_value: HashMap<u64, Ppm>,
}

/// The bucket of `f` under `keys`.
fn bucket(keys: &[ContextKey], f: &Features) -> u64 {
    keys.iter()
        .fold(0u64, |h, k| h << 20 ^ u64::from(k.of(f)).wrapping_add(1))
}

impl ContextPpm {
    /// An untrained model of contexts up to `order` conditioned on `keys` (names from `attrs`).
    pub fn new(
        vocab: Arc<Vocabulary>,
        attrs: &Attributes,
        order: usize,
        keys: &[ContextKey],
    ) -> Self {
        let blind = Ppm::new(vocab.clone(), order);
        let on = if keys.is_empty() {
            "none".to_owned()
        } else {
            keys.iter()
                .map(|k| k.describe(attrs))
                .collect::<Vec<_>>()
                .join("+")
        };
        Self {
            name: format!("ctx-ppm{}[{on}]", blind.max_order()),
            vocab,
            attrs: attrs.clone(),
            keys: keys.to_vec(),
            order,
            blind,
            by_value: HashMap::new(),
        }
    }

    /// The keys it conditions on.
    pub fn keys(&self) -> &[ContextKey] {
        &self.keys
    }

    /// Its longest context.
    pub fn order(&self) -> usize {
        self.blind.max_order()
    }

    /// The candidate conditionings of a trace with `attrs`, whose `sessions` show at least two
    /// values of each key: every attribute, the gap bucket and the hour bucket.
    pub fn candidates(attrs: &Attributes, sessions: &[Session]) -> Vec<ContextKey> {
        let mut keys: Vec<ContextKey> = (0..attrs.len()).map(ContextKey::Attribute).collect();
        keys.extend([ContextKey::Gap, ContextKey::Hour]);
        keys.retain(|k| {
            let mut first = None;
            sessions.iter().flat_map(Session::features).any(|f| {
                let v = k.of(&f);
                *first.get_or_insert(v) != v
            })
        });
        keys
    }

    /// Trains one model per candidate conditioning on `train` (none, each key alone, then
    /// pairs of the best keys) and keeps the best by top-1 on `val`; returns it trained on
    /// `train` with the validation top-1 of every candidate, best first.
    pub fn select(
        vocab: Arc<Vocabulary>,
        attrs: &Attributes,
        order: usize,
        train: &[Session],
        val: &[Session],
    ) -> (Self, Vec<(String, f64)>) {
        let singles = Self::candidates(attrs, train);
        let fit = |keys: &[ContextKey]| {
            let mut m = Self::new(vocab.clone(), attrs, order, keys);
            observe_sessions(&mut m, train);
            let score = top1(&m, val);
            (m, score)
        };
        let mut tried: Vec<(Self, f64)> = vec![fit(&[])];
        for &k in &singles {
            tried.push(fit(&[k]));
        }
        let mut best_single: Vec<(ContextKey, f64)> =
            tried[1..].iter().map(|(m, s)| (m.keys[0], *s)).collect();
        best_single.sort_by(|a, b| b.1.total_cmp(&a.1));
        best_single.truncate(PAIR_FROM_BEST);
        'pairs: for i in 0..best_single.len() {
            for j in i + 1..best_single.len() {
                if tried.len() >= MAX_CANDIDATES {
                    break 'pairs;
                }
                tried.push(fit(&[best_single[i].0, best_single[j].0]));
            }
        }
        // Stable: among equal scores the simpler (earlier) conditioning wins.
        tried.sort_by(|a, b| b.1.total_cmp(&a.1));
        let report = tried.iter().map(|(m, s)| (m.name.clone(), *s)).collect();
        let best = tried.swap_remove(0).0;
        (best, report)
    }

    /// The same conditioning, untrained (to refit it on more data).
    pub fn fresh(&self) -> Self {
        Self::new(self.vocab.clone(), &self.attrs, self.order, &self.keys)
    }

    /// The evidence behind the answer for `context`: [`Ppm::support`] of the model of the
    /// last request's context value, or of the blind model when that value was never seen
    /// (or nothing is conditioned on).
    pub fn support(&self, context: &SessionContext) -> u32 {
        if self.keys.is_empty() {
            return self.blind.support(context);
        }
        match self
            .by_value
            .get(&bucket(&self.keys, &context.last_features()))
        {
            Some(m) => m.support(context),
            None => self.blind.support(context),
        }
    }

    /// The full next-request distribution, dense over the vocabulary.
    pub fn distribution(&self, context: &SessionContext) -> Vec<f32> {
        let base = self.blind.distribution(context);
        if self.keys.is_empty() {
            return base;
        }
        match self
            .by_value
            .get(&bucket(&self.keys, &context.last_features()))
        {
            Some(m) => m.distribution_over(base, context, BACKOFF_PRIOR),
            None => base,
        }
    }
}

/// Top-1 accuracy of `p` over every position after the first of `sessions`.
pub(crate) fn top1(p: &dyn Predictor, sessions: &[Session]) -> f64 {
    let (mut hit, mut n) = (0u64, 0u64);
    for s in sessions {
        let features = s.features();
        let mut ctx = SessionContext::new();
        for (t, r) in s.requests.iter().enumerate() {
            if t > 0 {
                n += 1;
                hit += u64::from(p.predict(&ctx, 1).first().map(|x| x.kind) == Some(r.kind));
            }
            ctx.push_with(r.kind, features[t]);
        }
    }
    hit as f64 / n.max(1) as f64
}

impl Predictor for ContextPpm {
    fn name(&self) -> &str {
        &self.name
    }

    fn vocabulary(&self) -> &Arc<Vocabulary> {
        &self.vocab
    }

    fn attributes(&self) -> Option<&Attributes> {
        Some(&self.attrs)
    }

    fn predict(&self, context: &SessionContext, k: usize) -> Vec<Prediction> {
        if self.blind.is_empty() {
            return Vec::new();
        }
        top_k(&self.distribution(context), k)
    }

    fn observe(&mut self, context: &SessionContext, next: TypeId) {
        self.blind.observe(context, next);
        if self.keys.is_empty() {
            return;
        }
        let order = self.order;
        let vocab = &self.vocab;
        self.by_value
            .entry(bucket(&self.keys, &context.last_features()))
            .or_insert_with(|| Ppm::new(vocab.clone(), order))
            .observe(context, next);
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::{context::AttrValues, eval, trace::Request};

    fn vocab() -> Arc<Vocabulary> {
        Arc::new(Vocabulary::from_names(["a", "b", "c", "d", "e"]))
    }

    /// Sessions whose `group` attribute (1 or 2) decides what follows each request: after x
    /// comes x + 1 in group 1 and x + 2 in group 2 (mod 5), with a little noise. When
    /// `informative` is false the attribute is drawn independently of the sequence, which
    /// always follows group 1's rule.
    fn sessions(n: usize, seed: u64, informative: bool) -> Vec<Session> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let group: u16 = rng.random_range(1..=2);
                let step = if informative { u32::from(group) } else { 1 };
                let mut attrs = AttrValues::default();
                attrs.0[0] = group;
                let mut kind = rng.random_range(1..=5u32);
                let requests = (0..8)
                    .map(|j| {
                        let r = Request {
                            kind,
                            at_ms: j * 1000,
                            attrs,
                        };
                        kind = if rng.random_bool(0.1) {
                            rng.random_range(1..=5)
                        } else {
                            (kind - 1 + step) % 5 + 1
                        };
                        r
                    })
                    .collect();
                Session {
                    key: format!("s{i}"),
                    requests,
                    ..Session::default()
                }
            })
            .collect()
    }

    fn attrs() -> Attributes {
        let mut a = Attributes::new(&["group"]).unwrap();
        a.intern(0, Some(b"one"));
        a.intern(0, Some(b"two"));
        a
    }

    fn fitted(keys: &[ContextKey], train: &[Session]) -> ContextPpm {
        let mut m = ContextPpm::new(vocab(), &attrs(), 2, keys);
        observe_sessions(&mut m, train);
        m
    }

    #[test]
    fn the_attribute_that_decides_the_next_type_is_chosen_and_wins() {
        let (train, val, test) = (
            sessions(300, 1, true),
            sessions(100, 2, true),
            sessions(300, 3, true),
        );
        let (chosen, report) = ContextPpm::select(vocab(), &attrs(), 2, &train, &val);
        assert_eq!(chosen.keys(), [ContextKey::Attribute(0)], "{report:?}");
        assert_eq!(chosen.name(), "ctx-ppm2[group]");
        let mut blind = Ppm::new(vocab(), 2);
        observe_sessions(&mut blind, &train);
        let cfg = eval::EvalConfig::default();
        let c = eval::evaluate(&chosen, &test, cfg);
        let b = eval::evaluate(&blind, &test, cfg);
        // The rule is known given the group: ~0.92 right; blind, the first steps are a coin.
        assert!(c.top1 > 0.85, "{}", c.top1);
        assert!(c.top1 > b.top1 + 0.1, "{} vs {}", c.top1, b.top1);
        assert_eq!(eval::paired(&c, &b).unwrap().0.verdict(), "better");
        // The context is read from the last request: the same sequence, other group, other
        // answer.
        let f = |g: u16| {
            let mut a = AttrValues::default();
            a.0[0] = g;
            Features::of(0, None, 0, a)
        };
        let one = SessionContext::with_features(&[3], &[f(1)]);
        let two = SessionContext::with_features(&[3], &[f(2)]);
        assert_eq!(chosen.predict(&one, 1)[0].kind, 4);
        assert_eq!(chosen.predict(&two, 1)[0].kind, 5);
        assert!(chosen.attributes().is_some());
    }

    #[test]
    fn on_a_context_free_sequence_it_loses_no_more_than_noise() {
        let (train, val, test) = (
            sessions(300, 4, false),
            sessions(100, 5, false),
            sessions(300, 6, false),
        );
        let mut blind = Ppm::new(vocab(), 2);
        observe_sessions(&mut blind, &train);
        let cfg = eval::EvalConfig::default();
        let b = eval::evaluate(&blind, &test, cfg);
        // Forced onto the useless attribute, and as chosen on validation.
        let forced = fitted(&[ContextKey::Attribute(0)], &train);
        let (chosen, _) = ContextPpm::select(vocab(), &attrs(), 2, &train, &val);
        for m in [forced, chosen] {
            let c = eval::evaluate(&m, &test, cfg);
            let d = eval::paired(&c, &b).unwrap().0;
            assert_ne!(d.verdict(), "worse", "{}: {d:?}", m.name());
            assert!(d.mean > -0.01, "{}: {d:?}", m.name());
        }
    }

    #[test]
    fn thin_values_back_off_to_the_blind_model() {
        let train = sessions(200, 7, false);
        let mut m = fitted(&[ContextKey::Attribute(0)], &train);
        // One session of a new value 3 that contradicts the blind rule once.
        let mut a = AttrValues::default();
        a.0[0] = 3;
        let odd = Features::of(0, None, 0, a);
        m.observe(&SessionContext::with_features(&[1], &[odd]), 5);
        let p = m.predict(&SessionContext::with_features(&[1], &[odd]), 1);
        assert_eq!(p[0].kind, 2, "one count does not overturn 200 sessions");
        let unseen = {
            let mut a = AttrValues::default();
            a.0[0] = 9;
            Features::of(0, None, 0, a)
        };
        let ctx = SessionContext::with_features(&[1], &[unseen]);
        assert_eq!(m.distribution(&ctx), m.blind.distribution(&ctx));
        let total: f32 = m
            .distribution(&SessionContext::with_features(&[1], &[odd]))
            .iter()
            .sum();
        assert!((total - 1.0).abs() < 1e-4, "{total}");
    }

    #[test]
    fn candidates_need_two_values() {
        let train = sessions(50, 8, true);
        let c = ContextPpm::candidates(&attrs(), &train);
        // Group varies; every gap is 1 s (one bucket after the first request's 0); relative
        // times have no hour.
        assert_eq!(c, [ContextKey::Attribute(0), ContextKey::Gap]);
        assert!(ContextPpm::candidates(&Attributes::default(), &[]).is_empty());
    }
}
