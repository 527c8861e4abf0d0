//! The last BERT layers of a text model as trainable variables (`[text] train_layers = k`): the
//! frozen trunk (candle-transformers' first `L − k` layers) feeds gyre's own `k` layers, built only
//! from ops with a backward (composed LayerNorm and softmax: candle-nn's fused LayerNorm and
//! `softmax_last_dim` have none, so training them through candle-transformers would give zero
//! gradients silently). Same names and maths as Hugging Face's `BertLayer` (post-norm, exact GELU).

use gyre_encoders::{ParamKind, ParamStore};
use gyre_kernels::candle::{DType, Tensor, Var, D};
use gyre_kernels::nn::ops::{layer_norm_slow, softmax};
use gyre_kernels::Result;
use std::collections::HashMap;

struct Linear {
    w: Var,
    b: Var,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.broadcast_matmul(&self.w.as_tensor().t()?)?
            .broadcast_add(self.b.as_tensor())
    }
}

struct Norm {
    w: Var,
    b: Var,
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    inter: Linear,
    out: Linear,
    out_norm: Norm,
}

/// BERT layers `first..first + count` with their weights as [`Var`]s.
pub struct BertTail {
    layers: Vec<Layer>,
    heads: usize,
    eps: f32,
    params: ParamStore,
}

impl BertTail {
    /// Copies the layers' tensors (`encoder.layer.{i}.…`, optionally under `bert.`) out of a
    /// model's weights.
    pub fn from_weights(
        tensors: &HashMap<String, Tensor>,
        first: usize,
        count: usize,
        heads: usize,
        eps: f64,
    ) -> std::result::Result<BertTail, String> {
        let mut params = ParamStore::new();
        let mut get = |name: String| -> std::result::Result<Var, String> {
            let t = tensors
                .get(&name)
                .or_else(|| tensors.get(&format!("bert.{name}")))
                .ok_or_else(|| format!("no tensor {name}"))?;
            let kind = match (name.contains("LayerNorm"), name.ends_with(".bias")) {
                (true, false) => ParamKind::NormWeight,
                (true, true) => ParamKind::NormBias,
                (false, true) => ParamKind::Bias,
                (false, false) => ParamKind::Weight,
            };
            // A copy: training the tail never changes the frozen model's tensors.
            let value = t
                .to_dtype(DType::F32)
                .and_then(|t| t.copy())
                .map_err(|e| e.to_string())?;
            params.add(name, value, kind).map_err(|e| e.to_string())
        };
        let mut layers = Vec::new();
        for i in first..first + count {
            let p = format!("encoder.layer.{i}");
            let mut lin = |n: &str| -> std::result::Result<Linear, String> {
                Ok(Linear {
                    w: get(format!("{p}.{n}.weight"))?,
                    b: get(format!("{p}.{n}.bias"))?,
                })
            };
            let (q, k, v) = (
                lin("attention.self.query")?,
                lin("attention.self.key")?,
                lin("attention.self.value")?,
            );
            let attn_out = lin("attention.output.dense")?;
            let an = lin("attention.output.LayerNorm")?;
            let inter = lin("intermediate.dense")?;
            let out = lin("output.dense")?;
            let on = lin("output.LayerNorm")?;
            layers.push(Layer {
                q,
                k,
                v,
                attn_out,
                attn_norm: Norm { w: an.w, b: an.b },
                inter,
                out,
                out_norm: Norm { w: on.w, b: on.b },
            });
        }
        Ok(BertTail {
            layers,
            heads,
            eps: eps as f32,
            params,
        })
    }

    /// The trainable tensors, by their model names (`encoder.layer.5.output.dense.weight`, …).
    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// The layers on hidden states `h` `[n, T, H]` with the attention mask `[n, T]` (1 = token).
    pub fn forward(&self, h: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (n, t, hidden) = h.dims3()?;
        let dh = hidden / self.heads;
        // (1 − m) · f32::MIN, as the trunk's own mask.
        let m = mask.to_dtype(DType::F32)?.reshape((n, 1, 1, t))?;
        let additive = ((m.ones_like()? - m)? * f32::MIN as f64)?;
        let norm =
            |x: &Tensor, p: &Norm| layer_norm_slow(x, p.w.as_tensor(), p.b.as_tensor(), self.eps);
        let mut x = h.clone();
        for l in &self.layers {
            let split = |y: Tensor| {
                y.reshape((n, t, self.heads, dh))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = split(l.q.forward(&x)?)?;
            let k = split(l.k.forward(&x)?)?;
            let v = split(l.v.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?)? / (dh as f64).sqrt())?.broadcast_add(&additive)?;
            let p = softmax(&scores, D::Minus1)?;
            let ctx = p
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((n, t, hidden))?;
            let a = norm(&(l.attn_out.forward(&ctx)? + &x)?, &l.attn_norm)?;
            let f = l.out.forward(&l.inter.forward(&a)?.gelu_erf()?)?;
            x = norm(&(f + &a)?, &l.out_norm)?;
        }
        Ok(x)
    }
}
