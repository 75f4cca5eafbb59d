//! Training on CPU: AdamW, mini-batches of whole sessions, early stopping on a validation
//! split, reproducible for a seed (seeded initialisation and shuffling).

use std::{sync::Arc, time::Instant};

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::{seq::SliceRandom, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{
    fast::Weights,
    layers::seeded_init,
    model::{build, ContextBatch, ContextShape, Dropout, HyperParams, Net},
    NnError,
};
use crate::{
    context::{Attributes, Features},
    trace::Session,
    vocab::Vocabulary,
};

/// Where training is, for a progress bar.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// Epoch, from 1.
    pub epoch: usize,
    /// Most epochs.
    pub epochs: usize,
    /// Step within the epoch, from 1.
    pub step: usize,
    /// Steps per epoch.
    pub steps: usize,
    /// Loss of the last batch.
    pub loss: f32,
    /// Validation loss, at the end of an epoch.
    pub val_loss: Option<f32>,
}

/// What training did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Epochs run.
    pub epochs_run: usize,
    /// The epoch whose weights were kept.
    pub best_epoch: usize,
    /// Its validation loss (nats per request).
    pub best_val_loss: f32,
    /// Training loss of the last epoch.
    pub train_loss: f32,
    /// True when early stopping ended it.
    pub stopped_early: bool,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Training sessions.
    pub train_sessions: usize,
    /// Validation sessions.
    pub val_sessions: usize,
}

/// A trained model: its hyper-parameters, vocabulary and weights.
#[derive(Clone, Debug)]
pub struct Trained {
    /// Hyper-parameters.
    pub hp: HyperParams,
    /// Vocabulary.
    pub vocab: Arc<Vocabulary>,
    /// Weights, by name.
    pub weights: Weights,
    /// What training did.
    pub report: TrainReport,
    /// The attribute schema the model's context ids refer to (empty without attributes).
    pub attributes: Attributes,
}

/// A training sequence: the start token, then the session's requests, with each token's
/// context (the start token's is unknown).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Seq {
    pub tokens: Vec<u32>,
    pub features: Vec<Features>,
}

impl Seq {
    /// Tokens without context.
    #[cfg(test)]
    pub fn plain(tokens: Vec<u32>) -> Self {
        Self {
            features: vec![Features::default(); tokens.len()],
            tokens,
        }
    }
}

/// The sequences of `sessions`, cut at `max_len + 1` tokens.
pub(crate) fn sequences(sessions: &[Session], vocab_len: usize, max_len: usize) -> Vec<Seq> {
    let bos = vocab_len as u32;
    sessions
        .iter()
        .filter(|s| !s.requests.is_empty())
        .map(|s| {
            let tokens = std::iter::once(bos)
                .chain(s.requests.iter().map(|r| {
                    if (r.kind as usize) < vocab_len {
                        r.kind
                    } else {
                        0
                    }
                }))
                .take(max_len + 1)
                .collect::<Vec<_>>();
            let features = std::iter::once(Features::default())
                .chain(s.features())
                .take(tokens.len())
                .collect();
            Seq { tokens, features }
        })
        .collect()
}

/// A padded batch: inputs `(B, T)`, targets `(B*T)`, a mask `(B*T)` of real positions and
/// the inputs' context under `shape`.
pub(crate) fn batch(
    seqs: &[&Seq],
    shape: &ContextShape,
    vin: usize,
    dev: &Device,
) -> candle_core::Result<(Tensor, Tensor, Tensor, ContextBatch)> {
    let t = seqs
        .iter()
        .map(|s| s.tokens.len() - 1)
        .max()
        .unwrap_or(1)
        .max(1);
    let b = seqs.len();
    let (mut inp, mut tgt, mut mask) = (vec![0u32; b * t], vec![0u32; b * t], vec![0f32; b * t]);
    for (i, s) in seqs.iter().enumerate() {
        let s = &s.tokens;
        for j in 0..s.len() - 1 {
            inp[i * t + j] = s[j];
            tgt[i * t + j] = s[j + 1];
            mask[i * t + j] = 1.0;
        }
    }
    let rows: Vec<&[Features]> = seqs.iter().map(|s| s.features.as_slice()).collect();
    let toks: Vec<&[u32]> = seqs.iter().map(|s| s.tokens.as_slice()).collect();
    Ok((
        Tensor::from_vec(inp, (b, t), dev)?,
        Tensor::from_vec(tgt, b * t, dev)?,
        Tensor::from_vec(mask, b * t, dev)?,
        ContextBatch::new(shape, &toks, &rows, t, vin, dev)?,
    ))
}

/// Mean negative log-likelihood of the masked positions, and their count.
pub(crate) fn loss(
    net: &dyn Net,
    inp: &Tensor,
    ctx: &ContextBatch,
    tgt: &Tensor,
    mask: &Tensor,
    dropout: Option<&mut Dropout>,
) -> candle_core::Result<(Tensor, f32)> {
    let logits = net.forward(inp, ctx, dropout)?;
    let (b, t, v) = logits.dims3()?;
    let logp = candle_nn::ops::log_softmax(&logits.reshape((b * t, v))?, D::Minus1)?;
    let picked = logp.gather(&tgt.unsqueeze(1)?, 1)?.squeeze(1)?;
    let n = mask.sum_all()?.to_scalar::<f32>()?.max(1.0);
    Ok((((picked * mask)?.sum_all()?.neg()? / f64::from(n))?, n))
}

fn snapshot(vm: &VarMap) -> Result<Weights, NnError> {
    let data = vm.data().lock().map_err(|_| NnError::Poisoned)?;
    data.iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
        .collect()
}

fn mean_loss(
    net: &dyn Net,
    seqs: &[Seq],
    shape: &ContextShape,
    vin: usize,
    batch_size: usize,
    dev: &Device,
) -> Result<f32, NnError> {
    let (mut total, mut count) = (0f64, 0f64);
    for chunk in seqs.chunks(batch_size) {
        let refs: Vec<&Seq> = chunk.iter().collect();
        let (i, t, m, c) = batch(&refs, shape, vin, dev)?;
        let (l, n) = loss(net, &i, &c, &t, &m, None)?;
        total += f64::from(l.to_scalar::<f32>()?) * f64::from(n);
        count += f64::from(n);
    }
    Ok((total / count.max(1.0)) as f32)
}

/// Builds a freshly initialised network of `hp` over `vocab_len` ids.
pub(crate) fn init(hp: &HyperParams, vocab_len: usize) -> Result<(VarMap, Box<dyn Net>), NnError> {
    hp.validate().map_err(NnError::Hyper)?;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let net = build(hp, vocab_len, vb)?;
    seeded_init(&vm, hp.seed)?;
    Ok((vm, net))
}

/// Trains a model of `hp` on `train`, stopping early on `val` (on `train` when `val` is
/// empty). `progress` is called after every step. The model reads no attribute (the time
/// features only if `hp.context` asks for them).
pub fn train(
    hp: &HyperParams,
    vocab: Arc<Vocabulary>,
    train: &[Session],
    val: &[Session],
    progress: &mut dyn FnMut(&Progress),
) -> Result<Trained, NnError> {
    train_with_context(hp, vocab, &Attributes::default(), train, val, progress)
}

/// [`train`] for sessions whose attribute ids refer to `attrs`; `hp.context` says which of
/// them (by index, up to its length) and whether the time features are read.
pub fn train_with_context(
    hp: &HyperParams,
    vocab: Arc<Vocabulary>,
    attrs: &Attributes,
    train: &[Session],
    val: &[Session],
    progress: &mut dyn FnMut(&Progress),
) -> Result<Trained, NnError> {
    let start = Instant::now();
    let dev = Device::Cpu;
    let v = vocab.len();
    let (vm, net) = init(hp, v)?;
    let mut train_seqs = sequences(train, v, hp.max_len);
    train_seqs.retain(|s| s.tokens.len() >= 2);
    if train_seqs.is_empty() {
        return Err(NnError::NoTrainingData);
    }
    let shape = &hp.context;
    let val_seqs: Vec<Seq> = {
        let mut s = sequences(val, v, hp.max_len);
        s.retain(|s| s.tokens.len() >= 2);
        if s.is_empty() {
            log::warn!("empty validation split: early stopping watches the training loss");
            train_seqs.clone()
        } else {
            s
        }
    };
    let mut opt = AdamW::new(
        vm.all_vars(),
        ParamsAdamW {
            lr: hp.learning_rate,
            weight_decay: hp.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(hp.seed ^ 0x5eed);
    let mut dropout = Dropout::new(hp.dropout, hp.seed ^ 0xd0d0);
    let steps = train_seqs.len().div_ceil(hp.batch);
    let mut best = (f32::INFINITY, 0usize, snapshot(&vm)?);
    let (mut since_best, mut epoch, mut train_loss) = (0, 0, f32::NAN);
    while epoch < hp.epochs && since_best < hp.patience.max(1) {
        epoch += 1;
        let mut order: Vec<usize> = (0..train_seqs.len()).collect();
        order.shuffle(&mut rng);
        let (mut sum, mut n_sum) = (0f64, 0f64);
        for (step, idx) in order.chunks(hp.batch).enumerate() {
            let refs: Vec<&Seq> = idx.iter().map(|&i| &train_seqs[i]).collect();
            let (i, t, m, c) = batch(&refs, shape, v + 1, &dev)?;
            let (l, n) = loss(net.as_ref(), &i, &c, &t, &m, Some(&mut dropout))?;
            opt.backward_step(&l)?;
            let lv = l.to_scalar::<f32>()?;
            if !lv.is_finite() {
                return Err(NnError::Diverged { loss: lv, epoch });
            }
            sum += f64::from(lv) * f64::from(n);
            n_sum += f64::from(n);
            progress(&Progress {
                epoch,
                epochs: hp.epochs,
                step: step + 1,
                steps,
                loss: lv,
                val_loss: None,
            });
        }
        train_loss = (sum / n_sum.max(1.0)) as f32;
        let val_loss = mean_loss(
            net.as_ref(),
            &val_seqs,
            shape,
            v + 1,
            hp.batch.max(64),
            &dev,
        )?;
        progress(&Progress {
            epoch,
            epochs: hp.epochs,
            step: steps,
            steps,
            loss: train_loss,
            val_loss: Some(val_loss),
        });
        log::info!("epoch {epoch}: train loss {train_loss:.4}, validation loss {val_loss:.4}");
        if val_loss < best.0 - 1e-4 {
            best = (val_loss, epoch, snapshot(&vm)?);
            since_best = 0;
        } else {
            // Reduce on plateau: halve the learning rate each epoch without progress.
            since_best += 1;
            opt.set_learning_rate(opt.learning_rate() * 0.5);
        }
    }
    Ok(Trained {
        hp: hp.clone(),
        vocab,
        weights: best.2,
        report: TrainReport {
            epochs_run: epoch,
            best_epoch: best.1,
            best_val_loss: best.0,
            train_loss,
            stopped_early: epoch < hp.epochs,
            seconds: start.elapsed().as_secs_f64(),
            train_sessions: train.len(),
            val_sessions: val.len(),
        },
        attributes: attrs.clone(),
    })
}
