//! Softmax over the last dimension that autograd can differentiate.
//!
//! candle-nn's `softmax_last_dim` is a fused op **without a backward** (`apply_op1_no_bwd`): a
//! loss built on it silently gets no gradient. Every loss here uses [`softmax_rows`] instead.

use gyre_kernels::{Result, Tensor, D};

/// `softmax(x)` along the last dimension, as `exp(log_softmax(x))` (max-shifted, differentiable).
pub fn softmax_rows(x: &Tensor) -> Result<Tensor> {
    gyre_kernels::nn::ops::log_softmax(x, D::Minus1)?.exp()
}

/// The mean over every pair `(i, v)`, `v ≠ i`, of `−mean_b Σ_k targets[i][b, k] ·
/// log_softmax(scores[v] / τ)[b, k]`: each target view predicted by every other view (SwAV's
/// swapped prediction, DINO's loss). `targets[i]` belongs to view `i` of `scores` and is
/// detached; the callers check the shapes.
pub fn cross_view_soft_cross_entropy(
    targets: &[Tensor],
    scores: &[Tensor],
    temperature: f64,
) -> Result<Tensor> {
    let log_p: Vec<Tensor> = scores
        .iter()
        .map(|s| gyre_kernels::nn::ops::log_softmax(&(s / temperature)?, D::Minus1))
        .collect::<Result<_>>()?;
    let mut total: Option<Tensor> = None;
    let mut terms = 0usize;
    for (i, q) in targets.iter().enumerate() {
        let q = q.detach();
        for (v, lp) in log_p.iter().enumerate() {
            if v == i {
                continue;
            }
            let ce = (&q * lp)?.sum(1)?.mean_all()?.neg()?;
            total = Some(match total {
                Some(t) => t.add(&ce)?,
                None => ce,
            });
            terms += 1;
        }
    }
    match total {
        Some(t) => t / terms as f64,
        None => gyre_kernels::candle::bail!("cross-view cross-entropy: no pair of views"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::check_gradient;
    use gyre_kernels::Device;

    #[test]
    fn has_a_gradient_and_sums_to_one() -> Result<()> {
        let x = Tensor::new(&[[1f32, 2.0, 3.0], [0.5, -1.0, 40.0]], &Device::Cpu)?;
        let s = softmax_rows(&x)?.sum(1)?.to_vec1::<f32>()?;
        assert!(s.iter().all(|v| (v - 1.0).abs() < 1e-6), "{s:?}");
        let w = Tensor::new(&[[0.3f64, -0.2, 0.9], [1.0, 0.1, -0.4]], &Device::Cpu)?;
        check_gradient(
            &x.affine(0.1, 0.0)?,
            |x| softmax_rows(x)?.mul(&w)?.sum_all(),
            1e-5,
        )
    }
}
