//! Batch normalisation over every dimension but the channel one (dim 1): `[N, C]` or `[N, C, H, W]`.
//!
//! Train mode normalises with the batch statistics and also returns them (detached) so that the
//! caller can update its running statistics; eval mode uses the running statistics.
//!
//! On the CPU (f32) train mode is one fused `CustomOp3`: one pass per channel for the statistics
//! (no transposes), one for the output, and the closed-form backward
//! `dx = γ·σ⁻¹·(dy − mean(dy) − x̂·mean(dy·x̂))` in two passes. Elsewhere it is the plain candle
//! composition [`batch_norm_train_reference`], which the fused op must equal.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Batch statistics of one train-mode call, detached from the graph.
#[derive(Debug, Clone)]
pub struct BatchStats {
    /// Per-channel mean, shape `[C]`.
    pub mean: Tensor,
    /// Per-channel biased variance (divided by the count), shape `[C]`.
    pub var: Tensor,
    /// Number of values each channel's statistics were taken over.
    pub count: usize,
}

fn reduce_dims(rank: usize) -> Result<Vec<usize>> {
    match rank {
        2 => Ok(vec![0]),
        3 => Ok(vec![0, 2]),
        4 => Ok(vec![0, 2, 3]),
        r => candle_core::bail!("batch_norm expects a rank 2, 3 or 4 input, got rank {r}"),
    }
}

/// Shape `[1, C, 1, …]` for broadcasting a per-channel vector against `x`.
fn channel_shape(x: &Tensor) -> Vec<usize> {
    let mut s = vec![1; x.rank()];
    s[1] = x.dim(1).unwrap_or(1);
    s
}

/// Train-mode batch norm: `y = (x − mean) / sqrt(var + eps) · weight + bias` with batch statistics.
/// `weight` and `bias` are `[C]` or `None` (no affine transform).
pub fn batch_norm_train(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, BatchStats)> {
    if !super::fused(x) {
        return batch_norm_train_reference(x, weight, bias, eps);
    }
    reduce_dims(x.rank())?;
    let c = x.dim(1)?;
    let dev = x.device();
    let w = match weight {
        Some(w) => w.clone(),
        None => Tensor::ones(c, DType::F32, dev)?,
    };
    let b = match bias {
        Some(b) => b.clone(),
        None => Tensor::zeros(c, DType::F32, dev)?,
    };
    let stash = Arc::new(Mutex::new(None));
    let y = x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &b.contiguous()?,
        BnTrainOp {
            eps,
            stash: stash.clone(),
        },
    )?;
    let st = stash.lock().expect("stash").clone().expect("forward ran");
    let count = x.elem_count() / c.max(1);
    let stats = BatchStats {
        mean: Tensor::from_vec(st.mean, c, dev)?,
        var: Tensor::from_vec(st.var, c, dev)?,
        count,
    };
    Ok((y, stats))
}

/// Per-channel statistics kept from the forward for the backward.
#[derive(Debug, Clone)]
struct Saved {
    mean: Vec<f32>,
    var: Vec<f32>,
    inv_std: Vec<f32>,
}

/// `(n, c, s)`: batch, channels, values per channel per sample.
fn ncs(dims: &[usize]) -> (usize, usize, usize) {
    (dims[0], dims[1], dims[2..].iter().product())
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    super::cpu_f32(s, l, "batch_norm", "input")
}

/// A sum in f64 over eight independent accumulators, combined in a fixed order: no single
/// dependency chain (the loop vectorises), and the same result at any thread count because each
/// channel is summed by one thread in one order.
#[derive(Default)]
struct Sum8 {
    lanes: [f64; 8],
    tail: f64,
}

impl Sum8 {
    /// Adds `f(x)` for every `x` in `xs`.
    #[inline]
    fn add(&mut self, xs: &[f32], f: impl Fn(f32) -> f64) {
        let chunks = xs.chunks_exact(8);
        let rem = chunks.remainder();
        for c in chunks {
            for (lane, &v) in self.lanes.iter_mut().zip(c) {
                *lane += f(v);
            }
        }
        for &v in rem {
            self.tail += f(v);
        }
    }

    fn total(&self) -> f64 {
        let l = &self.lanes;
        (((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))) + self.tail
    }
}

/// Two sums over paired slices, as [`Sum8`].
#[derive(Default)]
struct Sum8x2 {
    a: Sum8,
    b: Sum8,
}

impl Sum8x2 {
    #[inline]
    fn add(&mut self, xs: &[f32], ys: &[f32], f: impl Fn(f32, f32) -> (f64, f64)) {
        let (cx, cy) = (xs.chunks_exact(8), ys.chunks_exact(8));
        let (rx, ry) = (cx.remainder(), cy.remainder());
        for (x, y) in cx.zip(cy) {
            for k in 0..8 {
                let (p, q) = f(x[k], y[k]);
                self.a.lanes[k] += p;
                self.b.lanes[k] += q;
            }
        }
        for (&x, &y) in rx.iter().zip(ry) {
            let (p, q) = f(x, y);
            self.a.tail += p;
            self.b.tail += q;
        }
    }
}

/// Mean and biased variance of each channel (two passes in f64, [`Sum8`]; each channel summed
/// by one thread, so the result does not depend on the thread count).
fn channel_stats(x: &[f32], (n, c, s): (usize, usize, usize), eps: f64) -> Saved {
    let m = (n * s) as f64;
    let per: Vec<(f32, f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut sum = Sum8::default();
            for i in 0..n {
                sum.add(&x[(i * c + ch) * s..(i * c + ch + 1) * s], |v| v as f64);
            }
            let mean = sum.total() / m;
            let mut sq = Sum8::default();
            for i in 0..n {
                sq.add(&x[(i * c + ch) * s..(i * c + ch + 1) * s], |v| {
                    (v as f64 - mean).powi(2)
                });
            }
            let var = sq.total() / m;
            (mean as f32, var as f32, (1.0 / (var + eps).sqrt()) as f32)
        })
        .collect();
    Saved {
        mean: per.iter().map(|p| p.0).collect(),
        var: per.iter().map(|p| p.1).collect(),
        inv_std: per.iter().map(|p| p.2).collect(),
    }
}

/// `y[n, c, ·] = x[n, c, ·] · scale[c] + shift[c]` over `(channels, values per channel)`, one
/// parallel pass over the samples.
fn scale_shift(x: &[f32], (c, s): (usize, usize), scale: &[f32], shift: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(c * s)
        .zip(x.par_chunks(c * s))
        .for_each(|(y, x)| {
            for ch in 0..c {
                let r = ch * s..(ch + 1) * s;
                for (yv, xv) in y[r.clone()].iter_mut().zip(&x[r]) {
                    *yv = xv * scale[ch] + shift[ch];
                }
            }
        });
    y
}

struct BnTrainOp {
    eps: f64,
    stash: Arc<Mutex<Option<Saved>>>,
}

impl CustomOp3 for BnTrainOp {
    fn name(&self) -> &'static str {
        "gyre-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let (n, c, s) = ncs(l1.dims());
        let st = channel_stats(x, (n, c, s), self.eps);
        let scale: Vec<f32> = (0..c).map(|ch| w[ch] * st.inv_std[ch]).collect();
        let shift: Vec<f32> = (0..c).map(|ch| b[ch] - st.mean[ch] * scale[ch]).collect();
        let y = scale_shift(x, (c, s), &scale, &shift);
        *self.stash.lock().expect("stash") = Some(st);
        let _ = n;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let saved = self
            .stash
            .lock()
            .expect("stash")
            .clone()
            .expect("forward ran before backward");
        let numel = x.elem_count();
        let c = x.dim(1)?;
        let packed = x.apply_op3_no_bwd(w, &dy.contiguous()?, &BnBackwardOp { saved })?;
        let dx = packed.narrow(0, 0, numel)?.reshape(x.shape())?;
        let dw = packed.narrow(0, numel, c)?;
        let db = packed.narrow(0, numel + c, c)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Computes `[dx (flattened), dγ, dβ]` in one flat tensor.
struct BnBackwardOp {
    saved: Saved,
}

impl CustomOp3 for BnBackwardOp {
    fn name(&self) -> &'static str {
        "gyre-batch-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, dy) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let (n, c, s) = ncs(l1.dims());
        let sv = &self.saved;
        // Pass 1, per channel: Σdy and Σdy·x̂.
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mu, is) = (sv.mean[ch], sv.inv_std[ch]);
                let mut acc = Sum8x2::default();
                for i in 0..n {
                    let r = (i * c + ch) * s..(i * c + ch + 1) * s;
                    acc.add(&dy[r.clone()], &x[r], |g, v| {
                        (g as f64, (g * (v - mu) * is) as f64)
                    });
                }
                (acc.a.total(), acc.b.total())
            })
            .collect();
        let m = (n * s) as f64;
        let mut out = vec![0f32; x.len() + 2 * c];
        let (dx, rest) = out.split_at_mut(x.len());
        // Pass 2, per sample: dx = γσ⁻¹ (dy − Σdy/M − x̂ Σdy·x̂/M).
        dx.par_chunks_mut(c * s)
            .zip(x.par_chunks(c * s).zip(dy.par_chunks(c * s)))
            .for_each(|(dx, (x, dy))| {
                for ch in 0..c {
                    let (mu, is) = (sv.mean[ch], sv.inv_std[ch]);
                    let k = w[ch] * is;
                    let mdy = (sums[ch].0 / m) as f32;
                    let mdyx = (sums[ch].1 / m) as f32;
                    let r = ch * s..(ch + 1) * s;
                    for ((o, &g), &v) in dx[r.clone()].iter_mut().zip(&dy[r.clone()]).zip(&x[r]) {
                        *o = k * (g - mdy - (v - mu) * is * mdyx);
                    }
                }
            });
        for ch in 0..c {
            rest[ch] = sums[ch].1 as f32;
            rest[c + ch] = sums[ch].0 as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from(x.len() + 2 * c)))
    }
}

/// The plain candle composition of train-mode batch norm (mean, subtract, square, mean, divide,
/// scale, shift): works on every device and is the reference the fused op is tested against.
pub fn batch_norm_train_reference(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, BatchStats)> {
    let dims = reduce_dims(x.rank())?;
    let cshape = channel_shape(x);
    let count = x.elem_count() / cshape[1].max(1);
    let mean = x.mean_keepdim(dims.as_slice())?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(dims.as_slice())?;
    let inv_std = (&var + eps)?.sqrt()?.recip()?;
    let mut y = centred.broadcast_mul(&inv_std)?;
    if let Some(w) = weight {
        y = y.broadcast_mul(&w.reshape(cshape.as_slice())?)?;
    }
    if let Some(b) = bias {
        y = y.broadcast_add(&b.reshape(cshape.as_slice())?)?;
    }
    let stats = BatchStats {
        mean: mean.flatten_all()?.detach(),
        var: var.flatten_all()?.detach(),
        count,
    };
    Ok((y, stats))
}

/// Eval-mode batch norm with the running statistics `mean` and `var` (both `[C]`): the statistics
/// fold into a per-channel `scale` and `shift` (`[C]`, tiny), applied by [`channel_affine`].
pub fn batch_norm_eval(
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let (scale, shift) = eval_scale_shift(mean, var, weight, bias, eps)?;
    channel_affine(x, &scale, &shift)
}

/// The plain candle composition of eval-mode batch norm (broadcast multiply and add).
pub fn batch_norm_eval_reference(
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let (scale, shift) = eval_scale_shift(mean, var, weight, bias, eps)?;
    channel_affine_reference(x, &scale, &shift)
}

/// `scale = γ/√(var+eps)`, `shift = β − mean·scale`.
fn eval_scale_shift(
    mean: &Tensor,
    var: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    let inv_std = (var + eps)?.sqrt()?.recip()?;
    let scale = match weight {
        Some(w) => inv_std.mul(w)?,
        None => inv_std,
    };
    let shift = mean.mul(&scale)?;
    let shift = match bias {
        Some(b) => (b - shift)?,
        None => shift.neg()?,
    };
    Ok((scale, shift))
}

/// `y = x · scale[c] + shift[c]` over channel dim 1 of `x` (`[N, C, …]`), with `scale` and
/// `shift` of shape `[C]`: one pass on the CPU (f32), candle's broadcasts elsewhere. The backward
/// gives `dx = dy·scale`, `dscale = Σ dy·x`, `dshift = Σ dy`.
pub fn channel_affine(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    if !super::fused(x) {
        return channel_affine_reference(x, scale, shift);
    }
    reduce_dims(x.rank())?;
    x.contiguous()?
        .apply_op3(&scale.contiguous()?, &shift.contiguous()?, ChannelAffineOp)
}

/// The broadcast composition [`channel_affine`] must equal.
pub fn channel_affine_reference(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    let cshape = channel_shape(x);
    x.broadcast_mul(&scale.reshape(cshape.as_slice())?)?
        .broadcast_add(&shift.reshape(cshape.as_slice())?)
}

struct ChannelAffineOp;

impl CustomOp3 for ChannelAffineOp {
    fn name(&self) -> &'static str {
        "gyre-channel-affine"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, a, t) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let (_, c, s) = ncs(l1.dims());
        if a.len() != c || t.len() != c {
            candle_core::bail!(
                "channel_affine: scale and shift must have {c} entries, got {} and {}",
                a.len(),
                t.len()
            );
        }
        let y = scale_shift(x, (c, s), a, t);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // Eval-mode BatchNorm's scale and shift come from running statistics that nobody
        // differentiates: gradients are computed only for what is tracked.
        let dims = reduce_dims(x.rank())?;
        let dx = if x.track_op() {
            Some(channel_affine(dy, scale, &scale.zeros_like()?)?)
        } else {
            None
        };
        let dscale = if scale.track_op() {
            Some((dy * x)?.sum(dims.as_slice())?)
        } else {
            None
        };
        let dshift = if shift.track_op() {
            Some(dy.sum(dims.as_slice())?)
        } else {
            None
        };
        Ok((dx, dscale, dshift))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn train_mode_normalises_each_channel() -> Result<()> {
        let dev = Device::Cpu;
        // Channel 0 holds 1..=8, channel 1 holds 10·(1..=8): mean 4.5 / 45, var 5.25 / 525.
        let mut v = Vec::new();
        for n in 0..2 {
            for c in 0..2 {
                for k in 0..4 {
                    let base = (n * 4 + k + 1) as f32;
                    v.push(if c == 0 { base } else { 10.0 * base });
                }
            }
        }
        let x = Tensor::from_vec(v, (2, 2, 2, 2), &dev)?;
        let (y, st) = batch_norm_train(&x, None, None, 0.0)?;
        let m = st.mean.to_vec1::<f32>()?;
        let s = st.var.to_vec1::<f32>()?;
        assert!((m[0] - 4.5).abs() < 1e-6 && (m[1] - 45.0).abs() < 1e-4);
        assert!((s[0] - 5.25).abs() < 1e-5 && (s[1] - 525.0).abs() < 1e-2);
        assert_eq!(st.count, 8);
        let ym = y.mean_keepdim((0, 2, 3))?.flatten_all()?.to_vec1::<f32>()?;
        let yv = y
            .sqr()?
            .mean_keepdim((0, 2, 3))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for c in 0..2 {
            assert!(ym[c].abs() < 1e-6, "{ym:?}");
            assert!((yv[c] - 1.0).abs() < 1e-5, "{yv:?}");
        }
        Ok(())
    }

    #[test]
    fn eval_mode_uses_running_statistics() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(vec![1f32, 3.0, 5.0, 7.0], (2, 2), &dev)?;
        let mean = Tensor::from_vec(vec![1f32, 3.0], 2, &dev)?;
        let var = Tensor::from_vec(vec![4f32, 16.0], 2, &dev)?;
        let w = Tensor::from_vec(vec![2f32, 1.0], 2, &dev)?;
        let b = Tensor::from_vec(vec![0.5f32, -1.0], 2, &dev)?;
        let y = batch_norm_eval(&x, &mean, &var, Some(&w), Some(&b), 0.0)?.to_vec2::<f32>()?;
        // Row 0: (1−1)/2·2+0.5 = 0.5, (3−3)/4·1−1 = −1; row 1: (5−1)/2·2+0.5 = 4.5, (7−3)/4−1 = 0.
        assert_eq!(y, vec![vec![0.5, -1.0], vec![4.5, 0.0]]);
        Ok(())
    }
}
