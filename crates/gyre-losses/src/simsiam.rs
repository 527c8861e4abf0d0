//! SimSiam's negative-cosine loss with a stop-gradient on the other branch.
//!
//! Chen, He. "Exploring Simple Siamese Representation Learning", CVPR 2021 (arXiv 2011.10566);
//! reference `facebookresearch/simsiam` `main_simsiam.py`.
//!
//! `D(p, z) = −mean_b cos(p_b, sg(z_b))`; the method's loss is `½ D(p1, z2) + ½ D(p2, z1)`, in
//! [−1, 1]. The target is detached here.

use crate::byol::cosine_rows;
use gyre_kernels::{Result, Tensor};

/// SimSiam's `D(p, z) = −mean_b cos(p_b, sg(z_b))` for one direction.
pub fn simsiam_loss(p: &Tensor, z: &Tensor) -> Result<Tensor> {
    cosine_rows(p, &z.detach())?.mean_all()?.neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient, rows};

    #[test]
    fn c5_closed_form() -> Result<()> {
        // docs/spec/test-vectors.md C5: p = (1, 0), z = (0.6, 0.8) → D = −0.6.
        let l = simsiam_loss(&rows(&[[1.0, 0.0]])?, &rows(&[[0.6, 0.8]])?)?;
        assert_close(l.to_scalar::<f32>()? as f64, -0.6, 1e-6);
        Ok(())
    }

    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let p = rows(&[[0.3, -1.2, 0.5], [2.0, 0.1, 0.4]])?;
        let z = rows(&[[1.0, 0.5, -0.3], [0.2, 0.2, 0.9]])?;
        check_gradient(&p, |p| simsiam_loss(p, &z.to_dtype(p.dtype())?), 1e-5)
    }
}
