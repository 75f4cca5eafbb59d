//! Plain-Rust inference of the trained models, for the online path.
//!
//! A candle graph costs a few microseconds per op on tensors this small; these loops over the
//! same weights predict in tens of microseconds. A unit test checks that they agree with the
//! candle forward pass.

use std::collections::HashMap;

use candle_core::Tensor;

use super::{
    layers::LN_EPS,
    model::{cross_buckets, cross_id, pair_buckets, pair_id, ContextShape, HyperParams, ModelKind},
    NnError,
};
use crate::context::{Features, GAP_BUCKETS, TIME_FEATURES};

/// Named weights, as in a checkpoint.
pub type Weights = HashMap<String, Tensor>;

fn take(w: &Weights, name: &str, dims: &[usize]) -> Result<Vec<f32>, NnError> {
    let t = w
        .get(name)
        .ok_or_else(|| NnError::MissingTensor { name: name.into() })?;
    if t.dims() != dims {
        return Err(NnError::TensorShape {
            name: name.into(),
            found: t.dims().to_vec(),
            want: dims.to_vec(),
        });
    }
    let v = t
        .to_dtype(candle_core::DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|error| NnError::Tensor {
            name: name.into(),
            error,
        })?;
    if v.iter().any(|x| !x.is_finite()) {
        return Err(NnError::NonFinite { name: name.into() });
    }
    Ok(v)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        // Fixed-size arrays: no bounds checks, so the loop vectorises.
        if let (Ok(x), Ok(y)) = (<&[f32; 8]>::try_from(x), <&[f32; 8]>::try_from(y)) {
            for i in 0..8 {
                acc[i] += x[i] * y[i];
            }
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `out = W x (+ b)` for a row-major `W` of `out.len()` rows.
fn matvec(w: &[f32], b: Option<&[f32]>, x: &[f32], out: &mut [f32]) {
    let cols = x.len();
    for (r, o) in out.iter_mut().enumerate() {
        *o = dot(&w[r * cols..(r + 1) * cols], x) + b.map_or(0.0, |b| b[r]);
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn layer_norm(x: &[f32], g: &[f32], b: &[f32], out: &mut [f32]) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + LN_EPS as f32).sqrt();
    for i in 0..x.len() {
        out[i] = (x[i] - mean) * inv * g[i] + b[i];
    }
}

/// The context's share of one position's input, already projected into what reads it (the
/// LSTM's gates, the Transformer's width): per attribute and value a precomputed vector,
/// and the matrix of the time features.
#[derive(Clone, Debug, Default)]
struct CtxProj {
    shape: ContextShape,
    out: usize,
    /// Per attribute: `values × out`.
    attrs: Vec<Vec<f32>>,
    /// `GAP_BUCKETS × out`: the gap bucket's embedding, projected; empty without one.
    gap: Vec<f32>,
    /// `TIME_FEATURES × out`: per time feature, its column of the matrix (so that adding
    /// it is one vectorised pass, skipped when the feature is 0); empty without time features.
    time: Vec<f32>,
    /// Added whenever there is context (the Transformer's projection bias); may be empty.
    bias: Vec<f32>,
}

impl CtxProj {
    /// From the `out × cols` matrix `m` whose columns `from..from + shape.width()` read the
    /// context vector, with the attribute embeddings of `w`.
    fn new(
        shape: &ContextShape,
        m: &[f32],
        cols: usize,
        from: usize,
        out: usize,
        w: &Weights,
    ) -> Result<Self, NnError> {
        let ae = shape.attr_embed;
        let attrs = shape
            .attribute_values
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let emb = take(w, &format!("ctx.attr{i}.weight"), &[n, ae])?;
                let mut proj = vec![0f32; n * out];
                for v in 0..n {
                    for r in 0..out {
                        let row = &m[r * cols + from + i * ae..][..ae];
                        proj[v * out + r] = dot(row, &emb[v * ae..][..ae]);
                    }
                }
                Ok(proj)
            })
            .collect::<Result<_, NnError>>()?;
        let gap_at = from + shape.attribute_values.len() * ae;
        let ge = shape.gap_embed;
        let gap = if ge > 0 {
            let emb = take(w, "ctx.gap.weight", &[GAP_BUCKETS, ge])?;
            let mut proj = vec![0f32; GAP_BUCKETS * out];
            for v in 0..GAP_BUCKETS {
                for r in 0..out {
                    let row = &m[r * cols + gap_at..][..ge];
                    proj[v * out + r] = dot(row, &emb[v * ge..][..ge]);
                }
            }
            proj
        } else {
            Vec::new()
        };
        let time = if shape.time {
            let at = gap_at + ge;
            (0..TIME_FEATURES)
                .flat_map(|k| (0..out).map(move |r| m[r * cols + at + k]))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            shape: shape.clone(),
            out,
            attrs,
            gap,
            time,
            bias: Vec::new(),
        })
    }

    /// Adds the projected context `f` to `acc` (`out` values).
    fn add(&self, f: &Features, acc: &mut [f32]) {
        if self.shape.is_empty() {
            return;
        }
        let out = self.out;
        for (i, proj) in self.attrs.iter().enumerate() {
            let id = self.shape.attr_id(&f.attrs, i) as usize;
            for (a, p) in acc.iter_mut().zip(&proj[id * out..][..out]) {
                *a += p;
            }
        }
        if !self.gap.is_empty() {
            let id = usize::from(f.gap).min(GAP_BUCKETS - 1);
            for (a, p) in acc.iter_mut().zip(&self.gap[id * out..][..out]) {
                *a += p;
            }
        }
        if !self.time.is_empty() {
            for (k, x) in f.time_vector().into_iter().enumerate() {
                if x != 0.0 {
                    for (a, w) in acc.iter_mut().zip(&self.time[k * out..][..out]) {
                        *a += x * w;
                    }
                }
            }
        }
        for (a, b) in acc.iter_mut().zip(&self.bias) {
            *a += b;
        }
    }
}

/// The cross embeddings of (token, attribute value, gap bucket), per attribute.
#[derive(Clone, Debug, Default)]
struct Cross {
    shape: ContextShape,
    vin: usize,
    e: usize,
    /// Per attribute: `buckets × e`.
    tables: Vec<Vec<f32>>,
}

impl Cross {
    fn new(shape: &ContextShape, vin: usize, e: usize, w: &Weights) -> Result<Self, NnError> {
        let tables = if shape.cross {
            shape
                .attribute_values
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    take(
                        w,
                        &format!("ctx.cross{i}.weight"),
                        &[cross_buckets(vin, n), e],
                    )
                })
                .collect::<Result<_, NnError>>()?
        } else {
            Vec::new()
        };
        Ok(Self {
            shape: shape.clone(),
            vin,
            e,
            tables,
        })
    }

    /// The same tables projected by the `out × e` matrix `m` (the LSTM's input columns):
    /// each bucket's share of the gates, computed once.
    fn projected(mut self, m: &[f32], out: usize) -> Self {
        let e = self.e;
        for t in &mut self.tables {
            let buckets = t.len() / e.max(1);
            let mut p = vec![0f32; buckets * out];
            for b in 0..buckets {
                matvec(m, None, &t[b * e..][..e], &mut p[b * out..][..out]);
            }
            *t = p;
        }
        self.e = out;
        self
    }

    /// Adds the cross embeddings (or their projections) of `token` in context `f` to `acc`
    /// (`e` values).
    fn add(&self, token: u32, f: &Features, acc: &mut [f32]) {
        for (i, table) in self.tables.iter().enumerate() {
            let n = self.shape.attribute_values[i];
            let id = cross_id(token, self.shape.attr_id(&f.attrs, i), f.gap, self.vin, n) as usize;
            for (a, x) in acc.iter_mut().zip(&table[id * self.e..][..self.e]) {
                *a += x;
            }
        }
    }
}

/// An LSTM ready for inference.
#[derive(Clone, Debug)]
pub struct FastLstm {
    h: usize,
    /// Per token: `W_ih · embed[token] + b_ih + b_hh`, `4h` values (the input never needs a
    /// matrix product at run time).
    proj: Vec<f32>,
    /// Per pair bucket: `W_ih · pair[p]`, `4h` values; empty without pair features.
    pair_proj: Vec<f32>,
    /// The context's share of the gates.
    ctx: CtxProj,
    /// Per cross bucket, its share of the gates (`W_ih · cross[b]`, `4h` values).
    cross: Cross,
    vin: usize,
    w_hh: Vec<f32>,
    head_w: Vec<f32>,
    head_b: Vec<f32>,
}

/// A Transformer block's weights.
#[derive(Clone, Debug)]
struct FastBlock {
    ln1: (Vec<f32>, Vec<f32>),
    qkv: (Vec<f32>, Vec<f32>),
    proj: (Vec<f32>, Vec<f32>),
    ln2: (Vec<f32>, Vec<f32>),
    fc1: (Vec<f32>, Vec<f32>),
    fc2: (Vec<f32>, Vec<f32>),
}

/// A Transformer ready for inference.
#[derive(Clone, Debug)]
pub struct FastTransformer {
    d: usize,
    heads: usize,
    vin: usize,
    tok: Vec<f32>,
    /// Pair embeddings; empty without pair features.
    pair: Vec<f32>,
    /// The context's share of the input.
    ctx: CtxProj,
    cross: Cross,
    pos: Vec<f32>,
    blocks: Vec<FastBlock>,
    ln_f: (Vec<f32>, Vec<f32>),
    head_w: Vec<f32>,
    head_b: Vec<f32>,
}

/// Either model.
#[derive(Clone, Debug)]
pub enum FastModel {
    /// An LSTM.
    Lstm(FastLstm),
    /// A Transformer.
    Transformer(FastTransformer),
}

impl FastModel {
    /// Builds the model of `hp` over `v` ids from `w`, checking every name and shape.
    pub fn from_weights(hp: &HyperParams, v: usize, w: &Weights) -> Result<Self, NnError> {
        let vin = v + 1;
        Ok(match hp.kind {
            ModelKind::Lstm => {
                let (e, h) = (hp.embed, hp.hidden);
                let cols = e + hp.context.width();
                let embed = take(w, "embed.weight", &[vin, e])?;
                let w_full = take(w, "lstm.weight_ih_l0", &[4 * h, cols])?;
                let ctx = CtxProj::new(&hp.context, &w_full, cols, e, 4 * h, w)?;
                // The columns that read the token (and pair) embedding.
                let w_ih: Vec<f32> = (0..4 * h)
                    .flat_map(|r| w_full[r * cols..][..e].iter().copied())
                    .collect();
                let b_ih = take(w, "lstm.bias_ih_l0", &[4 * h])?;
                let b_hh = take(w, "lstm.bias_hh_l0", &[4 * h])?;
                let bias: Vec<f32> = b_ih.iter().zip(&b_hh).map(|(a, b)| a + b).collect();
                let mut proj = vec![0f32; vin * 4 * h];
                for t in 0..vin {
                    matvec(
                        &w_ih,
                        Some(&bias),
                        &embed[t * e..(t + 1) * e],
                        &mut proj[t * 4 * h..(t + 1) * 4 * h],
                    );
                }
                let pair_proj = if hp.pairs {
                    let p = pair_buckets(vin);
                    let pe = take(w, "pair.weight", &[p, e])?;
                    let mut out = vec![0f32; p * 4 * h];
                    for i in 0..p {
                        matvec(
                            &w_ih,
                            None,
                            &pe[i * e..(i + 1) * e],
                            &mut out[i * 4 * h..(i + 1) * 4 * h],
                        );
                    }
                    out
                } else {
                    Vec::new()
                };
                FastModel::Lstm(FastLstm {
                    h,
                    proj,
                    pair_proj,
                    ctx,
                    cross: Cross::new(&hp.context, vin, e, w)?.projected(&w_ih, 4 * h),
                    vin,
                    w_hh: take(w, "lstm.weight_hh_l0", &[4 * h, h])?,
                    head_w: take(w, "head.weight", &[v, h])?,
                    head_b: take(w, "head.bias", &[v])?,
                })
            }
            ModelKind::Transformer => {
                let (d, f) = (hp.embed, hp.hidden);
                let pair = |p: &str,
                            rows: usize,
                            cols: Option<usize>|
                 -> Result<(Vec<f32>, Vec<f32>), NnError> {
                    match cols {
                        Some(c) => Ok((
                            take(w, &format!("{p}.weight"), &[rows, c])?,
                            take(w, &format!("{p}.bias"), &[rows])?,
                        )),
                        None => Ok((
                            take(w, &format!("{p}.gain"), &[rows])?,
                            take(w, &format!("{p}.bias"), &[rows])?,
                        )),
                    }
                };
                let blocks = (0..hp.layers)
                    .map(|i| {
                        let p = format!("blocks.{i}");
                        Ok(FastBlock {
                            ln1: pair(&format!("{p}.ln1"), d, None)?,
                            qkv: pair(&format!("{p}.qkv"), 3 * d, Some(d))?,
                            proj: pair(&format!("{p}.proj"), d, Some(d))?,
                            ln2: pair(&format!("{p}.ln2"), d, None)?,
                            fc1: pair(&format!("{p}.fc1"), f, Some(d))?,
                            fc2: pair(&format!("{p}.fc2"), d, Some(f))?,
                        })
                    })
                    .collect::<Result<_, NnError>>()?;
                let (head_w, head_b) = pair("head", v, Some(d))?;
                let ctx = if hp.context.is_empty() {
                    CtxProj::default()
                } else {
                    let c = hp.context.width();
                    let (m, bias) = pair("ctx_in", d, Some(c))?;
                    CtxProj {
                        bias,
                        ..CtxProj::new(&hp.context, &m, c, 0, d, w)?
                    }
                };
                FastModel::Transformer(FastTransformer {
                    ctx,
                    cross: Cross::new(&hp.context, vin, d, w)?,
                    d,
                    heads: hp.heads,
                    vin,
                    tok: take(w, "tok.weight", &[vin, d])?,
                    pair: if hp.pairs {
                        take(w, "pair.weight", &[pair_buckets(vin), d])?
                    } else {
                        Vec::new()
                    },
                    pos: take(w, "pos.weight", &[hp.max_len, d])?,
                    blocks,
                    ln_f: pair("ln_f", d, None)?,
                    head_w,
                    head_b,
                })
            }
        })
    }

    /// Next-request logits after `tokens` (non-empty, start token first; every token `< V + 1`; for the
    /// Transformer at most `max_len` tokens) with each token's context `features` (unknown
    /// where shorter).
    pub(crate) fn logits(&self, tokens: &[u32], features: &[Features]) -> Vec<f32> {
        match self {
            FastModel::Lstm(m) => m.logits(tokens, features),
            FastModel::Transformer(m) => m.logits(tokens, features),
        }
    }
}

impl FastLstm {
    /// Runs `tokens[from..]` (with their context `features`) through the cell from the state
    /// `(h, c)` (each `hidden` values); `tokens[0]` is the start token.
    pub(crate) fn advance(
        &self,
        hs: &mut [f32],
        c: &mut [f32],
        tokens: &[u32],
        features: &[Features],
        from: usize,
    ) {
        let h = self.h;
        let bos = (self.vin - 1) as u32;
        let mut g = vec![0f32; 4 * h];
        for i in from..tokens.len() {
            let t = tokens[i];
            matvec(&self.w_hh, None, hs, &mut g);
            let p = &self.proj[t as usize * 4 * h..(t as usize + 1) * 4 * h];
            for (x, y) in g.iter_mut().zip(p) {
                *x += y;
            }
            if !self.pair_proj.is_empty() {
                let prev = if i == 0 { bos } else { tokens[i - 1] };
                let q = pair_id(prev, t, self.vin) as usize;
                for (x, y) in g
                    .iter_mut()
                    .zip(&self.pair_proj[q * 4 * h..(q + 1) * 4 * h])
                {
                    *x += y;
                }
            }
            let f = features.get(i).copied().unwrap_or_default();
            self.ctx.add(&f, &mut g);
            self.cross.add(t, &f, &mut g);
            for j in 0..h {
                let i_g = sigmoid(g[j]);
                let f_g = sigmoid(g[h + j]);
                let c_g = g[2 * h + j].tanh();
                let o_g = sigmoid(g[3 * h + j]);
                c[j] = f_g * c[j] + i_g * c_g;
                hs[j] = o_g * c[j].tanh();
            }
        }
    }

    /// The logits of the state `h`.
    pub(crate) fn head(&self, hs: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; self.head_b.len()];
        matvec(&self.head_w, Some(&self.head_b), hs, &mut out);
        out
    }

    /// Hidden width.
    pub(crate) fn hidden(&self) -> usize {
        self.h
    }

    fn logits(&self, tokens: &[u32], features: &[Features]) -> Vec<f32> {
        let (mut hs, mut c) = (vec![0f32; self.h], vec![0f32; self.h]);
        self.advance(&mut hs, &mut c, tokens, features, 0);
        self.head(&hs)
    }
}

impl FastTransformer {
    fn logits(&self, tokens: &[u32], features: &[Features]) -> Vec<f32> {
        let (d, t_len) = (self.d, tokens.len());
        let dh = d / self.heads;
        let scale = 1.0 / (dh as f32).sqrt();
        let mut x: Vec<f32> = Vec::with_capacity(t_len * d);
        let bos = (self.vin - 1) as u32;
        for (i, &t) in tokens.iter().enumerate() {
            let (tok, pos) = (&self.tok[t as usize * d..][..d], &self.pos[i * d..][..d]);
            x.extend(tok.iter().zip(pos).map(|(a, b)| a + b));
            if !self.pair.is_empty() {
                let prev = if i == 0 { bos } else { tokens[i - 1] };
                let q = pair_id(prev, t, self.vin) as usize;
                let xi = &mut x[i * d..];
                for (a, b) in xi.iter_mut().zip(&self.pair[q * d..][..d]) {
                    *a += b;
                }
            }
            let f = features.get(i).copied().unwrap_or_default();
            self.ctx.add(&f, &mut x[i * d..][..d]);
            self.cross.add(t, &f, &mut x[i * d..][..d]);
        }
        let mut a = vec![0f32; d];
        let mut qkv = vec![0f32; t_len * 3 * d];
        let mut att = vec![0f32; d];
        let mut o = vec![0f32; d];
        let mut scores = vec![0f32; t_len];
        for (li, b) in self.blocks.iter().enumerate() {
            // The last layer only needs the last position's output.
            let first = if li + 1 == self.blocks.len() {
                t_len - 1
            } else {
                0
            };
            for i in 0..t_len {
                layer_norm(&x[i * d..][..d], &b.ln1.0, &b.ln1.1, &mut a);
                matvec(&b.qkv.0, Some(&b.qkv.1), &a, &mut qkv[i * 3 * d..][..3 * d]);
            }
            let mut ffn_h = vec![0f32; b.fc1.1.len()];
            for i in first..t_len {
                for hd in 0..self.heads {
                    let q = &qkv[i * 3 * d + hd * dh..][..dh];
                    let mut max = f32::NEG_INFINITY;
                    for (j, s) in scores.iter_mut().enumerate().take(i + 1) {
                        *s = dot(q, &qkv[j * 3 * d + d + hd * dh..][..dh]) * scale;
                        max = max.max(*s);
                    }
                    let mut sum = 0.0;
                    for s in scores.iter_mut().take(i + 1) {
                        *s = (*s - max).exp();
                        sum += *s;
                    }
                    let out = &mut att[hd * dh..][..dh];
                    out.fill(0.0);
                    for (j, s) in scores.iter().enumerate().take(i + 1) {
                        let v = &qkv[j * 3 * d + 2 * d + hd * dh..][..dh];
                        for k in 0..dh {
                            out[k] += s / sum * v[k];
                        }
                    }
                }
                matvec(&b.proj.0, Some(&b.proj.1), &att, &mut o);
                let xi = &mut x[i * d..][..d];
                for k in 0..d {
                    xi[k] += o[k];
                }
                layer_norm(xi, &b.ln2.0, &b.ln2.1, &mut a);
                matvec(&b.fc1.0, Some(&b.fc1.1), &a, &mut ffn_h);
                ffn_h.iter_mut().for_each(|v| *v = v.max(0.0));
                matvec(&b.fc2.0, Some(&b.fc2.1), &ffn_h, &mut o);
                for k in 0..d {
                    xi[k] += o[k];
                }
            }
        }
        layer_norm(
            &x[(t_len - 1) * d..][..d],
            &self.ln_f.0,
            &self.ln_f.1,
            &mut a,
        );
        let mut out = vec![0f32; self.head_b.len()];
        matvec(&self.head_w, Some(&self.head_b), &a, &mut out);
        out
    }
}
