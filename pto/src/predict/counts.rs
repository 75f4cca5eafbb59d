//! The count model a learned model is mixed with ([`crate::nn::Hybrid`]): the best of the
//! count baselines on the validation split, the context-aware PPM among them.
//!
//! A mixture that backs off to a context-blind PPM cannot fall back to the count model that
//! wins where the context decides the next request: on such a trace it loses to the
//! context-aware PPM whenever the learned model does. Choosing the component on validation
//! (among the blind PPM, the context-aware PPM and first-order Markov) keeps the mixture's
//! fallback the best count model the data knows.

use std::sync::Arc;

use super::{
    context_ppm::top1, observe_sessions, ContextPpm, Ppm, Prediction, Predictor, SessionContext,
};
use crate::{
    context::Attributes,
    trace::Session,
    vocab::{TypeId, Vocabulary},
};

/// What a mixture needs of its count model: a dense distribution and the evidence behind it.
pub trait CountDistribution {
    /// The full next-request distribution, dense over the vocabulary.
    fn distribution(&self, context: &SessionContext) -> Vec<f32>;
    /// How many observations the answer for `context` rests on (0: none of its contexts).
    fn support(&self, context: &SessionContext) -> u32;
}

impl CountDistribution for Ppm {
    fn distribution(&self, context: &SessionContext) -> Vec<f32> {
        Ppm::distribution(self, context)
    }

    fn support(&self, context: &SessionContext) -> u32 {
        Ppm::support(self, context)
    }
}

impl CountDistribution for ContextPpm {
    fn distribution(&self, context: &SessionContext) -> Vec<f32> {
        ContextPpm::distribution(self, context)
    }

    fn support(&self, context: &SessionContext) -> u32 {
        ContextPpm::support(self, context)
    }
}

/// A count baseline: a (context-blind) PPM of some order, or the context-aware PPM.
#[derive(Clone, Debug)]
pub enum CountModel {
    /// Context-blind: popularity, first-order Markov or PPM.
    Blind(Ppm),
    /// Conditioned on some of the request's context.
    Context(ContextPpm),
}

impl From<Ppm> for CountModel {
    fn from(p: Ppm) -> Self {
        Self::Blind(p)
    }
}

impl From<ContextPpm> for CountModel {
    fn from(p: ContextPpm) -> Self {
        Self::Context(p)
    }
}

impl CountModel {
    /// The same model, untrained (to refit it on more data).
    pub fn fresh(&self) -> Self {
        match self {
            Self::Blind(p) => Self::Blind(p.fresh()),
            Self::Context(p) => Self::Context(p.fresh()),
        }
    }

    /// The count model to mix a learned model with: the best on `val` by top-1 among the
    /// context-blind PPM of `order`, the context-aware PPM `ctx` (its conditioning already
    /// chosen, trained on `train`) when it conditions on anything, and first-order Markov,
    /// each trained on `train` only. With every candidate's validation top-1.
    pub fn select(
        vocab: Arc<Vocabulary>,
        ctx: ContextPpm,
        order: usize,
        train: &[Session],
        val: &[Session],
    ) -> (CountModel, Vec<(String, f64)>) {
        let mut blind = Ppm::new(vocab.clone(), order);
        observe_sessions(&mut blind, train);
        let mut markov1 = Ppm::markov1(vocab);
        observe_sessions(&mut markov1, train);
        let mut rest = Vec::new();
        if !ctx.keys().is_empty() {
            rest.push(CountModel::Context(ctx));
        }
        rest.push(CountModel::Blind(markov1));
        Self::best_on(CountModel::Blind(blind), rest, val)
    }

    /// The one of `first` and `rest` (each trained on the training split, none on `val`) with
    /// the best top-1 accuracy on `val`, the earlier on a tie; with every candidate's
    /// validation top-1, in the order given.
    pub fn best_on(
        first: CountModel,
        rest: Vec<CountModel>,
        val: &[Session],
    ) -> (CountModel, Vec<(String, f64)>) {
        let mut best_score = top1(&first, val);
        let mut report = vec![(first.name().to_owned(), best_score)];
        let mut best = first;
        for m in rest {
            let s = top1(&m, val);
            report.push((m.name().to_owned(), s));
            if s > best_score {
                best = m;
                best_score = s;
            }
        }
        (best, report)
    }
}

impl CountDistribution for CountModel {
    fn distribution(&self, context: &SessionContext) -> Vec<f32> {
        match self {
            Self::Blind(p) => p.distribution(context),
            Self::Context(p) => p.distribution(context),
        }
    }

    fn support(&self, context: &SessionContext) -> u32 {
        match self {
            Self::Blind(p) => p.support(context),
            Self::Context(p) => p.support(context),
        }
    }
}

impl Predictor for CountModel {
    fn name(&self) -> &str {
        match self {
            Self::Blind(p) => p.name(),
            Self::Context(p) => p.name(),
        }
    }

    fn vocabulary(&self) -> &Arc<Vocabulary> {
        match self {
            Self::Blind(p) => p.vocabulary(),
            Self::Context(p) => p.vocabulary(),
        }
    }

    fn attributes(&self) -> Option<&Attributes> {
        match self {
            Self::Blind(p) => p.attributes(),
            Self::Context(p) => p.attributes(),
        }
    }

    fn predict(&self, context: &SessionContext, k: usize) -> Vec<Prediction> {
        match self {
            Self::Blind(p) => p.predict(context, k),
            Self::Context(p) => p.predict(context, k),
        }
    }

    fn observe(&mut self, context: &SessionContext, next: TypeId) {
        match self {
            Self::Blind(p) => p.observe(context, next),
            Self::Context(p) => p.observe(context, next),
        }
    }
}
