//! 2-D convolution (no bias, no dilation, one group) as a candle `CustomOp2` with its own backward,
//! all three products on the gemm path:
//!
//! - forward: `y = W · im2col(x)`;
//! - grad-input: `dx = col2im(Wᵀ · dy)`;
//! - grad-weight: `dW = Σ dy · im2col(x)ᵀ`.
//!
//! Samples are processed in groups of `G` (so that `G·Ho·Wo` makes a well-shaped product) in
//! parallel; the weight gradient sums fixed chunks of the batch in a fixed order, so the result is
//! bit-identical whatever the thread count. `im2col` copies contiguous rows for stride 1.
//! On devices other than the CPU, `conv2d` falls back to candle's own convolution.

use crate::gemm::{sgemm, Mat};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Geometry of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvGeom {
    pub fn ho(&self) -> usize {
        (self.h + 2 * self.pad - self.kh) / self.stride + 1
    }
    pub fn wo(&self) -> usize {
        (self.w + 2 * self.pad - self.kw) / self.stride + 1
    }
    /// Output pixels per sample.
    pub fn p(&self) -> usize {
        self.ho() * self.wo()
    }
    /// Rows of the unfolded input (`C·kh·kw`).
    pub fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }
    fn in_len(&self) -> usize {
        self.c * self.h * self.w
    }
    /// A 1×1 stride-1 unpadded conv needs no unfolding: for one sample the input already is the
    /// column matrix (for several, `im2col` degenerates to row copies).
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
    /// Samples per product: enough that each product has at least 256 columns.
    fn group(&self) -> usize {
        256usize.div_ceil(self.p()).clamp(1, self.n.max(1))
    }
}

/// Unfolds one sample `x` (`C×H×W`) into columns `g·P .. (g+1)·P` of `col` (`K` rows, row stride `ld`).
fn im2col(x: &[f32], g: &ConvGeom, col: &mut [f32], ld: usize, off: usize) {
    let (ho, wo, s, pad) = (g.ho(), g.wo(), g.stride, g.pad as isize);
    for c in 0..g.c {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let r = (c * g.kh + ki) * g.kw + kj;
                let row = &mut col[r * ld + off..r * ld + off + ho * wo];
                for oy in 0..ho {
                    let dst = &mut row[oy * wo..(oy + 1) * wo];
                    let iy = (oy * s + ki) as isize - pad;
                    if iy < 0 || iy >= g.h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    let shift = kj as isize - pad; // ix = ox·s + shift
                    if s == 1 {
                        let lo = (-shift).clamp(0, wo as isize) as usize;
                        let hi = (g.w as isize - shift).clamp(lo as isize, wo as isize) as usize;
                        dst[..lo].fill(0.0);
                        dst[lo..hi].copy_from_slice(
                            &src[(lo as isize + shift) as usize..(hi as isize + shift) as usize],
                        );
                        dst[hi..].fill(0.0);
                    } else {
                        for (ox, d) in dst.iter_mut().enumerate() {
                            let ix = (ox * s) as isize + shift;
                            *d = if ix >= 0 && ix < g.w as isize {
                                src[ix as usize]
                            } else {
                                0.0
                            };
                        }
                    }
                }
            }
        }
    }
}

/// Folds columns back, adding into one sample `dx` (`C×H×W`): the adjoint of [`im2col`].
fn col2im(col: &[f32], g: &ConvGeom, ld: usize, off: usize, dx: &mut [f32]) {
    let (ho, wo, s, pad) = (g.ho(), g.wo(), g.stride, g.pad as isize);
    for c in 0..g.c {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let r = (c * g.kh + ki) * g.kw + kj;
                let row = &col[r * ld + off..r * ld + off + ho * wo];
                for oy in 0..ho {
                    let iy = (oy * s + ki) as isize - pad;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let src = &row[oy * wo..(oy + 1) * wo];
                    let dst = &mut plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    let shift = kj as isize - pad;
                    if s == 1 {
                        let lo = (-shift).clamp(0, wo as isize) as usize;
                        let hi = (g.w as isize - shift).clamp(lo as isize, wo as isize) as usize;
                        let d = &mut dst
                            [(lo as isize + shift) as usize..(hi as isize + shift) as usize];
                        for (a, b) in d.iter_mut().zip(&src[lo..hi]) {
                            *a += *b;
                        }
                    } else {
                        for (ox, v) in src.iter().enumerate() {
                            let ix = (ox * s) as isize + shift;
                            if ix >= 0 && ix < g.w as isize {
                                dst[ix as usize] += *v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Forward on slices: `x` is `N×C×H×W`, `w` is `O×C×kh×kw`; returns `N×O×Ho×Wo`.
pub fn conv2d_forward_cpu(x: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (p, k, o) = (g.p(), g.k(), g.o);
    let gs = g.group();
    let mut y = vec![0f32; g.n * o * p];
    y.par_chunks_mut(gs * o * p)
        .zip(x.par_chunks(gs * g.in_len()))
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(col, tmp), (y, x)| {
                let ng = y.len() / (o * p);
                if g.pointwise() && ng == 1 {
                    sgemm(o, p, k, Mat::rows(w, k), Mat::rows(x, p), y, p, false);
                    return;
                }
                let ld = ng * p;
                col.resize(k * ld, 0.0);
                for s in 0..ng {
                    im2col(&x[s * g.in_len()..(s + 1) * g.in_len()], g, col, ld, s * p);
                }
                if ng == 1 {
                    sgemm(o, p, k, Mat::rows(w, k), Mat::rows(col, ld), y, p, false);
                    return;
                }
                tmp.resize(o * ld, 0.0);
                sgemm(
                    o,
                    ld,
                    k,
                    Mat::rows(w, k),
                    Mat::rows(col, ld),
                    tmp,
                    ld,
                    false,
                );
                for s in 0..ng {
                    for oc in 0..o {
                        y[s * o * p + oc * p..s * o * p + (oc + 1) * p]
                            .copy_from_slice(&tmp[oc * ld + s * p..oc * ld + (s + 1) * p]);
                    }
                }
            },
        );
    y
}

/// Gathers `dy` of `ng` samples (`ng×O×P`) into an `O × ng·P` matrix.
fn gather_dy<'a>(dy: &'a [f32], o: usize, p: usize, ng: usize, buf: &'a mut Vec<f32>) -> &'a [f32] {
    if ng == 1 {
        return dy;
    }
    let ld = ng * p;
    buf.resize(o * ld, 0.0);
    for s in 0..ng {
        for oc in 0..o {
            buf[oc * ld + s * p..oc * ld + (s + 1) * p]
                .copy_from_slice(&dy[s * o * p + oc * p..s * o * p + (oc + 1) * p]);
        }
    }
    buf
}

/// Gradient with respect to the input.
pub fn conv2d_grad_input_cpu(w: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (p, k, o) = (g.p(), g.k(), g.o);
    let gs = g.group();
    let mut dx = vec![0f32; g.n * g.in_len()];
    dx.par_chunks_mut(gs * g.in_len())
        .zip(dy.par_chunks(gs * o * p))
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(col, buf), (dx, dy)| {
                let ng = dy.len() / (o * p);
                let ld = ng * p;
                let dym = gather_dy(dy, o, p, ng, buf);
                if g.pointwise() && ng == 1 {
                    sgemm(k, p, o, Mat::t(w, k), Mat::rows(dym, ld), dx, p, false);
                    return;
                }
                col.resize(k * ld, 0.0);
                sgemm(k, ld, o, Mat::t(w, k), Mat::rows(dym, ld), col, ld, false);
                for s in 0..ng {
                    let dxs = &mut dx[s * g.in_len()..(s + 1) * g.in_len()];
                    col2im(col, g, ld, s * p, dxs);
                }
            },
        );
    dx
}

/// Samples per weight-gradient chunk: fixed by the shapes alone, so the summation order (and so
/// every bit of the result) does not depend on the thread count.
fn weight_chunk(g: &ConvGeom) -> usize {
    let gs = g.group();
    gs * 16usize.div_ceil(gs)
}

/// Gradient with respect to the weight.
pub fn conv2d_grad_weight_cpu(x: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (p, k, o) = (g.p(), g.k(), g.o);
    let gs = g.group();
    let chunk = weight_chunk(g);
    let partials: Vec<Vec<f32>> = x
        .par_chunks(chunk * g.in_len())
        .zip(dy.par_chunks(chunk * o * p))
        .map(|(x, dy)| {
            let mut dw = vec![0f32; o * k];
            let (mut col, mut buf) = (Vec::new(), Vec::new());
            let n = dy.len() / (o * p);
            let mut first = true;
            for s0 in (0..n).step_by(gs) {
                let ng = gs.min(n - s0);
                let ld = ng * p;
                let dym = gather_dy(&dy[s0 * o * p..(s0 + ng) * o * p], o, p, ng, &mut buf);
                let colm: &[f32] = if g.pointwise() && ng == 1 {
                    &x[s0 * g.in_len()..(s0 + 1) * g.in_len()]
                } else {
                    col.resize(k * ld, 0.0);
                    for s in 0..ng {
                        let xs = &x[(s0 + s) * g.in_len()..(s0 + s + 1) * g.in_len()];
                        im2col(xs, g, &mut col, ld, s * p);
                    }
                    &col
                };
                sgemm(
                    o,
                    k,
                    ld,
                    Mat::rows(dym, ld),
                    Mat::t(colm, ld),
                    &mut dw,
                    k,
                    !first,
                );
                first = false;
            }
            dw
        })
        .collect();
    let mut dw = vec![0f32; o * k];
    for part in &partials {
        for (a, b) in dw.iter_mut().zip(part) {
            *a += *b;
        }
    }
    dw
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    super::cpu_f32(s, l, "conv2d", what)
}

fn geom(x: &[usize], w: &[usize], stride: usize, pad: usize) -> Result<ConvGeom> {
    let (&[n, c, h, wd], &[o, c2, kh, kw]) = (x, w) else {
        candle_core::bail!("conv2d: expected 4-D input and weight, got {x:?} and {w:?}")
    };
    if c != c2 {
        candle_core::bail!("conv2d: input has {c} channels, weight expects {c2}");
    }
    if stride == 0 || h + 2 * pad < kh || wd + 2 * pad < kw {
        candle_core::bail!("conv2d: kernel {kh}×{kw} (stride {stride}, padding {pad}) does not fit a {h}×{wd} input");
    }
    Ok(ConvGeom {
        n,
        c,
        h,
        w: wd,
        o,
        kh,
        kw,
        stride,
        pad,
    })
}

struct Conv2dOp {
    stride: usize,
    pad: usize,
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "gyre-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = geom(l1.dims(), l2.dims(), self.stride, self.pad)?;
        let y = conv2d_forward_cpu(
            f32_slice(s1, l1, "input")?,
            f32_slice(s2, l2, "weight")?,
            &g,
        );
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.o, g.ho(), g.wo()))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        // A gradient nobody asked for is not computed: the input of the first conv is data (no
        // graph behind it), and a frozen weight is not tracked.
        let gi = if x.track_op() {
            Some(w.apply_op2_no_bwd(
                &dy,
                &GradInputOp {
                    stride: self.stride,
                    pad: self.pad,
                    x_dims: x.dims4()?,
                },
            )?)
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(x.apply_op2_no_bwd(
                &dy,
                &GradWeightOp {
                    stride: self.stride,
                    pad: self.pad,
                    w_dims: w.dims4()?,
                },
            )?)
        } else {
            None
        };
        Ok((gi, gw))
    }
}

struct GradInputOp {
    stride: usize,
    pad: usize,
    x_dims: (usize, usize, usize, usize),
}

impl CustomOp2 for GradInputOp {
    fn name(&self) -> &'static str {
        "gyre-conv2d-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = self.x_dims;
        let g = geom(&[n, c, h, w], l1.dims(), self.stride, self.pad)?;
        let dx = conv2d_grad_input_cpu(
            f32_slice(s1, l1, "weight")?,
            f32_slice(s2, l2, "output gradient")?,
            &g,
        );
        Ok((CpuStorage::F32(dx), Shape::from(self.x_dims)))
    }
}

struct GradWeightOp {
    stride: usize,
    pad: usize,
    w_dims: (usize, usize, usize, usize),
}

impl CustomOp2 for GradWeightOp {
    fn name(&self) -> &'static str {
        "gyre-conv2d-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (o, c, kh, kw) = self.w_dims;
        let g = geom(l1.dims(), &[o, c, kh, kw], self.stride, self.pad)?;
        let dw = conv2d_grad_weight_cpu(
            f32_slice(s1, l1, "input")?,
            f32_slice(s2, l2, "output gradient")?,
            &g,
        );
        Ok((CpuStorage::F32(dw), Shape::from(self.w_dims)))
    }
}

/// Convolution of `x` (`[N, C, H, W]`) with `w` (`[O, C, kh, kw]`): the fused CPU kernel for f32
/// on the CPU, candle's `conv2d` otherwise.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if super::fused(x) && w.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op2(
            &w.contiguous()?,
            Conv2dOp {
                stride,
                pad: padding,
            },
        )
    } else {
        conv2d_reference(x, w, stride, padding)
    }
}

/// Candle's own convolution: the plain composition the fused kernel must equal, and the path on
/// every device without a fused kernel (CUDA, Metal).
///
/// candle 0.11.1's conv2d backward gets the input gradient's shape wrong when the last window
/// does not reach the padded input's edge (`(h + 2p − k) % stride ≠ 0`, e.g. every stride-2
/// convolution of an even-sized map). Then the input is padded explicitly and cut to the extent
/// the windows cover, which leaves the forward unchanged and makes candle's backward exact.
pub fn conv2d_reference(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (_, _, h, wd) = x.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    let (ph, pw) = (h + 2 * padding, wd + 2 * padding);
    if ph < kh || pw < kw || stride == 0 {
        // Let candle report the bad geometry.
        return x.conv2d(w, padding, stride, 1, 1);
    }
    let (rh, rw) = ((ph - kh) % stride, (pw - kw) % stride);
    if rh == 0 && rw == 0 {
        return x.conv2d(w, padding, stride, 1, 1);
    }
    let xp = x
        .pad_with_zeros(2, padding, padding)?
        .pad_with_zeros(3, padding, padding)?
        .narrow(2, 0, ph - rh)?
        .narrow(3, 0, pw - rw)?;
    xp.conv2d(w, 0, stride, 1, 1)
}
