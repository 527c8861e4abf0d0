//! BYOL's regression loss: the online prediction regresses the target projection.
//!
//! Grill et al. "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS
//! 2020 (arXiv 2006.07733); reference `solo-learn` `solo/losses/byol.py`.
//!
//! `L(p, z) = mean_b (2 − 2 cos(p_b, sg(z_b)))` for one direction; BYOL symmetrises by adding both
//! directions, `L(p1, z2) + L(p2, z1)` (solo-learn's convention; the value per direction is in
//! [0, 4]). The target `z` is detached here. Cosines use PyTorch's `F.cosine_similarity`
//! denominator `max(‖p‖·‖z‖, 1e-8)`.

use gyre_kernels::{candle::bail, Result, Tensor, D};

/// PyTorch's `F.cosine_similarity` eps.
pub const COSINE_EPS: f64 = 1e-8;

/// Row-wise cosine similarity of two `[B, D]` tensors (gradient through both).
pub fn cosine_rows(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dims() != b.dims() || a.rank() != 2 {
        bail!("cosine_rows: shapes {:?} and {:?}", a.dims(), b.dims());
    }
    let dot = (a * b)?.sum(D::Minus1)?;
    let na = a.sqr()?.sum(D::Minus1)?.sqrt()?;
    let nb = b.sqr()?.sum(D::Minus1)?.sqrt()?;
    dot / (na * nb)?.maximum(COSINE_EPS)?
}

/// BYOL's loss for one direction: `mean_b (2 − 2 cos(p_b, sg(z_b)))`.
pub fn byol_loss(p: &Tensor, z: &Tensor) -> Result<Tensor> {
    cosine_rows(p, &z.detach())?.mean_all()?.affine(-2.0, 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient, rows};
    use gyre_kernels::Var;

    #[test]
    fn c5_closed_form() -> Result<()> {
        // docs/spec/test-vectors.md C5: p = (1, 0), z = (0.6, 0.8) → 2 − 2·0.6 = 0.8 (scale does
        // not matter).
        let l = byol_loss(&rows(&[[1.0, 0.0]])?, &rows(&[[3.0, 4.0]])?)?.to_scalar::<f32>()?;
        assert_close(l as f64, 0.8, 1e-6);
        // Identical directions give 0, opposite ones 4.
        let l = byol_loss(
            &rows(&[[1.0, 2.0], [1.0, 0.0]])?,
            &rows(&[[2.0, 4.0], [-1.0, 0.0]])?,
        )?;
        assert_close(l.to_scalar::<f32>()? as f64, 2.0, 1e-6);
        Ok(())
    }

    #[test]
    fn gradient_only_through_the_prediction() -> Result<()> {
        let p = rows(&[[0.3, -1.2, 0.5], [2.0, 0.1, 0.4]])?;
        let z = rows(&[[1.0, 0.5, -0.3], [0.2, 0.2, 0.9]])?;
        check_gradient(&p, |p| byol_loss(p, &z.to_dtype(p.dtype())?), 1e-5)?;
        let zv = Var::from_tensor(&z)?;
        let loss = byol_loss(&p, zv.as_tensor())?;
        assert!(loss.backward()?.get(zv.as_tensor()).is_none());
        Ok(())
    }
}
