//! Barlow Twins' redundancy reduction: the cross-correlation of the two views' batch-standardised
//! projections driven to the identity.
//!
//! Zbontar, Jing, Misra, LeCun, Deny. "Barlow Twins: Self-Supervised Learning via Redundancy
//! Reduction", ICML 2021 (arXiv 2103.03230); reference `facebookresearch/barlowtwins` `main.py`.
//!
//! Each projection `z_v` (`[N, D]`) is standardised per column over the batch as the reference's
//! `BatchNorm1d(affine=False)` in training mode does: `(z − mean) / sqrt(var + 1e-5)`, the
//! variance biased (divided by `N`). Then `C = z̃_1ᵀ z̃_2 / N` (`[D, D]`) and
//! `L = Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²`, λ = 5e-3 (the paper's 5.1e-3 rounded, as lightly and
//! solo-learn ship it). `L = 0` exactly when `C = I`; with both views' columns the same unit
//! vectors, `L = 0` up to the BatchNorm eps. The loss is a sum over `D` terms (not a mean), as the
//! reference: its scale grows with the width, which the paper's λ and learning rate assume.

use gyre_kernels::{candle::bail, Result, Tensor};

/// The reference's BatchNorm eps.
pub const BARLOW_TWINS_EPS: f64 = 1e-5;
/// The off-diagonal weight λ.
pub const BARLOW_TWINS_LAMBDA: f64 = 5e-3;

/// Each column of `z` (`[N, D]`) standardised over the batch: `(z − mean) / sqrt(var + eps)`,
/// the variance biased (BatchNorm's training-mode statistics).
pub fn standardize_columns(z: &Tensor, eps: f64) -> Result<Tensor> {
    let centred = z.broadcast_sub(&z.mean_keepdim(0)?)?;
    let var = centred.sqr()?.mean_keepdim(0)?;
    centred.broadcast_div(&(var + eps)?.sqrt()?)
}

/// The cross-correlation `C = z̃_1ᵀ z̃_2 / N` of two `[N, D]` projections (`[D, D]`).
pub fn cross_correlation(z1: &Tensor, z2: &Tensor) -> Result<Tensor> {
    if z1.dims() != z2.dims() || z1.rank() != 2 {
        bail!(
            "barlow twins: the two views' projections must be the same [N, D], got {:?} and {:?}",
            z1.dims(),
            z2.dims()
        );
    }
    let n = z1.dim(0)?;
    if n < 2 {
        bail!("barlow twins: batch statistics need at least 2 rows, got {n}");
    }
    let a = standardize_columns(z1, BARLOW_TWINS_EPS)?;
    let b = standardize_columns(z2, BARLOW_TWINS_EPS)?;
    a.t()?.matmul(&b)? / n as f64
}

/// Barlow Twins' loss `Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²` of two views' projections (gradient
/// through both; the method is symmetric, so there is no second direction to add).
pub fn barlow_twins_loss(z1: &Tensor, z2: &Tensor, lambda: f64) -> Result<Tensor> {
    let c = cross_correlation(z1, z2)?;
    let d = c.dim(0)?;
    let eye = Tensor::eye(d, c.dtype(), c.device())?;
    let diag = (&c * &eye)?.sum(1)?;
    let on = diag.affine(-1.0, 1.0)?.sqr()?.sum_all()?;
    let off = (c.sqr()?.sum_all()? - diag.sqr()?.sum_all()?)?;
    on + (off * lambda)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient, rows};

    #[test]
    fn identity_correlation_is_zero_and_its_negative_is_4d() -> Result<()> {
        // Columns (1, −1, 1, −1) and (1, 1, −1, −1): mean 0, biased variance 1, orthogonal.
        let z = rows(&[[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])?;
        let same = barlow_twins_loss(&z, &z, BARLOW_TWINS_LAMBDA)?.to_scalar::<f32>()? as f64;
        // C = I / (1 + eps): (eps / (1 + eps))² per diagonal entry.
        let s = 1.0 / (1.0 + BARLOW_TWINS_EPS);
        assert!(same.abs() < 1e-8, "{same}");
        // Scale and shift leave the standardised columns alone.
        let moved = z.affine(3.0, -2.0)?;
        let l = barlow_twins_loss(&moved, &z, BARLOW_TWINS_LAMBDA)?.to_scalar::<f32>()? as f64;
        assert!(l.abs() < 1e-8, "{l}");
        // z2 = −z1: C = −I s, each diagonal term (1 + s)².
        let l = barlow_twins_loss(&z, &z.neg()?, BARLOW_TWINS_LAMBDA)?.to_scalar::<f32>()? as f64;
        assert_close(l, 2.0 * (1.0 + s) * (1.0 + s), 1e-6);
        Ok(())
    }

    #[test]
    fn two_rows_by_hand() -> Result<()> {
        // N = 2: z1's columns standardise to (−1, 1)·s1 and (1, −1)·s1, z2's both to
        // (−1, 1)·s2, so C = s [[1, 1], [−1, −1]] with s = s1 s2 and
        // L = (1 − s)² + (1 + s)² + λ (s² + s²).
        let z1 = rows(&[[1.0, 2.0], [3.0, 0.0]])?;
        let z2 = rows(&[[0.0, 0.0], [1.0, 1.0]])?;
        let c = cross_correlation(&z1, &z2)?.to_vec2::<f32>()?;
        // Each column's biased variance is 1 for z1 (spread 2) and 0.25 for z2 (spread 1).
        let s1 = 1.0 / (1.0 + BARLOW_TWINS_EPS).sqrt();
        let s2 = 0.5 / (0.25 + BARLOW_TWINS_EPS).sqrt();
        let s = s1 * s2;
        for (got, want) in c.iter().flatten().zip([s, s, -s, -s]) {
            assert_close(*got as f64, want, 1e-6);
        }
        let lambda = 0.25;
        let l = barlow_twins_loss(&z1, &z2, lambda)?.to_scalar::<f32>()? as f64;
        assert_close(
            l,
            (1.0 - s).powi(2) + (1.0 + s).powi(2) + lambda * 2.0 * s * s,
            1e-6,
        );
        Ok(())
    }

    #[test]
    fn matches_the_reference_formula() -> Result<()> {
        // `bn = nn.BatchNorm1d(3, affine=False); c = bn(z1).T @ bn(z2) / 4;
        //  on = (torch.diagonal(c) - 1).pow(2).sum(); off = off_diagonal(c).pow(2).sum();
        //  on + 5e-3 * off` in torch 2.15 (float64): the reference main.py's lines.
        let z1 = rows(&[
            [0.3, -1.2, 0.5],
            [2.0, 0.1, 0.4],
            [-0.7, 0.9, -1.5],
            [1.1, 0.2, 0.8],
        ])?;
        let z2 = rows(&[
            [1.0, 0.5, -0.3],
            [0.2, 0.2, 0.9],
            [-1.4, 0.6, 0.1],
            [0.9, -0.8, 0.7],
        ])?;
        let l = barlow_twins_loss(&z1, &z2, BARLOW_TWINS_LAMBDA)?.to_scalar::<f32>()? as f64;
        assert_close(l, REFERENCE, 1e-5);
        Ok(())
    }
    const REFERENCE: f64 = 1.9134357330032725;

    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let z1 = rows(&[[0.3, -1.2, 0.5], [2.0, 0.1, 0.4], [-0.7, 0.9, -1.5]])?;
        let z2 = rows(&[[1.0, 0.5, -0.3], [0.2, 0.2, 0.9], [-1.4, 0.6, 0.1]])?;
        check_gradient(
            &z1,
            |z| barlow_twins_loss(z, &z2.to_dtype(z.dtype())?, 0.1),
            1e-5,
        )?;
        check_gradient(
            &z2,
            |z| barlow_twins_loss(&z1.to_dtype(z.dtype())?, z, 0.1),
            1e-5,
        )
    }

    #[test]
    fn one_row_or_mismatched_views_are_errors() -> Result<()> {
        let a = rows(&[[1.0, 2.0]])?;
        assert!(barlow_twins_loss(&a, &a, 0.1).is_err());
        let b = rows(&[[1.0, 2.0], [0.0, 1.0]])?;
        let c = rows(&[[1.0, 2.0, 3.0], [0.0, 1.0, 2.0]])?;
        assert!(barlow_twins_loss(&b, &c, 0.1).is_err());
        Ok(())
    }
}
