//! The layers encoders are built from: bias-free conv, BatchNorm with running statistics, linear,
//! weight-normalised linear.
//! Each registers its tensors in a `ParamStore` under torchvision's names as it is built.

use crate::init::Init;
use crate::params::{ParamKind, ParamStore};
use gyre_kernels::ops::{batch_norm_eval, batch_norm_train};
use gyre_kernels::{DType, Result, Tensor, Var};

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// 2-D convolution without bias (every conv in a ResNet is followed by BatchNorm).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Var,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &mut ParamStore,
        init: &Init,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let name = join(prefix, "weight");
        let w = init.kaiming_normal_fan_out(&name, &[c_out, c_in, kernel, kernel])?;
        let weight = store.add(name, w, ParamKind::Weight)?;
        Ok(Self {
            weight,
            stride,
            padding,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        gyre_kernels::ops::conv2d(x, self.weight.as_tensor(), self.stride, self.padding)
    }
}

/// BatchNorm over `[N, C]` or `[N, C, H, W]` (PyTorch's BatchNorm1d/2d): batch statistics and a
/// running-statistics update (momentum 0.1, unbiased variance) in train mode, running statistics
/// in eval mode.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Option<Var>,
    bias: Option<Var>,
    running_mean: Var,
    running_var: Var,
    num_batches_tracked: Var,
    momentum: f64,
    eps: f64,
    splits: usize,
}

impl BatchNorm {
    pub fn new(
        store: &mut ParamStore,
        init: &Init,
        prefix: &str,
        channels: usize,
        affine: bool,
    ) -> Result<Self> {
        let (weight, bias) = if affine {
            let w = store.add(
                join(prefix, "weight"),
                init.constant(&[channels], 1.0)?,
                ParamKind::NormWeight,
            )?;
            let b = store.add(
                join(prefix, "bias"),
                init.constant(&[channels], 0.0)?,
                ParamKind::NormBias,
            )?;
            (Some(w), Some(b))
        } else {
            (None, None)
        };
        let running_mean = store.add(
            join(prefix, "running_mean"),
            init.constant(&[channels], 0.0)?,
            ParamKind::Buffer,
        )?;
        let running_var = store.add(
            join(prefix, "running_var"),
            init.constant(&[channels], 1.0)?,
            ParamKind::Buffer,
        )?;
        let nbt = Tensor::zeros((), DType::I64, init.device())?;
        let num_batches_tracked =
            store.add(join(prefix, "num_batches_tracked"), nbt, ParamKind::Buffer)?;
        Ok(Self {
            weight,
            bias,
            running_mean,
            running_var,
            num_batches_tracked,
            momentum: 0.1,
            eps: 1e-5,
            splits: 1,
        })
    }

    /// SplitBatchNorm (MoCo's CIFAR demo): in training, the batch is normalised as `splits`
    /// interleaved sub-batches (samples `n ≡ s mod splits`), each with its own statistics; the
    /// running statistics take the mean over the sub-batches. The batch size must divide.
    pub fn set_splits(&mut self, splits: usize) {
        self.splits = splits.max(1);
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let w = self.weight.as_ref().map(|v| v.as_tensor());
        let b = self.bias.as_ref().map(|v| v.as_tensor());
        if !train {
            return batch_norm_eval(
                x,
                self.running_mean.as_tensor(),
                self.running_var.as_tensor(),
                w,
                b,
                self.eps,
            );
        }
        let s = self.splits;
        let (y, mut stats) = if s > 1 {
            // [N, C, …] → [N/S, S·C, …] is free for a contiguous tensor and puts sample
            // r·S + s in channels s·C..(s+1)·C: one fused BatchNorm with S·C channels is S
            // independent ones (the PyTorch demo's `view(-1, C·S, H, W)`).
            let dims = x.dims().to_vec();
            if dims.len() < 2 || !dims[0].is_multiple_of(s) {
                gyre_kernels::candle::bail!(
                    "SplitBatchNorm: batch {} does not divide into {s} splits",
                    dims.first().copied().unwrap_or(0)
                );
            }
            let c = dims[1];
            let mut folded = dims.clone();
            folded[0] /= s;
            folded[1] *= s;
            let xs = x.contiguous()?.reshape(folded)?;
            let ws = w.map(|w| w.repeat(s)).transpose()?;
            let bs = b.map(|b| b.repeat(s)).transpose()?;
            let (y, st) = batch_norm_train(&xs, ws.as_ref(), bs.as_ref(), self.eps)?;
            let mut st = st;
            st.mean = st.mean.reshape((s, c))?.mean(0)?;
            st.var = st.var.reshape((s, c))?.mean(0)?;
            (y.reshape(dims)?, st)
        } else {
            batch_norm_train(x, w, b, self.eps)?
        };
        stats.mean = stats.mean.detach();
        stats.var = stats.var.detach();
        let m = self.momentum;
        let unbias = if stats.count > 1 {
            stats.count as f64 / (stats.count as f64 - 1.0)
        } else {
            1.0
        };
        let rm = ((self.running_mean.as_tensor() * (1.0 - m))? + (stats.mean * m)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - m))? + (stats.var * (m * unbias))?)?;
        self.running_mean.set(&rm.detach())?;
        self.running_var.set(&rv.detach())?;
        let n = self.num_batches_tracked.as_tensor().affine(1.0, 1.0)?;
        self.num_batches_tracked.set(&n)?;
        Ok(y)
    }
}

/// Fully connected layer `y = x Wᵀ + b` (`W` is `[out, in]`, as PyTorch).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Var,
    bias: Option<Var>,
}

impl Linear {
    pub fn new(
        store: &mut ParamStore,
        init: &Init,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Self> {
        let wn = join(prefix, "weight");
        let w = init.linear_uniform(&wn, &[d_out, d_in], d_in)?;
        let weight = store.add(wn, w, ParamKind::Weight)?;
        let bias = if bias {
            let bn = join(prefix, "bias");
            let b = init.linear_uniform(&bn, &[d_out], d_in)?;
            Some(store.add(bn, b, ParamKind::Bias)?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight.as_tensor().t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b.as_tensor()),
            None => Ok(y),
        }
    }
}

/// A weight-normalised linear layer without bias, `y = x (g · v / ‖v‖)ᵀ` with one norm per output
/// row (PyTorch's `nn.utils.weight_norm(nn.Linear(d_in, d_out, bias=False))`, tensors
/// `weight_v` `[out, in]` and `weight_g` `[out, 1]`): SwAV's prototypes and DINO's last layer.
/// With `g` fixed (the references fill it with 1 and turn its gradient off: every row of the
/// effective weight is a unit vector) `weight_g` is stored as a buffer, so that checkpoints keep
/// the reference's names.
#[derive(Debug, Clone)]
pub struct WeightNormLinear {
    v: Var,
    g: Var,
    g_trains: bool,
}

impl WeightNormLinear {
    /// `v` starts as PyTorch's default linear init, `g` as 1; `train_g` makes `g` a parameter.
    pub fn new(
        store: &mut ParamStore,
        init: &Init,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        train_g: bool,
    ) -> Result<Self> {
        let vn = join(prefix, "weight_v");
        let v0 = init.linear_uniform(&vn, &[d_out, d_in], d_in)?;
        let gn = join(prefix, "weight_g");
        let g0 = init.constant(&[d_out, 1], 1.0)?;
        let kind = if train_g {
            ParamKind::NormWeight
        } else {
            ParamKind::Buffer
        };
        let g = store.add(gn, g0, kind)?;
        let v = store.add(vn, v0, ParamKind::Weight)?;
        Ok(Self {
            v,
            g,
            g_trains: train_g,
        })
    }

    /// The effective weight `g · v / ‖v‖` (`[out, in]`), differentiable in `v` (and `g` when it
    /// trains).
    pub fn weight(&self) -> Result<Tensor> {
        let v = self.v.as_tensor();
        let norm = v.sqr()?.sum_keepdim(1)?.sqrt()?;
        let g = if self.g_trains {
            self.g.as_tensor().clone()
        } else {
            self.g.as_tensor().detach()
        };
        v.broadcast_mul(&g.broadcast_div(&norm)?)
    }

    /// `x Wᵀ` with [`Self::weight`]; `frozen` detaches the weight (no gradient reaches `v` or
    /// `g`: the references' "cancel the gradients" of the first epoch(s)).
    pub fn forward(&self, x: &Tensor, frozen: bool) -> Result<Tensor> {
        let w = self.weight()?;
        let w = if frozen { w.detach() } else { w };
        x.matmul(&w.t()?)
    }

    /// Output rows.
    pub fn out_dim(&self) -> usize {
        self.v.dim(0).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyre_kernels::Device;

    #[test]
    fn batchnorm_updates_running_stats_like_pytorch() -> Result<()> {
        let mut store = ParamStore::new();
        let init = Init::new(0, &Device::Cpu);
        let bn = BatchNorm::new(&mut store, &init, "bn", 1, true)?;
        // Values 1, 2, 3, 4: mean 2.5, biased var 1.25, unbiased 5/3.
        let x = Tensor::from_vec(vec![1f32, 2.0, 3.0, 4.0], (4, 1), &Device::Cpu)?;
        bn.forward_t(&x, true)?;
        let rm = store.get("bn.running_mean").unwrap().var.to_vec1::<f32>()?[0];
        let rv = store.get("bn.running_var").unwrap().var.to_vec1::<f32>()?[0];
        assert!((rm - 0.25).abs() < 1e-6, "{rm}");
        assert!((rv - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-6, "{rv}");
        let n = store
            .get("bn.num_batches_tracked")
            .unwrap()
            .var
            .to_scalar::<i64>()?;
        assert_eq!(n, 1);
        Ok(())
    }

    #[test]
    fn split_batchnorm_normalises_interleaved_sub_batches() -> Result<()> {
        // N = 4, C = 2, 1×3 maps, 2 splits: samples {0, 2} and {1, 3} each normalised alone.
        let mut store = ParamStore::new();
        let init = Init::new(0, &Device::Cpu);
        let mut bn = BatchNorm::new(&mut store, &init, "bn", 2, true)?;
        bn.set_splits(2);
        let w = store.get("bn.weight").unwrap().var.clone();
        w.set(&Tensor::new(&[2f32, 0.5], &Device::Cpu)?)?;
        let v: Vec<f32> = (0..24).map(|i| ((i * 7) % 11) as f32 - 3.0).collect();
        let x = Tensor::from_vec(v, (4, 2, 1, 3), &Device::Cpu)?;
        let y = bn.forward_t(&x, true)?;
        let mut plain_store = ParamStore::new();
        let plain = BatchNorm::new(&mut plain_store, &init, "bn", 2, true)?;
        plain_store
            .get("bn.weight")
            .unwrap()
            .var
            .set(w.as_tensor())?;
        let mut means = Vec::new();
        for s in 0..2u32 {
            let idx = Tensor::new(&[s, s + 2], &Device::Cpu)?;
            let xs = x.index_select(&idx, 0)?;
            let want = plain
                .forward_t(&xs, true)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let got = y.index_select(&idx, 0)?.flatten_all()?.to_vec1::<f32>()?;
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "split {s}: {got:?} vs {want:?}");
            }
            means.push(
                xs.transpose(0, 1)?
                    .flatten_from(1)?
                    .mean(1)?
                    .to_vec1::<f32>()?,
            );
        }
        // Running mean: 0.1 × the mean over splits of the split means.
        let rm = store.get("bn.running_mean").unwrap().var.to_vec1::<f32>()?;
        for c in 0..2 {
            let want = 0.1 * (means[0][c] + means[1][c]) / 2.0;
            assert!((rm[c] - want).abs() < 1e-6, "{rm:?}");
        }
        // A batch that does not divide is an error, not a panic.
        assert!(bn.forward_t(&x.narrow(0, 0, 3)?, true).is_err());
        Ok(())
    }

    #[test]
    fn weight_norm_rows_are_unit_vectors_and_its_gradient_is_projected() -> Result<()> {
        let mut store = ParamStore::new();
        let init = Init::new(3, &Device::Cpu);
        let l = WeightNormLinear::new(&mut store, &init, "last_layer", 4, 5, false)?;
        let names: Vec<&str> = store.all().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["last_layer.weight_g", "last_layer.weight_v"]);
        assert_eq!(store.all()[0].kind, ParamKind::Buffer);
        let w = l.weight()?;
        for n in w.sqr()?.sum(1)?.to_vec1::<f32>()? {
            assert!((n - 1.0).abs() < 1e-6, "{n}");
        }
        // The gradient of a loss through v/‖v‖ is orthogonal to v, row by row.
        let x = Tensor::new(
            &[[0.3f32, -1.0, 0.5, 2.0], [1.0, 0.2, -0.4, 0.1]],
            &Device::Cpu,
        )?;
        let c = Tensor::new(
            &[[1f32, -2.0, 0.5, 0.0, 3.0], [0.2, 0.1, -1.0, 2.0, 0.5]],
            &Device::Cpu,
        )?;
        let loss = (l.forward(&x, false)? * &c)?.sum_all()?;
        let grads = loss.backward()?;
        let g = grads
            .get(store.all()[1].var.as_tensor())
            .expect("v has a gradient");
        let dot = (g * store.all()[1].var.as_tensor())?
            .sum(1)?
            .to_vec1::<f32>()?;
        for d in dot {
            assert!(d.abs() < 1e-5, "{d}");
        }
        assert!(grads.get(store.all()[0].var.as_tensor()).is_none());
        // Frozen: nothing reaches v.
        let loss = (l.forward(&x, true)? * &c)?.sum_all()?;
        assert!(loss
            .backward()?
            .get(store.all()[1].var.as_tensor())
            .is_none());
        Ok(())
    }
}
