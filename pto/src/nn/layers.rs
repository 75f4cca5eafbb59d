//! Building blocks written from differentiable candle ops.
//!
//! candle-nn 0.11's fused `softmax_last_dim`, `LayerNorm` fast path, `rms_norm` and `sdpa`
//! have no backward pass: gradients silently stop there. Layer norm and the attention softmax
//! are therefore written out here from basic ops, and a unit test checks that every parameter
//! of every model receives a gradient.

use candle_core::{DType, Device, Result, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Layer normalisation over the last dimension, with learned gain and bias.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    gain: Tensor,
    bias: Tensor,
}

/// The epsilon of [`LayerNorm`] (the fast inference path uses the same).
pub const LN_EPS: f64 = 1e-5;

impl LayerNorm {
    /// A layer norm of width `dim` (`gain` and `bias` under `vb`).
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            gain: vb.get_with_hints(dim, "gain", candle_nn::Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.0))?,
        })
    }

    /// Normalises `x` over its last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + LN_EPS)?.sqrt()?)?;
        normed.broadcast_mul(&self.gain)?.broadcast_add(&self.bias)
    }
}

/// Softmax over the last dimension from basic ops (the shift by the detached maximum does not
/// change the result, only keeps `exp` in range).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// A `(t, t)` additive causal mask: 0 on and below the diagonal, -1e9 above.
pub fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let m: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { -1e9 } else { 0.0 }))
        .collect();
    Tensor::from_vec(m, (t, t), device)
}

/// Re-initialises every variable of `varmap` from `seed`, so that training is reproducible
/// (candle's CPU random generator cannot be seeded). Variables are visited in name order.
/// Rules by name: biases 0 (an LSTM's forget-gate input bias 1), layer-norm gains 1,
/// embeddings uniform in ±0.1·√3, other matrices uniform in ±1/√fan_in.
pub fn seeded_init(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for name in names {
        let var: &Var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if name.ends_with("gain") {
            vec![1.0; n]
        } else if name.contains("bias") {
            let mut b = vec![0.0; n];
            if name.ends_with("bias_ih_l0") {
                let h = n / 4;
                b[h..2 * h].fill(1.0);
            }
            b
        } else {
            let bound = if ["embed", "tok", "pos", "pair"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                0.1 * 3f32.sqrt()
            } else {
                let fan_in = dims.last().copied().unwrap_or(1).max(1);
                1.0 / (fan_in as f32).sqrt()
            };
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?.to_dtype(DType::F32)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_and_softmax_match_their_definitions_and_pass_gradients() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let ln = LayerNorm::new(4, vb.pp("ln")).unwrap();
        let x = Var::from_vec(vec![1f32, 2., 3., 4., -1., 0., 1., 10.], (2, 4), &dev).unwrap();
        let y = ln.forward(x.as_tensor()).unwrap();
        for row in y.to_vec2::<f32>().unwrap() {
            let mean: f32 = row.iter().sum::<f32>() / 4.0;
            let var: f32 = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 4.0;
            assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3, "{row:?}");
        }
        let p = softmax_last(&y).unwrap();
        for row in p.to_vec2::<f32>().unwrap() {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        let target = Tensor::new(&[[1f32, 0., 0., 0.], [0., 0., 0., 1.]], &dev).unwrap();
        let loss = (p - target).unwrap().sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        for v in vm.all_vars().iter().chain([&x]) {
            let g = grads.get(v).expect("a gradient");
            assert!(
                g.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    > 0.0
            );
        }
    }

    #[test]
    fn seeded_init_is_reproducible() {
        let dev = Device::Cpu;
        let make = |seed| {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
            candle_nn::linear(3, 5, vb.pp("head")).unwrap();
            seeded_init(&vm, seed).unwrap();
            let w = vm.data().lock().unwrap()["head.weight"]
                .as_tensor()
                .to_vec2::<f32>()
                .unwrap();
            w
        };
        assert_eq!(make(1), make(1));
        assert_ne!(make(1), make(2));
        assert!(make(1)
            .iter()
            .flatten()
            .all(|v| v.abs() <= 1.0 / 3f32.sqrt()));
    }

    #[test]
    fn the_mask_is_causal() {
        let m = causal_mask(3, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(m[0], [0.0, -1e9, -1e9]);
        assert_eq!(m[2], [0.0, 0.0, 0.0]);
    }
}
