//! Learned next-request models (candle-nn, CPU): an LSTM and a small Transformer, their
//! training, checkpoints and the fast inference path that serves them online.
//!
//! A checkpoint is two files: `NAME.safetensors` (the weights) and `NAME.json` (the sidecar:
//! format version, hyper-parameters, vocabulary, the split the model was trained with, a
//! SHA-256 of the weights file and the training report). Loading checks all of it; a corrupt
//! or mismatched pair is an [`NnError`], and [`load_or_fallback`] turns that into a defined
//! fallback predictor.

mod checkpoint;
mod fast;
mod hybrid;
pub mod layers;
mod model;
mod train;

use std::sync::Arc;

pub use checkpoint::{
    load, load_hybrid, load_or_fallback, load_predictor, read_sidecar, save, MixSpec, Sidecar,
    FORMAT, FORMAT_VERSION,
};
pub use fast::{FastModel, Weights};
pub use hybrid::{choose_mixture, fit_weights, Hybrid, MixWeights};
pub use model::{
    build, ContextBatch, ContextShape, Dropout, HyperError, HyperParams, ModelKind, Net, ATTR_EMBED,
};
pub use train::{train, train_with_context, Progress, TrainReport, Trained};

use crate::{
    context::{Attributes, Features},
    predict::{top_k, Prediction, Predictor, SessionContext, SessionState},
    vocab::{TypeId, Vocabulary, UNKNOWN},
};

/// Errors of the learned models.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// candle failed.
    #[error("model computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// A checkpoint file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The sidecar is missing or unreadable.
    #[error("model sidecar {path}: cannot read it: {error}; retrain with `pto train`")]
    SidecarRead {
        /// The sidecar file.
        path: String,
        /// The cause.
        error: std::io::Error,
    },
    /// The sidecar is not JSON of a sidecar's shape.
    #[error("model sidecar {path}: not a model sidecar: {error}; retrain with `pto train`")]
    SidecarParse {
        /// The sidecar file.
        path: String,
        /// The cause.
        error: serde_json::Error,
    },
    /// The sidecar could not be encoded.
    #[error("model sidecar {path}: cannot encode it: {error}")]
    SidecarEncode {
        /// The sidecar file.
        path: String,
        /// The cause.
        error: serde_json::Error,
    },
    /// The sidecar is of another format or version.
    #[error(
        "model sidecar {path}: format {format} version {version}, this build reads \
         {expected_format} version {expected_version}; retrain with `pto train`"
    )]
    SidecarFormat {
        /// The sidecar file.
        path: String,
        /// Its format.
        format: String,
        /// Its version.
        version: u32,
        /// The format this build reads.
        expected_format: &'static str,
        /// The version this build reads.
        expected_version: u32,
    },
    /// The sidecar's hyper-parameters are out of range.
    #[error("model sidecar {path}: {error}; retrain with `pto train`")]
    SidecarHyper {
        /// The sidecar file.
        path: String,
        /// What is out of range.
        error: HyperError,
    },
    /// The weights file is larger than any model.
    #[error(
        "checkpoint does not match its sidecar: {path} is {len} bytes, more than any model of \
         this crate; retrain with `pto train`"
    )]
    WeightsTooLarge {
        /// The weights file.
        path: String,
        /// Its length.
        len: u64,
    },
    /// The weights are not the ones the sidecar describes.
    #[error(
        "checkpoint does not match its sidecar: {path} has SHA-256 {found}, the sidecar \
         expects {expected}; retrain with `pto train`"
    )]
    WeightsDigest {
        /// The weights file.
        path: String,
        /// Their digest.
        found: String,
        /// The sidecar's digest.
        expected: String,
    },
    /// The weights file is not safetensors.
    #[error("checkpoint does not match its sidecar: {path}: {error}; retrain with `pto train`")]
    Weights {
        /// The weights file.
        path: String,
        /// The cause.
        error: candle_core::Error,
    },
    /// A tensor the hyper-parameters need is missing.
    #[error(
        "checkpoint does not match its sidecar: tensor {name} is missing; retrain with `pto train`"
    )]
    MissingTensor {
        /// The tensor.
        name: String,
    },
    /// A tensor has the wrong shape.
    #[error(
        "checkpoint does not match its sidecar: tensor {name} has shape {found:?}, the \
         hyper-parameters want {want:?}; retrain with `pto train`"
    )]
    TensorShape {
        /// The tensor.
        name: String,
        /// Its shape.
        found: Vec<usize>,
        /// The shape wanted.
        want: Vec<usize>,
    },
    /// A tensor cannot be read as f32.
    #[error(
        "checkpoint does not match its sidecar: tensor {name}: {error}; retrain with `pto train`"
    )]
    Tensor {
        /// The tensor.
        name: String,
        /// The cause.
        error: candle_core::Error,
    },
    /// A tensor holds NaN or infinity.
    #[error(
        "checkpoint does not match its sidecar: tensor {name} holds NaN or infinity; retrain \
         with `pto train`"
    )]
    NonFinite {
        /// The tensor.
        name: String,
    },
    /// A PPM model over another vocabulary than the learned model's.
    #[error(
        "the PPM model counts another vocabulary than the learned model; build it over the \
         model's vocabulary"
    )]
    Vocabulary,
    /// The learned model and its count model read attribute ids of different schemas.
    #[error(
        "the count model reads another attribute schema than the learned model; build it over \
         the model's schema"
    )]
    AttributeSchema,
    /// The sidecar's mixture records a count model that cannot be built.
    #[error("model sidecar {path}: its mixture's count model: {error}; retrain with `pto train`")]
    SidecarMix {
        /// The sidecar file.
        path: String,
        /// What is wrong.
        error: crate::predict::CountSpecError,
    },
    /// Bad hyper-parameters.
    #[error("bad hyper-parameters: {0}")]
    Hyper(HyperError),
    /// Nothing to train on.
    #[error("no training session has a request; import more data")]
    NoTrainingData,
    /// Training lost its variables to a panic.
    #[error("training failed: variable map lock poisoned")]
    Poisoned,
    /// The loss stopped being a number.
    #[error("training failed: loss became {loss} at epoch {epoch}; lower the learning rate")]
    Diverged {
        /// The loss.
        loss: f32,
        /// The epoch.
        epoch: usize,
    },
}

/// A trained model as a [`Predictor`], on the fast inference path.
#[derive(Clone, Debug)]
pub struct NeuralPredictor {
    name: String,
    vocab: Arc<Vocabulary>,
    hp: HyperParams,
    model: FastModel,
    attributes: Attributes,
}

impl NeuralPredictor {
    /// Serves `trained`.
    pub fn new(trained: &Trained) -> Result<Self, NnError> {
        Ok(Self {
            name: trained.hp.kind.name().to_owned(),
            vocab: trained.vocab.clone(),
            hp: trained.hp.clone(),
            model: FastModel::from_weights(&trained.hp, trained.vocab.len(), &trained.weights)?,
            attributes: trained.attributes.clone(),
        })
    }

    /// Its hyper-parameters.
    pub fn hyper(&self) -> &HyperParams {
        &self.hp
    }

    /// The model's input: the start token and the last `max_len - 1` requests, unknown ids
    /// mapped to [`UNKNOWN`]; and their context (the start token's unknown).
    fn tokens(&self, context: &SessionContext) -> (Vec<u32>, Vec<Features>) {
        let v = self.vocab.len();
        let keep = self.hp.max_len - 1;
        let h = &context.requests;
        let from = h.len().saturating_sub(keep);
        let tail = &h[from..];
        let mut t = Vec::with_capacity(tail.len() + 1);
        t.push(v as u32);
        t.extend(
            tail.iter()
                .map(|&x| if (x as usize) < v { x } else { UNKNOWN }),
        );
        let mut f = Vec::with_capacity(t.len());
        f.push(Features::default());
        if !self.hp.context.is_empty() {
            f.extend((from..h.len()).map(|i| context.feature(i)));
        }
        (t, f)
    }

    /// The attribute schema its context ids refer to.
    pub fn attribute_schema(&self) -> &Attributes {
        &self.attributes
    }

    /// The full next-request distribution (softmax over known types; [`UNKNOWN`] gets 0).
    pub fn distribution(&self, context: &SessionContext) -> Vec<f32> {
        let (t, f) = self.tokens(context);
        softmax_known(self.model.logits(&t, &f))
    }

    /// [`Self::distribution`], carrying an LSTM's state in `state` from one request of a live
    /// session to the next (one step per request). Falls back to a full pass when the state
    /// does not fit the context (another session, or past `max_len`) or for the Transformer.
    pub fn distribution_session(
        &self,
        state: &mut SessionState,
        context: &SessionContext,
    ) -> Vec<f32> {
        let FastModel::Lstm(m) = &self.model else {
            return self.distribution(context);
        };
        let n = context.requests.len();
        let h = m.hidden();
        if n + 1 > self.hp.max_len {
            *state = SessionState::default();
            return self.distribution(context);
        }
        // `consumed` counts tokens (the start token included) already run through the cell.
        if state.values.len() != 2 * h || state.consumed > n + 1 {
            state.values = vec![0f32; 2 * h];
            state.consumed = 0;
        }
        let (tokens, features) = self.tokens(context);
        let (hs, c) = state.values.split_at_mut(h);
        m.advance(hs, c, &tokens, &features, state.consumed);
        state.consumed = tokens.len();
        softmax_known(m.head(hs))
    }
}

fn softmax_known(mut logits: Vec<f32>) -> Vec<f32> {
    {
        logits[UNKNOWN as usize] = f32::NEG_INFINITY;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for l in &mut logits {
            *l = (*l - max).exp();
            sum += *l;
        }
        logits.iter_mut().for_each(|l| *l /= sum);
    }
    logits
}

impl Predictor for NeuralPredictor {
    fn name(&self) -> &str {
        &self.name
    }

    fn vocabulary(&self) -> &Arc<Vocabulary> {
        &self.vocab
    }

    fn predict(&self, context: &SessionContext, k: usize) -> Vec<Prediction> {
        top_k(&self.distribution(context), k)
    }

    fn attributes(&self) -> Option<&Attributes> {
        (!self.hp.context.attribute_values.is_empty()).then_some(&self.attributes)
    }

    fn predict_session(
        &self,
        state: &mut SessionState,
        context: &SessionContext,
        k: usize,
    ) -> Vec<Prediction> {
        top_k(&self.distribution_session(state, context), k)
    }

    fn observe(&mut self, _: &SessionContext, _: TypeId) {
        // Learned models adapt by retraining (`pto train`), not online.
    }
}

#[cfg(test)]
mod tests;
