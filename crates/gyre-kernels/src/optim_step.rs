//! Fused optimiser updates over raw f32 slices: one parallel pass per parameter tensor instead of
//! the ten-odd candle ops (each a full-size allocation) of the composed update.
//!
//! The arithmetic follows the composed candle update of `gyre-train`'s optimiser operation for
//! operation (each `affine` is `x·a + b` in f32), so both paths give bit-identical parameters.

use candle_core::{CpuStorage, Result, Storage, StorageRef, Tensor};
use rayon::prelude::*;
use std::ops::Range;

const CHUNK: usize = 1 << 14;

/// A borrowed view of the f32 contents of a contiguous CPU tensor (holds its storage's read lock).
pub struct CpuF32<'a> {
    storage: StorageRef<'a>,
    range: Range<usize>,
}

impl CpuF32<'_> {
    /// Borrows `t` if it is a contiguous f32 tensor on the CPU; `None` otherwise.
    pub fn of(t: &Tensor) -> Option<CpuF32<'_>> {
        let (storage, layout) = t.storage_and_layout();
        let (a, b) = layout.contiguous_offsets()?;
        match &*storage {
            Storage::Cpu(CpuStorage::F32(_)) => Some(CpuF32 {
                storage,
                range: a..b,
            }),
            _ => None,
        }
    }

    pub fn slice(&self) -> &[f32] {
        match &*self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.range.clone()],
            _ => unreachable!("checked in CpuF32::of"),
        }
    }
}

/// AdamW hyper-parameters of one step (bias corrections already raised to the step count).
#[derive(Debug, Clone, Copy)]
pub struct AdamwStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// `1 − β₁ᵗ`.
    pub bias_correction1: f64,
    /// `1 − β₂ᵗ`.
    pub bias_correction2: f64,
}

/// One AdamW update (decoupled weight decay, torch semantics): returns the new `(w, m, v)`.
/// `m` and `v` are `None` on the first step (zeros).
pub fn adamw_update(
    w: &[f32],
    g: &[f32],
    m: Option<&[f32]>,
    v: Option<&[f32]>,
    s: &AdamwStep,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = w.len();
    let (b1, omb1) = (s.beta1 as f32, (1.0 - s.beta1) as f32);
    let (b2, omb2) = (s.beta2 as f32, (1.0 - s.beta2) as f32);
    let inv_bc1 = (1.0 / s.bias_correction1) as f32;
    let inv_bc2 = (1.0 / s.bias_correction2) as f32;
    let eps = s.eps as f32;
    let decay = (1.0 - s.lr * s.weight_decay) as f32;
    let lr = s.lr as f32;
    let decays = s.weight_decay > 0.0;
    let (mut wo, mut mo, mut vo) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    wo.par_chunks_mut(CHUNK)
        .zip(mo.par_chunks_mut(CHUNK).zip(vo.par_chunks_mut(CHUNK)))
        .enumerate()
        .for_each(|(ci, (wo, (mo, vo)))| {
            let base = ci * CHUNK;
            for k in 0..wo.len() {
                let i = base + k;
                let gi = g[i];
                let mi = match m {
                    Some(m) => m[i] * b1 + gi * omb1,
                    None => gi * omb1,
                };
                let vi = match v {
                    Some(v) => v[i] * b2 + (gi * gi) * omb2,
                    None => (gi * gi) * omb2,
                };
                let mhat = mi * inv_bc1;
                let denom = (vi * inv_bc2).sqrt() + eps;
                let wd = if decays { w[i] * decay } else { w[i] };
                wo[k] = wd - (mhat / denom) * lr;
                mo[k] = mi;
                vo[k] = vi;
            }
        });
    (wo, mo, vo)
}

/// SGD hyper-parameters of one step.
#[derive(Debug, Clone, Copy)]
pub struct SgdStep {
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
}

/// One SGD update with coupled weight decay and momentum (torch semantics): returns the new `w`
/// and, when momentum is on, the new momentum buffer (`buf` is `None` on the first step).
pub fn sgd_update(
    w: &[f32],
    g: &[f32],
    buf: Option<&[f32]>,
    s: &SgdStep,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let n = w.len();
    let (wd, mom, lr) = (s.weight_decay as f32, s.momentum as f32, s.lr as f32);
    let (decays, has_mom) = (s.weight_decay > 0.0, s.momentum > 0.0);
    let mut wo = vec![0f32; n];
    let mut bo = if has_mom { vec![0f32; n] } else { Vec::new() };
    let body = |base: usize, wo: &mut [f32], bo: &mut [f32]| {
        for k in 0..wo.len() {
            let i = base + k;
            let gi = if decays { g[i] + w[i] * wd } else { g[i] };
            let d = if has_mom {
                let b = match buf {
                    Some(b) => b[i] * mom + gi,
                    None => gi,
                };
                bo[k] = b;
                if s.nesterov {
                    gi + b * mom
                } else {
                    b
                }
            } else {
                gi
            };
            wo[k] = w[i] - d * lr;
        }
    };
    if has_mom {
        wo.par_chunks_mut(CHUNK)
            .zip(bo.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(ci, (wo, bo))| body(ci * CHUNK, wo, bo));
        (wo, Some(bo))
    } else {
        wo.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(ci, wo)| body(ci * CHUNK, wo, &mut []));
        (wo, None)
    }
}

/// Shape-preserving tensor from an update's output.
pub fn like(t: &Tensor, v: Vec<f32>) -> Result<Tensor> {
    Tensor::from_vec(v, t.shape(), t.device())
}
