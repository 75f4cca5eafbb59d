//! The count model a learned model is mixed with ([`crate::nn::Hybrid`]): the best of the
//! count baselines on the validation split, the context-aware PPM among them.
//!
//! A mixture that backs off to a context-blind PPM cannot fall back to the count model that
//! wins where the context decides the next request: on such a trace it loses to the
//! context-aware PPM whenever the learned model does. Choosing the component on validation
//! (among the blind PPM, the context-aware PPM and first-order Markov) keeps the mixture's
//! fallback the best count model the data knows.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{
    baseline::MAX_PPM_ORDER, context_ppm::top1, observe_sessions, ContextPpm, Ppm, Prediction,
    Predictor, SessionContext,
};
use crate::{
    context::{Attributes, ContextKey},
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

/// Most keys a recorded context-aware PPM may condition on ([`ContextPpm::select`] tries
/// single keys and pairs).
pub const MAX_COUNT_KEYS: usize = 4;

/// A count model as a checkpoint records it: which baseline, its longest context and what it
/// conditions on; enough to rebuild it untrained ([`CountSpec::build`]) and count a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CountSpec {
    /// The context-blind PPM of contexts up to `order`.
    Ppm {
        /// Longest context.
        order: usize,
    },
    /// First-order Markov.
    Markov1,
    /// The context-aware PPM of contexts up to `order`, conditioned on `on` (attribute
    /// indices refer to the attribute schema recorded beside it).
    ContextPpm {
        /// Longest context.
        order: usize,
        /// The conditioning.
        on: Vec<ContextKey>,
    },
}

/// A [`CountSpec`] that cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CountSpecError {
    /// The longest context is out of range.
    #[error("count model order {order} is out of range 0..={max}")]
    Order {
        /// The order recorded.
        order: usize,
        /// The largest order.
        max: usize,
    },
    /// An attribute key beyond the schema.
    #[error("the count model conditions on attribute {index}, the schema has {len}")]
    Attribute {
        /// The index recorded.
        index: usize,
        /// Attributes in the schema.
        len: usize,
    },
    /// Too many keys, or none.
    #[error("the context-aware count model conditions on {n} keys, it must be 1 to {max}")]
    Keys {
        /// Keys recorded.
        n: usize,
        /// The most allowed.
        max: usize,
    },
}

impl CountSpec {
    /// Checks the spec against the attribute schema its indices refer to.
    pub fn validate(&self, attrs: &Attributes) -> Result<(), CountSpecError> {
        let (order, on) = match self {
            Self::Markov1 => return Ok(()),
            Self::Ppm { order } => (*order, &[][..]),
            Self::ContextPpm { order, on } => {
                if on.is_empty() || on.len() > MAX_COUNT_KEYS {
                    return Err(CountSpecError::Keys {
                        n: on.len(),
                        max: MAX_COUNT_KEYS,
                    });
                }
                (*order, &on[..])
            }
        };
        if order > MAX_PPM_ORDER {
            return Err(CountSpecError::Order {
                order,
                max: MAX_PPM_ORDER,
            });
        }
        for k in on {
            if let ContextKey::Attribute(index) = *k {
                if index >= attrs.len() {
                    return Err(CountSpecError::Attribute {
                        index,
                        len: attrs.len(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The model, untrained, over `vocab` (attribute keys naming attributes of `attrs`).
    pub fn build(
        &self,
        vocab: Arc<Vocabulary>,
        attrs: &Attributes,
    ) -> Result<CountModel, CountSpecError> {
        self.validate(attrs)?;
        Ok(match self {
            Self::Ppm { order } => CountModel::Blind(Ppm::new(vocab, *order)),
            Self::Markov1 => CountModel::Blind(Ppm::markov1(vocab)),
            Self::ContextPpm { order, on } => {
                CountModel::Context(ContextPpm::new(vocab, attrs, *order, on))
            }
        })
    }
}

impl CountModel {
    /// What a checkpoint records of it ([`CountSpec::build`] rebuilds it untrained).
    pub fn spec(&self) -> CountSpec {
        match self {
            Self::Blind(p) if p.name() == "markov1" => CountSpec::Markov1,
            Self::Blind(p) => CountSpec::Ppm {
                order: p.max_order(),
            },
            Self::Context(p) if p.keys().is_empty() => CountSpec::Ppm { order: p.order() },
            Self::Context(p) => CountSpec::ContextPpm {
                order: p.order(),
                on: p.keys().to_vec(),
            },
        }
    }

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
