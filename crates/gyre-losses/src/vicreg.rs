//! VICReg: variance, invariance and covariance regularisation of two views' projections.
//!
//! Bardes, Ponce, LeCun. "VICReg: Variance-Invariance-Covariance Regularization for
//! Self-Supervised Learning", ICLR 2022 (arXiv 2105.04906); reference
//! `facebookresearch/vicreg` `main_vicreg.py`.
//!
//! For projections `x`, `y` (`[N, D]`):
//! - invariance `s = mean((x − y)²)` over all `N·D` entries (PyTorch's `F.mse_loss`);
//! - variance `v = ½ mean_j relu(γ − std_j(x)) + ½ mean_j relu(γ − std_j(y))`, where
//!   `std_j = sqrt(Var_j + 1e-4)` with the unbiased variance (divided by `N − 1`), γ = 1;
//! - covariance `c = Σ_{i≠j} Cov(x)_ij² / D + Σ_{i≠j} Cov(y)_ij² / D`, `Cov = x̄ᵀ x̄ / (N − 1)`
//!   of the centred columns;
//! - `L = 25 s + 25 v + 1 c` (the paper's λ, μ, ν).
//!
//! The terms are returned apart so that a method can log them.

use gyre_kernels::{candle::bail, Result, Tensor};

/// The reference's eps under the square root of the variance.
pub const VICREG_EPS: f64 = 1e-4;

/// VICReg's weights and its variance target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VicRegWeights {
    /// λ, on the invariance (MSE) term.
    pub invariance: f64,
    /// μ, on the variance hinge.
    pub variance: f64,
    /// ν, on the covariance term.
    pub covariance: f64,
    /// γ, the standard deviation the hinge asks of every column.
    pub gamma: f64,
}

impl Default for VicRegWeights {
    fn default() -> Self {
        Self {
            invariance: 25.0,
            variance: 25.0,
            covariance: 1.0,
            gamma: 1.0,
        }
    }
}

/// The three unweighted terms and the weighted loss (scalars, with autograd).
pub struct VicRegTerms {
    pub invariance: Tensor,
    pub variance: Tensor,
    pub covariance: Tensor,
    pub loss: Tensor,
}

/// `mean_j relu(γ − sqrt(Var_j + eps))` and `Σ_{i≠j} Cov_ij² / D` of one view's `[N, D]`.
fn variance_and_covariance(z: &Tensor, gamma: f64) -> Result<(Tensor, Tensor)> {
    let (n, d) = z.dims2()?;
    let centred = z.broadcast_sub(&z.mean_keepdim(0)?)?;
    let var = (centred.sqr()?.sum(0)? / (n - 1) as f64)?;
    let std = (var + VICREG_EPS)?.sqrt()?;
    let hinge = std.affine(-1.0, gamma)?.relu()?.mean_all()?;
    let cov = (centred.t()?.matmul(&centred)? / (n - 1) as f64)?;
    let eye = Tensor::eye(d, cov.dtype(), cov.device())?;
    let diag = (&cov * &eye)?.sum(1)?;
    let off = ((cov.sqr()?.sum_all()? - diag.sqr()?.sum_all()?)? / d as f64)?;
    Ok((hinge, off))
}

/// VICReg's loss of two views' projections `x`, `y` (gradient through both).
pub fn vicreg_loss(x: &Tensor, y: &Tensor, w: VicRegWeights) -> Result<VicRegTerms> {
    if x.dims() != y.dims() || x.rank() != 2 {
        bail!(
            "vicreg: the two views' projections must be the same [N, D], got {:?} and {:?}",
            x.dims(),
            y.dims()
        );
    }
    if x.dim(0)? < 2 {
        bail!(
            "vicreg: batch statistics need at least 2 rows, got {}",
            x.dim(0)?
        );
    }
    let invariance = (x - y)?.sqr()?.mean_all()?;
    let (vx, cx) = variance_and_covariance(x, w.gamma)?;
    let (vy, cy) = variance_and_covariance(y, w.gamma)?;
    let variance = ((vx + vy)? * 0.5)?;
    let covariance = (cx + cy)?;
    let loss = ((invariance.affine(w.invariance, 0.0)? + variance.affine(w.variance, 0.0)?)?
        + covariance.affine(w.covariance, 0.0)?)?;
    Ok(VicRegTerms {
        invariance,
        variance,
        covariance,
        loss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient, rows};

    fn scalar(t: &Tensor) -> f64 {
        t.to_scalar::<f32>().unwrap() as f64
    }

    #[test]
    fn hand_made_batches() -> Result<()> {
        // Columns (2, −2, 2, −2) and (2, 2, −2, −2): uncorrelated, unbiased std 4/√3 > 1.
        let x = rows(&[[2.0, 2.0], [-2.0, 2.0], [2.0, -2.0], [-2.0, -2.0]])?;
        let t = vicreg_loss(&x, &x, VicRegWeights::default())?;
        assert_eq!(scalar(&t.invariance), 0.0);
        assert_eq!(scalar(&t.variance), 0.0);
        assert_eq!(scalar(&t.covariance), 0.0);
        assert_eq!(scalar(&t.loss), 0.0);
        // A constant view: std = √eps = 0.01 in every column, hinge 0.99; half of it.
        let c = rows(&[[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])?;
        let t = vicreg_loss(&x, &c, VicRegWeights::default())?;
        assert_close(scalar(&t.variance), 0.5 * 0.99, 1e-6);
        assert_eq!(scalar(&t.covariance), 0.0);
        // mean((x − 1)²) over 8 entries: four 1s and four 9s.
        assert_close(scalar(&t.invariance), 5.0, 1e-6);
        assert_close(scalar(&t.loss), 25.0 * 5.0 + 25.0 * 0.495, 1e-6);
        // Two equal columns (1, −1, 1, −1)·a: Var = 4a²/3 on and off the diagonal, so the
        // off-diagonal sum is 2 (4a²/3)² / D with D = 2.
        let a = 0.5f64;
        let y = rows(&[[0.5, 0.5], [-0.5, -0.5], [0.5, 0.5], [-0.5, -0.5]])?;
        let t = vicreg_loss(&y, &y, VicRegWeights::default())?;
        let v = 4.0 * a * a / 3.0;
        assert_close(scalar(&t.covariance), 2.0 * (2.0 * v * v / 2.0), 1e-6);
        assert_close(scalar(&t.variance), 1.0 - (v + VICREG_EPS).sqrt(), 1e-6);
        Ok(())
    }

    #[test]
    fn matches_the_reference_formula() -> Result<()> {
        // The reference main_vicreg.py's forward in torch 2.15 (float64), on these inputs:
        // repr 0.9758333…, std 0.15562675005993143, cov 0.9318986111111112.
        let x = rows(&[
            [0.3, -1.2, 0.5],
            [2.0, 0.1, 0.4],
            [-0.7, 0.9, -1.5],
            [1.1, 0.2, 0.8],
        ])?;
        let y = rows(&[
            [1.0, 0.5, -0.3],
            [0.2, 0.2, 0.9],
            [-1.4, 0.6, 0.1],
            [0.9, -0.8, 0.7],
        ])?;
        let t = vicreg_loss(&x, &y, VicRegWeights::default())?;
        assert_close(scalar(&t.invariance), 0.9758333333333334, 1e-6);
        assert_close(scalar(&t.variance), 0.15562675005993143, 1e-5);
        assert_close(scalar(&t.covariance), 0.9318986111111112, 1e-5);
        assert_close(scalar(&t.loss), 29.218400695942734, 1e-6);
        Ok(())
    }

    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        // Small values so that every hinge is active (std < γ) and the gradient has all terms.
        let x = rows(&[[0.3, -0.2, 0.5], [0.2, 0.1, 0.4], [-0.1, 0.3, -0.5]])?;
        let y = rows(&[[0.1, 0.5, -0.3], [0.2, 0.2, 0.4], [-0.4, 0.1, 0.1]])?;
        let loss =
            |a: &Tensor, b: &Tensor| vicreg_loss(a, b, VicRegWeights::default()).map(|t| t.loss);
        check_gradient(&x, |z| loss(z, &y.to_dtype(z.dtype())?), 1e-5)?;
        check_gradient(&y, |z| loss(&x.to_dtype(z.dtype())?, z), 1e-5)
    }

    #[test]
    fn one_row_or_mismatched_views_are_errors() -> Result<()> {
        let a = rows(&[[1.0, 2.0]])?;
        assert!(vicreg_loss(&a, &a, VicRegWeights::default()).is_err());
        let b = rows(&[[1.0, 2.0], [0.0, 1.0]])?;
        let c = rows(&[[1.0, 2.0, 3.0], [0.0, 1.0, 2.0]])?;
        assert!(vicreg_loss(&b, &c, VicRegWeights::default()).is_err());
        Ok(())
    }
}
