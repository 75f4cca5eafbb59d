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
pub use hybrid::{fit_weights, Hybrid, MixWeights};
pub use model::{build, Dropout, HyperError, HyperParams, ModelKind, Net};
pub use train::{train, Progress, TrainReport, Trained};

use crate::{
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
    /// The sidecar is missing, unreadable or of another format.
    #[error("model sidecar {path}: {message}; retrain with `pto train`")]
    Sidecar {
        /// The sidecar file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The weights do not match the sidecar.
    #[error("checkpoint does not match its sidecar: {0}; retrain with `pto train`")]
    Mismatch(String),
    /// Bad hyper-parameters.
    #[error("bad hyper-parameters: {0}")]
    Hyper(HyperError),
    /// Nothing to train on.
    #[error("{0}")]
    NoData(String),
    /// Training diverged or failed.
    #[error("training failed: {0}")]
    Train(String),
}

/// A trained model as a [`Predictor`], on the fast inference path.
#[derive(Clone, Debug)]
pub struct NeuralPredictor {
    name: String,
    vocab: Arc<Vocabulary>,
    hp: HyperParams,
    model: FastModel,
}

impl NeuralPredictor {
    /// Serves `trained`.
    pub fn new(trained: &Trained) -> Result<Self, NnError> {
        Ok(Self {
            name: trained.hp.kind.name().to_owned(),
            vocab: trained.vocab.clone(),
            hp: trained.hp.clone(),
            model: FastModel::from_weights(&trained.hp, trained.vocab.len(), &trained.weights)?,
        })
    }

    /// Its hyper-parameters.
    pub fn hyper(&self) -> &HyperParams {
        &self.hp
    }

    /// The model's input: the start token and the last `max_len - 1` requests, unknown ids
    /// mapped to [`UNKNOWN`].
    fn tokens(&self, context: &SessionContext) -> Vec<u32> {
        let v = self.vocab.len();
        let keep = self.hp.max_len - 1;
        let h = &context.requests;
        let tail = &h[h.len().saturating_sub(keep)..];
        let mut t = Vec::with_capacity(tail.len() + 1);
        t.push(v as u32);
        t.extend(
            tail.iter()
                .map(|&x| if (x as usize) < v { x } else { UNKNOWN }),
        );
        t
    }

    /// The full next-request distribution (softmax over known types; [`UNKNOWN`] gets 0).
    pub fn distribution(&self, context: &SessionContext) -> Vec<f32> {
        softmax_known(self.model.logits(&self.tokens(context)))
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
        let tokens = self.tokens(context);
        let (hs, c) = state.values.split_at_mut(h);
        m.advance(hs, c, &tokens, state.consumed);
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
