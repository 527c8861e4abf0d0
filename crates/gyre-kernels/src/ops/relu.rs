//! ReLU and the residual `relu(a + b)` as single-pass CPU ops with a single-pass backward.
//!
//! candle's ReLU backward builds `grad · (x ≥ 0)` from four ops (zeros, compare, cast, multiply),
//! each a full-size allocation; here the mask comes from the saved output in the same pass.
//! Off the CPU both fall back to candle's composition.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::fused;

const CHUNK: usize = 1 << 14;

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    super::cpu_f32(s, l, "relu", "input")
}

/// `out[i] = f(a[i], b[i])`, in parallel chunks.
fn map2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                *o = f(a, b);
            }
        });
    out
}

/// `grad · (y > 0)` for a ReLU output `y`.
struct MaskedGrad;

impl CustomOp2 for MaskedGrad {
    fn name(&self) -> &'static str {
        "gyre-relu-backward"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = map2(slice(s1, l1)?, slice(s2, l2)?, |y, g| {
            if y > 0.0 {
                g
            } else {
                0.0
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

fn masked_grad(res: &Tensor, grad: &Tensor) -> Result<Tensor> {
    res.apply_op2_no_bwd(&grad.contiguous()?, &MaskedGrad)
}

struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "gyre-relu"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let y = map2(x, x, |x, _| x.max(0.0));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(masked_grad(res, grad)?))
    }
}

struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "gyre-add-relu"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            candle_core::bail!(
                "add_relu: shapes differ: {:?} vs {:?}",
                l1.dims(),
                l2.dims()
            );
        }
        let y = map2(slice(s1, l1)?, slice(s2, l2)?, |a, b| (a + b).max(0.0));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = masked_grad(res, grad)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

/// `max(x, 0)`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if fused(x) {
        x.contiguous()?.apply_op1(Relu)
    } else {
        x.relu()
    }
}

/// `max(a + b, 0)`, the end of a residual block.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fused(a) && fused(b) && a.dims() == b.dims() {
        a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
    } else {
        (a + b)?.relu()
    }
}
