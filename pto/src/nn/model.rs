//! The learned models as candle graphs (for training): an LSTM and a small pre-norm
//! Transformer with causal self-attention. Both map a batch of token sequences `(B, T)` to
//! next-request logits `(B, T, V)`.
//!
//! Tokens: request-type ids `0..V` (0 is unknown) and a start token `V`; a sequence is the
//! start token followed by the session's requests. With `pairs`, each position's input also
//! adds an embedding of the (previous, current) token pair: a bigram feature that lets the
//! network learn sparse short contexts as sharply as counting does, from the same data.
//!
//! With a [`ContextShape`], each position's input also reads the request's context: one
//! embedding per attribute and the scaled numeric time features
//! ([`crate::context::Features::time_vector`]) with an embedding of the gap bucket, concatenated to the token embedding (the
//! LSTM reads the concatenation; the Transformer projects the context part into its width
//! and adds it, which is a linear map of the concatenation). The start token's context is
//! all unknown and zero.

use candle_core::{Result, Tensor, D};
use candle_nn::{rnn::LSTMConfig, Embedding, Linear, Module, VarBuilder, LSTM, RNN};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::layers::{causal_mask, softmax_last, LayerNorm};
use crate::context::{
    AttrValues, Attributes, Features, GAP_BUCKETS, MAX_ATTRIBUTES, MAX_ATTRIBUTE_VALUES,
    TIME_FEATURES,
};

/// Which network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// One-layer LSTM.
    Lstm,
    /// Small causal Transformer.
    Transformer,
}

impl ModelKind {
    /// Every kind.
    pub const ALL: [ModelKind; 2] = [ModelKind::Lstm, ModelKind::Transformer];

    /// Its name in tables and files.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Lstm => "lstm",
            ModelKind::Transformer => "transformer",
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ModelKind {
    type Err = crate::names::UnknownName;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        crate::names::parse("model", s, &Self::ALL, Self::name)
    }
}

/// Hyper-parameters of a model and of its training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HyperParams {
    /// Which network.
    pub kind: ModelKind,
    /// Embedding width (the Transformer's model width).
    pub embed: usize,
    /// LSTM hidden width, or the Transformer's feed-forward width.
    pub hidden: usize,
    /// Transformer layers (ignored by the LSTM).
    pub layers: usize,
    /// Transformer attention heads (ignored by the LSTM); must divide `embed`.
    pub heads: usize,
    /// Longest sequence trained on and looked at (start token included).
    pub max_len: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Sessions per batch.
    pub batch: usize,
    /// Most epochs.
    pub epochs: usize,
    /// Epochs without a better validation loss before stopping.
    pub patience: usize,
    /// Seed of the initialisation, the shuffling and the dropout masks.
    pub seed: u64,
    /// Dropout probability while training (embeddings, and the LSTM output or the
    /// Transformer's residual branches).
    #[serde(default)]
    pub dropout: f32,
    /// Add an embedding of each (previous, current) request pair to the input.
    #[serde(default)]
    pub pairs: bool,
    /// The request context the model reads beside the request types (none by default).
    #[serde(default)]
    pub context: ContextShape,
}

/// What context a model reads: its attributes' vocabulary sizes and the time features.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextShape {
    /// Per attribute, the size of its value vocabulary (the unknown bucket included); ids at
    /// or past it read as unknown.
    pub attribute_values: Vec<usize>,
    /// Width of each attribute's embedding.
    pub attr_embed: usize,
    /// Read the numeric time features.
    pub time: bool,
    /// Width of an embedding of the gap bucket ([`Features::gap`], whose bounds match the
    /// generated workloads' speed classes) read beside the numeric time features (0: none):
    /// a gap threshold a learned model would otherwise have to carve out of one log-scaled
    /// number.
    #[serde(default)]
    pub gap_embed: usize,
    /// Add, per attribute, an embedding of the (token, attribute value, gap bucket) triple
    /// to the token embedding (hashed into at most `MAX_CROSS_BUCKETS`): a sparse feature
    /// that lets the network learn per-context transitions as sharply as counting does.
    #[serde(default)]
    pub cross: bool,
}

/// Most buckets of one cross embedding.
pub const MAX_CROSS_BUCKETS: usize = 4096;

/// Buckets of the cross embedding of an attribute of `values` values, for `vin` tokens.
pub fn cross_buckets(vin: usize, values: usize) -> usize {
    (vin * values * GAP_BUCKETS).clamp(1, MAX_CROSS_BUCKETS)
}

/// The cross bucket of `token` with attribute value `value` and gap bucket `gap`.
pub fn cross_id(token: u32, value: u32, gap: u8, vin: usize, values: usize) -> u32 {
    let v = (token as usize * values + value as usize) * GAP_BUCKETS + usize::from(gap);
    (v % cross_buckets(vin, values)) as u32
}

/// Default width of an attribute embedding.
pub const ATTR_EMBED: usize = 8;
/// Default width of the gap bucket's embedding (with the time features).
pub const GAP_EMBED: usize = 4;

impl ContextShape {
    /// Every attribute of `attrs`, and the time features when `time`.
    pub fn of(attrs: &Attributes, time: bool) -> Self {
        Self {
            attribute_values: (0..attrs.len())
                .map(|i| attrs.values(i).map_or(1, |v| v.len()).max(1))
                .collect(),
            attr_embed: if attrs.is_empty() { 0 } else { ATTR_EMBED },
            time,
            gap_embed: if time { GAP_EMBED } else { 0 },
            cross: !attrs.is_empty(),
        }
    }

    /// True when the model reads no context.
    pub fn is_empty(&self) -> bool {
        self.width() == 0
    }

    /// Width of the context vector concatenated to each input.
    pub fn width(&self) -> usize {
        self.attribute_values.len() * self.attr_embed
            + self.gap_embed
            + if self.time { TIME_FEATURES } else { 0 }
    }

    /// The id of attribute `i` in `a` as the model reads it (unknown when out of range).
    pub fn attr_id(&self, a: &AttrValues, i: usize) -> u32 {
        let v = usize::from(a.get(i));
        if v < self.attribute_values.get(i).copied().unwrap_or(0) {
            v as u32
        } else {
            0
        }
    }
}

/// The context of a batch `(B, T)`: one `(B, T)` id tensor per attribute and the `(B, T, 6)`
/// time features, as the shape asks (empty for a model without context).
#[derive(Debug, Default)]
pub struct ContextBatch {
    /// Attribute ids, one tensor per attribute.
    pub attrs: Vec<Tensor>,
    /// Gap bucket ids `(B, T)`, when the shape embeds them.
    pub gap: Option<Tensor>,
    /// Time features.
    pub time: Option<Tensor>,
    /// Cross-embedding ids, one `(B, T)` tensor per attribute when the shape asks for them.
    pub cross: Vec<Tensor>,
}

impl ContextBatch {
    /// The batch of `rows` (each aligned with its token row of `tokens`, padded to `t`
    /// positions with unknown context) under `shape`, for `vin` input tokens.
    pub fn new(
        shape: &ContextShape,
        tokens: &[&[u32]],
        rows: &[&[Features]],
        t: usize,
        vin: usize,
        dev: &candle_core::Device,
    ) -> Result<Self> {
        let b = rows.len();
        let at = |r: &[Features], j: usize| r.get(j).copied().unwrap_or_default();
        let attrs = (0..shape.attribute_values.len())
            .map(|i| {
                let ids: Vec<u32> = rows
                    .iter()
                    .flat_map(|r| (0..t).map(move |j| shape.attr_id(&at(r, j).attrs, i)))
                    .collect();
                Tensor::from_vec(ids, (b, t), dev)
            })
            .collect::<Result<_>>()?;
        let gap = if shape.gap_embed > 0 {
            let ids: Vec<u32> = rows
                .iter()
                .flat_map(|r| {
                    (0..t).map(move |j| u32::from(at(r, j).gap).min(GAP_BUCKETS as u32 - 1))
                })
                .collect();
            Some(Tensor::from_vec(ids, (b, t), dev)?)
        } else {
            None
        };
        let time = if shape.time {
            let v: Vec<f32> = rows
                .iter()
                .flat_map(|r| (0..t).flat_map(move |j| at(r, j).time_vector()))
                .collect();
            Some(Tensor::from_vec(v, (b, t, TIME_FEATURES), dev)?)
        } else {
            None
        };
        let cross = if shape.cross {
            (0..shape.attribute_values.len())
                .map(|i| {
                    let n = shape.attribute_values[i];
                    let ids: Vec<u32> = tokens
                        .iter()
                        .zip(rows)
                        .flat_map(|(tk, r)| {
                            (0..t).map(move |j| {
                                let f = at(r, j);
                                let tok = tk.get(j).copied().unwrap_or(0);
                                cross_id(tok, shape.attr_id(&f.attrs, i), f.gap, vin, n)
                            })
                        })
                        .collect();
                    Tensor::from_vec(ids, (b, t), dev)
                })
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        Ok(Self {
            attrs,
            gap,
            time,
            cross,
        })
    }
}

/// Most pair embeddings; pairs beyond are hashed into this many buckets.
pub const MAX_PAIR_BUCKETS: usize = 4096;

/// Pair buckets for `vin` input tokens.
pub fn pair_buckets(vin: usize) -> usize {
    (vin * vin).clamp(1, MAX_PAIR_BUCKETS)
}

/// The pair bucket of `(prev, cur)`.
pub fn pair_id(prev: u32, cur: u32, vin: usize) -> u32 {
    ((prev as usize * vin + cur as usize) % pair_buckets(vin)) as u32
}

/// The pair ids of a `(B, T)` token batch whose rows start with the start token `vin - 1`.
fn pair_tensor(tokens: &Tensor, vin: usize) -> Result<Tensor> {
    let rows = tokens.to_vec2::<u32>()?;
    let bos = (vin - 1) as u32;
    let ids: Vec<u32> = rows
        .iter()
        .flat_map(|r| {
            (0..r.len()).map(move |j| pair_id(if j == 0 { bos } else { r[j - 1] }, r[j], vin))
        })
        .collect();
    Tensor::from_vec(ids, tokens.dims2()?, tokens.device())
}

/// The input embedding: token, plus pair when enabled, and the context embeddings.
struct Input {
    tok: Embedding,
    pair: Option<Embedding>,
    attrs: Vec<Embedding>,
    gap: Option<Embedding>,
    cross: Vec<Embedding>,
    vin: usize,
}

impl Input {
    fn new(hp: &HyperParams, v: usize, name: &str, vb: &VarBuilder) -> Result<Self> {
        let vin = v + 1;
        Ok(Self {
            tok: candle_nn::embedding(vin, hp.embed, vb.pp(name))?,
            pair: if hp.pairs {
                Some(candle_nn::embedding(
                    pair_buckets(vin),
                    hp.embed,
                    vb.pp("pair"),
                )?)
            } else {
                None
            },
            attrs: hp
                .context
                .attribute_values
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    candle_nn::embedding(n, hp.context.attr_embed, vb.pp(format!("ctx.attr{i}")))
                })
                .collect::<Result<_>>()?,
            gap: if hp.context.gap_embed > 0 {
                Some(candle_nn::embedding(
                    GAP_BUCKETS,
                    hp.context.gap_embed,
                    vb.pp("ctx.gap"),
                )?)
            } else {
                None
            },
            cross: if hp.context.cross {
                hp.context
                    .attribute_values
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| {
                        candle_nn::embedding(
                            cross_buckets(vin, n),
                            hp.embed,
                            vb.pp(format!("ctx.cross{i}")),
                        )
                    })
                    .collect::<Result<_>>()?
            } else {
                Vec::new()
            },
            vin,
        })
    }

    /// The token (and pair, and cross) embedding, `(B, T, E)`.
    fn forward(&self, tokens: &Tensor, ctx: &ContextBatch) -> Result<Tensor> {
        let mut x = self.tok.forward(tokens)?;
        if let Some(p) = &self.pair {
            x = (x + p.forward(&pair_tensor(tokens, self.vin)?)?)?;
        }
        for (e, ids) in self.cross.iter().zip(&ctx.cross) {
            x = (x + e.forward(ids)?)?;
        }
        Ok(x)
    }

    /// The context vector `(B, T, C)`: attribute embeddings and time features; `None` for a
    /// model without context.
    fn context(&self, ctx: &ContextBatch) -> Result<Option<Tensor>> {
        let mut parts = self
            .attrs
            .iter()
            .zip(&ctx.attrs)
            .map(|(e, ids)| e.forward(ids))
            .collect::<Result<Vec<_>>>()?;
        if let (Some(e), Some(ids)) = (&self.gap, &ctx.gap) {
            parts.push(e.forward(ids)?);
        }
        parts.extend(ctx.time.clone());
        if parts.is_empty() {
            return Ok(None);
        }
        Tensor::cat(&parts, D::Minus1).map(Some)
    }
}

impl HyperParams {
    /// Defaults for `kind`, sized for sub-200-us inference on one core.
    pub fn default_for(kind: ModelKind) -> Self {
        let base = Self {
            kind,
            embed: 32,
            hidden: 64,
            layers: 2,
            heads: 4,
            max_len: 48,
            learning_rate: 3e-3,
            weight_decay: 1e-2,
            batch: 32,
            epochs: 40,
            patience: 4,
            seed: 1,
            dropout: 0.1,
            pairs: true,
            context: ContextShape::default(),
        };
        match kind {
            ModelKind::Lstm => base,
            ModelKind::Transformer => Self { hidden: 64, ..base },
        }
    }

    /// Checks the values; the error says which one is wrong.
    pub fn validate(&self) -> std::result::Result<(), HyperError> {
        let fits = |value: usize, lo: usize, hi: usize, name: &'static str| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err(HyperError::OutOfRange {
                    name,
                    value,
                    lo,
                    hi,
                })
            }
        };
        fits(self.embed, 2, 1024, "embed")?;
        fits(self.hidden, 2, 4096, "hidden")?;
        fits(self.layers, 1, 16, "layers")?;
        fits(self.heads, 1, 64, "heads")?;
        fits(self.max_len, 2, 4096, "max_len")?;
        fits(self.batch, 1, 65536, "batch")?;
        fits(self.epochs, 1, 100_000, "epochs")?;
        if self.kind == ModelKind::Transformer && !self.embed.is_multiple_of(self.heads) {
            return Err(HyperError::Heads {
                heads: self.heads,
                embed: self.embed,
            });
        }
        let c = &self.context;
        fits(
            c.attribute_values.len(),
            0,
            MAX_ATTRIBUTES,
            "context attributes",
        )?;
        for &n in &c.attribute_values {
            fits(n, 1, MAX_ATTRIBUTE_VALUES + 1, "context attribute values")?;
        }
        if !c.attribute_values.is_empty() {
            fits(c.attr_embed, 1, 256, "context attr_embed")?;
        }
        fits(c.gap_embed, 0, 256, "context gap_embed")?;
        let lr_ok = self.learning_rate > 0.0 && self.learning_rate < 1.0;
        if !(0.0..0.9).contains(&self.dropout) {
            return Err(HyperError::Dropout(self.dropout));
        }
        if !lr_ok || !(0.0..1.0).contains(&self.weight_decay) {
            return Err(HyperError::Optimiser {
                learning_rate: self.learning_rate,
                weight_decay: self.weight_decay,
            });
        }
        Ok(())
    }
}

/// A [`HyperParams`] value out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HyperError {
    /// A size outside what the model supports.
    #[error("{name} = {value} is not in {lo}..={hi}")]
    OutOfRange {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: usize,
        /// The smallest accepted.
        lo: usize,
        /// The largest accepted.
        hi: usize,
    },
    /// The Transformer's heads must split its width evenly.
    #[error("heads = {heads} does not divide embed = {embed}: pick a divisor")]
    Heads {
        /// The heads.
        heads: usize,
        /// The width.
        embed: usize,
    },
    /// Dropout out of range.
    #[error("dropout = {0} is not in [0, 0.9)")]
    Dropout(f32),
    /// The optimiser's rates out of range.
    #[error(
        "learning_rate must be in (0, 1) and weight_decay in [0, 1) \
         (got {learning_rate} and {weight_decay})"
    )]
    Optimiser {
        /// The learning rate.
        learning_rate: f64,
        /// The weight decay.
        weight_decay: f64,
    },
}

/// A network that maps `(B, T)` tokens and their context to `(B, T, V)` logits.
pub trait Net {
    /// The forward pass; `dropout` only while training.
    fn forward(
        &self,
        tokens: &Tensor,
        ctx: &ContextBatch,
        dropout: Option<&mut Dropout>,
    ) -> Result<Tensor>;
}

/// Inverted dropout with a seeded mask (candle's CPU random generator cannot be seeded).
#[derive(Debug)]
pub struct Dropout {
    p: f32,
    rng: ChaCha8Rng,
}

impl Dropout {
    /// Drops each value with probability `p`, drawing masks from `seed`.
    pub fn new(p: f32, seed: u64) -> Self {
        Self {
            p: p.clamp(0.0, 0.9),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// `x` with a fresh mask applied (scaled by `1 / (1 - p)`).
    pub fn apply(&mut self, x: &Tensor) -> Result<Tensor> {
        if self.p == 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 / (1.0 - self.p);
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| {
                if self.rng.random::<f32>() < self.p {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        x * Tensor::from_vec(mask, x.shape(), x.device())?
    }
}

fn drop(d: &mut Option<&mut Dropout>, x: Tensor) -> Result<Tensor> {
    match d {
        Some(d) => d.apply(&x),
        None => Ok(x),
    }
}

/// Builds the network of `hp` for a vocabulary of `vocab_len` ids (unknown included), with its
/// variables under `vb`.
pub fn build(hp: &HyperParams, vocab_len: usize, vb: VarBuilder) -> Result<Box<dyn Net>> {
    Ok(match hp.kind {
        ModelKind::Lstm => Box::new(LstmNet::new(hp, vocab_len, vb)?),
        ModelKind::Transformer => Box::new(TransformerNet::new(hp, vocab_len, vb)?),
    })
}

struct LstmNet {
    embed: Input,
    lstm: LSTM,
    head: Linear,
}

impl LstmNet {
    fn new(hp: &HyperParams, v: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            embed: Input::new(hp, v, "embed", &vb)?,
            lstm: candle_nn::lstm(
                hp.embed + hp.context.width(),
                hp.hidden,
                LSTMConfig::default(),
                vb.pp("lstm"),
            )?,
            head: candle_nn::linear(hp.hidden, v, vb.pp("head"))?,
        })
    }
}

impl Net for LstmNet {
    fn forward(
        &self,
        tokens: &Tensor,
        ctx: &ContextBatch,
        mut dropout: Option<&mut Dropout>,
    ) -> Result<Tensor> {
        let mut x = self.embed.forward(tokens, ctx)?;
        if let Some(c) = self.embed.context(ctx)? {
            x = Tensor::cat(&[x, c], D::Minus1)?;
        }
        let x = drop(&mut dropout, x)?;
        let states = self.lstm.seq(&x)?;
        let h = drop(&mut dropout, self.lstm.states_to_tensor(&states)?)?;
        self.head.forward(&h)
    }
}

struct Block {
    ln1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

impl Block {
    fn new(d: usize, ffn: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            ln1: LayerNorm::new(d, vb.pp("ln1"))?,
            qkv: candle_nn::linear(d, 3 * d, vb.pp("qkv"))?,
            proj: candle_nn::linear(d, d, vb.pp("proj"))?,
            ln2: LayerNorm::new(d, vb.pp("ln2"))?,
            fc1: candle_nn::linear(d, ffn, vb.pp("fc1"))?,
            fc2: candle_nn::linear(ffn, d, vb.pp("fc2"))?,
            heads,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        dropout: &mut Option<&mut Dropout>,
    ) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let dh = d / self.heads;
        let qkv = self.qkv.forward(&self.ln1.forward(x)?)?;
        let split = |i: usize| -> Result<Tensor> {
            qkv.narrow(D::Minus1, i * d, d)?
                .reshape((b, t, self.heads, dh))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let scores = (q.matmul(&k.t()?)? / (dh as f64).sqrt())?.broadcast_add(mask)?;
        let att = softmax_last(&scores)?.matmul(&v)?;
        let att = att.transpose(1, 2)?.reshape((b, t, d))?;
        let x = (x + drop(dropout, self.proj.forward(&att)?)?)?;
        let ffn = self
            .fc2
            .forward(&self.fc1.forward(&self.ln2.forward(&x)?)?.relu()?)?;
        x + drop(dropout, ffn)?
    }
}

struct TransformerNet {
    tok: Input,
    /// Projects the context vector into the model width.
    ctx_in: Option<Linear>,
    pos: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    head: Linear,
}

impl TransformerNet {
    fn new(hp: &HyperParams, v: usize, vb: VarBuilder) -> Result<Self> {
        let blocks = (0..hp.layers)
            .map(|i| Block::new(hp.embed, hp.hidden, hp.heads, vb.pp(format!("blocks.{i}"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            tok: Input::new(hp, v, "tok", &vb)?,
            ctx_in: if hp.context.is_empty() {
                None
            } else {
                Some(candle_nn::linear(
                    hp.context.width(),
                    hp.embed,
                    vb.pp("ctx_in"),
                )?)
            },
            pos: candle_nn::embedding(hp.max_len, hp.embed, vb.pp("pos"))?,
            blocks,
            ln_f: LayerNorm::new(hp.embed, vb.pp("ln_f"))?,
            head: candle_nn::linear(hp.embed, v, vb.pp("head"))?,
        })
    }
}

impl Net for TransformerNet {
    fn forward(
        &self,
        tokens: &Tensor,
        ctx: &ContextBatch,
        mut dropout: Option<&mut Dropout>,
    ) -> Result<Tensor> {
        let (_, t) = tokens.dims2()?;
        let positions = Tensor::arange(0u32, t as u32, tokens.device())?;
        let mut x = self
            .tok
            .forward(tokens, ctx)?
            .broadcast_add(&self.pos.forward(&positions)?)?;
        if let (Some(p), Some(c)) = (&self.ctx_in, self.tok.context(ctx)?) {
            x = (x + p.forward(&c)?)?;
        }
        let mask = causal_mask(t, tokens.device())?;
        for b in &self.blocks {
            x = b.forward(&x, &mask, &mut dropout)?;
        }
        self.head.forward(&self.ln_f.forward(&x)?)
    }
}
