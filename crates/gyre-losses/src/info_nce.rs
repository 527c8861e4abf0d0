//! InfoNCE with a queue of negatives, the loss of MoCo v2.
//!
//! He, Fan, Wu, Xie, Girshick. "Momentum Contrast for Unsupervised Visual Representation
//! Learning", CVPR 2020 (arXiv 1911.05722); Chen, Fan, Girshick, He. "Improved Baselines with
//! Momentum Contrastive Learning" (MoCo v2, arXiv 2003.04297); reference
//! `facebookresearch/moco` `moco/builder.py`.
//!
//! For queries `q` (`[B, D]`, with gradient), keys `k` (`[B, D]`, the momentum encoder's, no
//! gradient) and a queue `Q` (`[K, D]`, no gradient), all L2-normalised:
//! `Z = [q·k | q Qᵀ] / τ` (`[B, 1 + K]`), `L = mean_b (lse(Z_b) − Z_b0)`.
//! Keys and queue are detached here, whatever the caller passes.
//!
//! Convention: the mean over the B queries (as the reference's `CrossEntropyLoss`). The symmetric
//! form (MoCo CIFAR demo `--symmetric`) is the caller's `(L(q1, k2) + L(q2, k1)) / 2`.

use crate::normalize::l2_normalize;
use gyre_kernels::{candle::bail, Result, Tensor};

/// Cross-entropy of `[pos | neg] / τ` against column 0, averaged over rows: `pos` is `[B]` (the
/// positive's raw logit, a cosine possibly shifted by a margin), `neg` is `[B, K]`. Every
/// queue-based loss here (MoCo, ReCo's local term, InterCLR's inter term) ends in this.
pub fn logits_ce_first(pos: &Tensor, neg: &Tensor, tau: f64) -> Result<Tensor> {
    let (b, _) = neg.dims2()?;
    if pos.dims() != [b] {
        bail!("logits_ce_first: pos is {:?}, expected [{b}]", pos.dims());
    }
    if b == 0 || tau <= 0.0 || !tau.is_finite() {
        bail!("logits_ce_first: needs B ≥ 1 and τ > 0 (B = {b}, τ = {tau})");
    }
    let z = (Tensor::cat(&[&pos.unsqueeze(1)?, neg], 1)? / tau)?;
    let logp = gyre_kernels::nn::ops::log_softmax(&z, 1)?;
    logp.narrow(1, 0, 1)?.mean_all()?.neg()
}

/// MoCo's InfoNCE of queries `q` against their keys `k` (positives) and the queue (negatives) at
/// temperature `tau`. `q` and `k` may have any scale (normalised here); the queue rows are used
/// as given (a queue stores normalised keys). Returns the mean over the B queries.
pub fn info_nce(q: &Tensor, k: &Tensor, queue: &Tensor, tau: f64) -> Result<Tensor> {
    let (b, d) = q.dims2()?;
    let (_, dq) = queue.dims2()?;
    if k.dims2()? != (b, d) || dq != d {
        bail!(
            "info_nce: q [{b}, {d}], k {:?}, queue {:?}: widths or batch sizes differ",
            k.dims(),
            queue.dims()
        );
    }
    let q = l2_normalize(q)?;
    let k = l2_normalize(&k.detach())?;
    let pos = (&q * &k)?.sum(1)?;
    let neg = q.matmul(&queue.detach().t()?)?;
    logits_ce_first(&pos, &neg, tau)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient, rows};
    use gyre_kernels::{Device, Var};

    const E1: [f32; 3] = [1.0, 0.0, 0.0];
    const E2: [f32; 3] = [0.0, 1.0, 0.0];
    const E3: [f32; 3] = [0.0, 0.0, 1.0];
    const NE1: [f32; 3] = [-1.0, 0.0, 0.0];

    #[test]
    fn tv4_orthogonal_and_identical_queue() -> Result<()> {
        // docs/spec/test-vectors.md TV4: q = k = e1, Q = 4 × e2, τ = 0.2 → ln(1 + 4e^{-5});
        // Q = 4 × e1 → ln 5.
        let q = rows(&[E1])?;
        let l = info_nce(&q, &q, &rows(&[E2, E2, E2, E2])?, 0.2)?.to_scalar::<f32>()?;
        assert_close(l as f64, 0.0265950, 1e-5);
        assert_close(l as f64, (1.0 + 4.0 * (-5f64).exp()).ln(), 1e-5);
        let l = info_nce(&q, &q, &rows(&[E1, E1, E1, E1])?, 0.2)?.to_scalar::<f32>()?;
        assert_close(l as f64, 5f64.ln(), 1e-6);
        Ok(())
    }

    #[test]
    fn c1_and_c2_closed_forms() -> Result<()> {
        // C1: everything identical → ln(K + 1) for any τ (here K = 6, τ = 0.07).
        let v = [0.3f32, -0.2, 0.9];
        let q = rows(&[v, v])?;
        let queue = l2_normalize(&rows(&[v; 6])?)?;
        let l = info_nce(&q, &q, &queue, 0.07)?.to_scalar::<f32>()?;
        assert_close(l as f64, 7f64.ln(), 1e-5);
        // C2: one positive at s_p = 0.8, K = 3 negatives at s_n = 0.1: ln(1 + K e^{(s_n − s_p)/τ}).
        let pos = Tensor::new(&[0.8f32], &Device::Cpu)?;
        let neg = Tensor::new(&[[0.1f32, 0.1, 0.1]], &Device::Cpu)?;
        let l = logits_ce_first(&pos, &neg, 0.5)?.to_scalar::<f32>()?;
        assert_close(l as f64, (1.0 + 3.0 * (-0.7f64 / 0.5).exp()).ln(), 1e-6);
        Ok(())
    }

    #[test]
    fn tv5_value_and_logit_gradient() -> Result<()> {
        // docs/spec/test-vectors.md TV5: q = e1, k = n(1,1,0), Q = [e2, e3, −e1], τ = 0.2.
        let q = rows(&[E1])?;
        let k = rows(&[[1.0, 1.0, 0.0]])?;
        let queue = rows(&[E2, E3, NE1])?;
        let l = info_nce(&q, &k, &queue, 0.2)?.to_scalar::<f32>()?;
        assert_close(l as f64, 0.0568365, 1e-5);
        // ∂L/∂logits with logits = [q·k, q Qᵀ] / τ (B = 1): softmax − one-hot.
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let logits = Var::new(&[[s / 0.2, 0.0, 0.0, -1.0 / 0.2]], &Device::Cpu)?;
        let z = logits.as_tensor();
        let loss = logits_ce_first(&z.narrow(1, 0, 1)?.squeeze(1)?, &z.narrow(1, 1, 3)?, 1.0)?;
        let g = loss.backward()?.get(z).unwrap().to_vec2::<f32>()?;
        for (got, want) in g[0]
            .iter()
            .zip([-0.0552515f64, 0.0275330, 0.0275330, 0.0001855])
        {
            assert_close(*got as f64, want, 1e-4);
        }
        Ok(())
    }

    #[test]
    fn gradient_reaches_q_only_and_matches_finite_differences() -> Result<()> {
        let q = rows(&[[0.2, -0.5, 0.9], [1.0, 0.3, -0.2]])?;
        let k = rows(&[[0.1, -0.4, 1.0], [0.7, 0.7, 0.1]])?;
        let queue = l2_normalize(&rows(&[E2, [0.5, 0.5, -0.7], NE1])?)?;
        check_gradient(
            &q,
            |q| {
                let dt = q.dtype();
                info_nce(q, &k.to_dtype(dt)?, &queue.to_dtype(dt)?, 0.2)
            },
            1e-5,
        )?;
        // Keys are detached: no gradient flows into them.
        let kv = Var::from_tensor(&k)?;
        let loss = info_nce(&q, kv.as_tensor(), &queue, 0.2)?;
        assert!(loss.backward()?.get(kv.as_tensor()).is_none());
        Ok(())
    }

    #[test]
    fn shape_errors_name_the_problem() {
        let q = rows(&[E1]).unwrap();
        let e = info_nce(&q, &q, &rows(&[[1.0f32, 0.0]]).unwrap(), 0.2).unwrap_err();
        assert!(e.to_string().contains("info_nce"), "{e}");
    }
}
