//! 2-D max pooling with any window, stride and padding (the ResNet stem's 3×3, stride 2,
//! padding 1), with a backward.
//!
//! candle 0.11.1's `max_pool2d` has a backward only when the window equals the stride, so the
//! ImageNet stem could not train. Semantics are PyTorch's `nn.MaxPool2d`: padding counts as −∞,
//! and each output's gradient goes to the first maximum of its window in row-major order (ties
//! are not split).
//!
//! On the CPU (f32) the forward is one pass per `(n, c)` plane that also records each output's
//! argmax; the backward scatters the output gradient through those indices, plane by plane, so
//! the result is bit-identical at any thread count. Elsewhere (and for tests) it is
//! [`max_pool2d_reference`], a plain candle composition: the k² shifted, strided windows stacked,
//! `argmax` over them, `gather`.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Output side of a pooled dimension of size `n`.
fn out_size(n: usize, k: usize, stride: usize, pad: usize) -> Result<usize> {
    if k == 0 || stride == 0 {
        candle_core::bail!("max_pool2d: window and stride must be positive");
    }
    if pad * 2 > k {
        candle_core::bail!("max_pool2d: padding {pad} is more than half the window {k}");
    }
    if n + 2 * pad < k {
        candle_core::bail!(
            "max_pool2d: input side {n} with padding {pad} is smaller than the window {k}"
        );
    }
    Ok((n + 2 * pad - k) / stride + 1)
}

/// The geometry of one call.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    k: usize,
    stride: usize,
    pad: usize,
}

struct MaxPool {
    g: Geometry,
    /// Each output's argmax (an index into its input plane), written by the forward for the
    /// backward.
    argmax: Arc<Mutex<Option<Vec<u32>>>>,
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "gyre-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = super::cpu_f32(s, l, "max_pool2d", "input")?;
        let (n, c, _, _) = l.shape().dims4()?;
        let Geometry {
            h,
            w,
            ho,
            wo,
            k,
            stride,
            pad,
        } = self.g;
        let (plane_in, plane_out) = (h * w, ho * wo);
        let mut y = vec![0f32; n * c * plane_out];
        let mut arg = vec![0u32; n * c * plane_out];
        y.par_chunks_mut(plane_out)
            .zip(arg.par_chunks_mut(plane_out))
            .zip(x.par_chunks(plane_in))
            .for_each(|((y, arg), x)| {
                for oy in 0..ho {
                    let y0 = (oy * stride) as isize - pad as isize;
                    for ox in 0..wo {
                        let x0 = (ox * stride) as isize - pad as isize;
                        let (mut best, mut at) = (f32::NEG_INFINITY, u32::MAX);
                        for iy in y0.max(0)..(y0 + k as isize).min(h as isize) {
                            for ix in x0.max(0)..(x0 + k as isize).min(w as isize) {
                                let i = iy as usize * w + ix as usize;
                                // `>` keeps the first maximum; a NaN wins, as in PyTorch.
                                if at == u32::MAX || x[i] > best || x[i].is_nan() {
                                    best = x[i];
                                    at = i as u32;
                                }
                            }
                        }
                        y[oy * wo + ox] = best;
                        arg[oy * wo + ox] = at;
                    }
                }
            });
        *self.argmax.lock().expect("argmax") = Some(arg);
        Ok((CpuStorage::F32(y), Shape::from((n, c, ho, wo))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let argmax =
            self.argmax.lock().expect("argmax").clone().ok_or_else(|| {
                candle_core::Error::Msg("max_pool2d: backward before forward".into())
            })?;
        let g = grad.contiguous()?;
        let gx = g.apply_op1_no_bwd(&MaxPoolBackward {
            g: self.g,
            argmax,
            input: arg.shape().clone(),
        })?;
        Ok(Some(gx))
    }
}

/// Scatters output gradients to the recorded argmax positions.
struct MaxPoolBackward {
    g: Geometry,
    argmax: Vec<u32>,
    input: Shape,
}

impl CustomOp1 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "gyre-max-pool2d-backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let gy = super::cpu_f32(s, l, "max_pool2d backward", "gradient")?;
        let (plane_in, plane_out) = (self.g.h * self.g.w, self.g.ho * self.g.wo);
        if gy.len() != self.argmax.len() {
            candle_core::bail!("max_pool2d backward: gradient and argmax sizes differ");
        }
        let mut gx = vec![0f32; self.input.elem_count()];
        gx.par_chunks_mut(plane_in)
            .zip(
                gy.par_chunks(plane_out)
                    .zip(self.argmax.par_chunks(plane_out)),
            )
            .for_each(|(gx, (gy, arg))| {
                for (&g, &a) in gy.iter().zip(arg) {
                    gx[a as usize] += g;
                }
            });
        Ok((CpuStorage::F32(gx), self.input.clone()))
    }
}

/// Max pooling of `x` (`[N, C, H, W]`) with a `k × k` window, `stride` and `pad` on each side;
/// output `[N, C, (H + 2·pad − k) / stride + 1, …]`.
pub fn max_pool2d(x: &Tensor, k: usize, stride: usize, pad: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let g = Geometry {
        h,
        w,
        ho: out_size(h, k, stride, pad)?,
        wo: out_size(w, k, stride, pad)?,
        k,
        stride,
        pad,
    };
    if !super::fused(x) {
        return max_pool2d_reference(x, k, stride, pad);
    }
    x.contiguous()?.apply_op1(MaxPool {
        g,
        argmax: Arc::new(Mutex::new(None)),
    })
}

/// The plain composition (any device, any float dtype): pad with −∞, take the k² strided windows
/// with `index_select`, stack them on a new last axis, and `gather` at their `argmax`. Its
/// backward is candle's (`gather` and `index_select`), so gradients go to the first maximum.
pub fn max_pool2d_reference(x: &Tensor, k: usize, stride: usize, pad: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (ho, wo) = (out_size(h, k, stride, pad)?, out_size(w, k, stride, pad)?);
    let dev = x.device();
    let xp = if pad > 0 {
        let neg = |shape: (usize, usize, usize, usize)| -> Result<Tensor> {
            Tensor::full(f32::NEG_INFINITY, shape, dev)?.to_dtype(x.dtype())
        };
        let rows = Tensor::cat(&[neg((n, c, pad, w))?, x.clone(), neg((n, c, pad, w))?], 2)?;
        let side = neg((n, c, h + 2 * pad, pad))?;
        Tensor::cat(&[&side, &rows, &side], 3)?
    } else {
        x.clone()
    };
    let index = |offset: usize, len: usize| -> Result<Tensor> {
        let v: Vec<u32> = (0..len).map(|i| (offset + i * stride) as u32).collect();
        Tensor::from_vec(v, len, dev)
    };
    let mut windows = Vec::with_capacity(k * k);
    for dy in 0..k {
        let r = xp.index_select(&index(dy, ho)?, 2)?;
        for dx in 0..k {
            windows.push(r.index_select(&index(dx, wo)?, 3)?);
        }
    }
    let stacked = Tensor::stack(&windows, 4)?;
    let at = stacked.argmax_keepdim(4)?;
    stacked.gather(&at, 4)?.squeeze(4)
}
