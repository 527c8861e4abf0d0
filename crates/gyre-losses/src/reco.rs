//! ReCo's local interpolation relation: a CutMix of two images is pulled towards the matching mix
//! of their features (a detached target), against the strong-key queue.
//!
//! Zhang, Liu, Zhou, Wang, Ye, Ji. "ReCo: Relation-aware contrastive self-supervised learning",
//! arXiv 2211.01796; reference `zhangyifei01/ReCo` `reco/builder.py`.
//!
//! ReCo's whole loss is `L_moco + λ1 L_global + λ2 L_local`: `L_moco` is [`crate::info_nce`],
//! `L_global` is [`crate::ressl_loss`] of the strong query against the weak-key queue, and
//! `L_local` is [`local_relation_loss`]. The CutMix box (one λ and one permutation per batch) is
//! drawn by the caller; [`cutmix_kept_fraction`] gives the `r` of a clipped box.

use crate::info_nce::info_nce;
use crate::normalize::l2_normalize;
use gyre_kernels::{candle::bail, Result, Tensor};

/// The feature-space mix `f_mix = sg(n(r·q + (1 − r)·k_perm))` (`q` the online queries, `k_perm`
/// the keys of the pasted images, both `[B, D]` and normalised here; `r` the kept fraction of the
/// query image).
pub fn interpolation_target(q: &Tensor, k_perm: &Tensor, r: f64) -> Result<Tensor> {
    if q.dims() != k_perm.dims() {
        bail!(
            "interpolation_target: q {:?} and k_perm {:?} differ",
            q.dims(),
            k_perm.dims()
        );
    }
    if !(0.0..=1.0).contains(&r) {
        bail!("interpolation_target: r must be in [0, 1], got {r}");
    }
    let q = l2_normalize(&q.detach())?;
    let k = l2_normalize(&k_perm.detach())?;
    l2_normalize(&((q * r)? + (k * (1.0 - r))?)?)
}

/// `L_local = InfoNCE(q_mix, f_mix, Q, T)`: the mixed image's query against the detached
/// interpolation target, with the strong-key queue as negatives.
pub fn local_relation_loss(
    q_mix: &Tensor,
    f_mix: &Tensor,
    queue: &Tensor,
    tau: f64,
) -> Result<Tensor> {
    info_nce(q_mix, f_mix, queue, tau)
}

/// `r = 1 − area(box) / (h·w)` for a box `[y0, y1) × [x0, x1)` already clipped to the image.
pub fn cutmix_kept_fraction(h: usize, w: usize, y0: usize, y1: usize, x0: usize, x1: usize) -> f64 {
    let area = y1.saturating_sub(y0) * x1.saturating_sub(x0);
    1.0 - area as f64 / (h * w) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient, rows};
    use gyre_kernels::Var;

    #[test]
    fn tv13_feature_interpolation() -> Result<()> {
        // docs/spec/test-vectors.md TV13: q = (1, 0), k[perm] = (0, 1), r = 0.75 → (0.9486833,
        // 0.3162278).
        let f = interpolation_target(&rows(&[[1.0, 0.0]])?, &rows(&[[0.0, 2.0]])?, 0.75)?;
        let f = f.to_vec2::<f32>()?;
        assert_close(f[0][0] as f64, 0.9486833, 1e-6);
        assert_close(f[0][1] as f64, 0.3162278, 1e-6);
        // The target is detached.
        let q = Var::from_tensor(&rows(&[[1.0, 0.0]])?)?;
        let t = interpolation_target(q.as_tensor(), &rows(&[[0.0, 1.0]])?, 0.5)?;
        assert!(t.sum_all()?.backward()?.get(q.as_tensor()).is_none());
        Ok(())
    }

    #[test]
    fn kept_fraction_after_clipping() {
        assert_eq!(cutmix_kept_fraction(32, 32, 0, 16, 0, 16), 0.75);
        assert_eq!(cutmix_kept_fraction(28, 28, 0, 0, 3, 9), 1.0);
        assert_eq!(cutmix_kept_fraction(4, 4, 0, 4, 0, 4), 0.0);
    }

    #[test]
    fn local_loss_is_info_nce_with_the_mixed_target() -> Result<()> {
        let q_mix = rows(&[[0.4, 0.1, -0.3], [0.2, 0.9, 0.1]])?;
        let f_mix = interpolation_target(
            &rows(&[[1.0, 0.2, 0.0], [0.0, 1.0, 0.3]])?,
            &rows(&[[0.0, 1.0, 0.3], [1.0, 0.2, 0.0]])?,
            0.6,
        )?;
        let queue = l2_normalize(&rows(&[
            [0.0, 0.0, 1.0],
            [-1.0, 0.2, 0.0],
            [0.3, 0.3, 0.3],
        ])?)?;
        check_gradient(
            &q_mix,
            |q| {
                let dt = q.dtype();
                local_relation_loss(q, &f_mix.to_dtype(dt)?, &queue.to_dtype(dt)?, 0.2)
            },
            1e-5,
        )
    }
}
