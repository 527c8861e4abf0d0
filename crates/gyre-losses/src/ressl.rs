//! ReSSL's relational loss: the student's similarity distribution over a queue is trained to match
//! the teacher's sharper one.
//!
//! Zheng, Wang, You, Qian, Zhang, Wang, Xu. "ReSSL: Relational Self-Supervised Learning with Weak
//! Augmentation", NeurIPS 2021 (arXiv 2107.09282), and "Weak Augmentation Guided Relational
//! Self-Supervised Learning", TPAMI 2024 (arXiv 2203.08717); reference
//! `KyleZheng1997/ReSSL` `ressl.py`, `solo-learn` `solo/losses/ressl.py`.
//!
//! For the student's strong view `z_s` (`[B, D]`, gradient), the teacher's weak view `z_t`
//! (`[B, D]`, EMA encoder, no gradient) and a queue `Q` (`[K, D]`, past teacher embeddings, read
//! **before** this batch is enqueued), all L2-normalised:
//! `p_t = softmax(z_t Qᵀ / τ_t)`, `L = −mean_b Σ_j p_t[b,j] · log_softmax(z_s Qᵀ / τ_s)[b,j]`,
//! with τ_s = 0.1 and τ_t = 0.04 in the paper. There are no positive pairs: the target is the
//! teacher's relation to the memory. ReCo's global term is the same loss on the weak-key queue.

use crate::normalize::l2_normalize;
use gyre_kernels::{candle::bail, nn::ops::log_softmax, Result, Tensor};

/// Soft-target cross-entropy `−mean_b Σ_j target[b,j] · log_softmax(logits)[b,j]`; `target`
/// (rows summing to 1) is detached. Gradient: `(softmax(logits) − target) / B`.
pub fn soft_cross_entropy(target: &Tensor, logits: &Tensor) -> Result<Tensor> {
    if target.dims() != logits.dims() || logits.rank() != 2 {
        bail!(
            "soft_cross_entropy: target {:?} and logits {:?} differ",
            target.dims(),
            logits.dims()
        );
    }
    let b = logits.dim(0)?;
    let ls = log_softmax(logits, 1)?;
    (target.detach() * ls)?
        .sum_all()?
        .affine(-1.0 / b as f64, 0.0)
}

/// ReSSL's relational loss of the student `z_s` against the teacher `z_t` over `queue` (rows used
/// as given: the queue stores normalised teacher embeddings); `z_s`, `z_t` may have any scale.
pub fn ressl_loss(
    z_s: &Tensor,
    z_t: &Tensor,
    queue: &Tensor,
    tau_s: f64,
    tau_t: f64,
) -> Result<Tensor> {
    let (b, d) = z_s.dims2()?;
    if z_t.dims2()? != (b, d) || queue.dims2()?.1 != d {
        bail!(
            "ressl_loss: z_s [{b}, {d}], z_t {:?}, queue {:?}: widths or batch sizes differ",
            z_t.dims(),
            queue.dims()
        );
    }
    if !(tau_s > 0.0 && tau_t > 0.0) {
        bail!("ressl_loss: temperatures must be positive (τ_s = {tau_s}, τ_t = {tau_t})");
    }
    let q = queue.detach();
    let zt = l2_normalize(&z_t.detach())?;
    let p_t = crate::softmax_rows(&(zt.matmul(&q.t()?)? / tau_t)?)?;
    let zs = l2_normalize(z_s)?;
    soft_cross_entropy(&p_t, &(zs.matmul(&q.t()?)? / tau_s)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient, rows};
    use gyre_kernels::Var;

    const E1: [f32; 3] = [1.0, 0.0, 0.0];
    const E2: [f32; 3] = [0.0, 1.0, 0.0];
    const E3: [f32; 3] = [0.0, 0.0, 1.0];
    const NE1: [f32; 3] = [-1.0, 0.0, 0.0];

    #[test]
    fn tv6_value_and_gradient_wrt_similarities() -> Result<()> {
        // docs/spec/test-vectors.md TV6: q = n(1,1,0), k = e1, Q = [e1, e2, e3, −e1], τ_s = 0.1,
        // τ_t = 0.04.
        let q = rows(&[[1.0, 1.0, 0.0]])?;
        let k = rows(&[E1])?;
        let queue = rows(&[E1, E2, E3, NE1])?;
        let l = ressl_loss(&q, &k, &queue, 0.1, 0.04)?.to_scalar::<f32>()?;
        assert_close(l as f64, 0.6935721, 1e-5);
        // ∂L/∂s for s = the raw student cosines: (p_s − p_t) / τ_s.
        let s = Var::from_tensor(&l2_normalize(&q)?.matmul(&queue.t()?)?)?;
        let p_t = crate::softmax_rows(&(k.matmul(&queue.t()?)? / 0.04)?)?;
        let loss = soft_cross_entropy(&p_t, &(s.as_tensor() / 0.1)?)?;
        let g = loss
            .backward()?
            .get(s.as_tensor())
            .unwrap()
            .to_vec2::<f32>()?;
        for (got, want) in g[0]
            .iter()
            .zip([-5.002124f64, 4.997876, 4.244824e-3, 3.605238e-6])
        {
            assert_close(*got as f64, want, 1e-4);
        }
        Ok(())
    }

    #[test]
    fn tv6b_and_c3_closed_forms() -> Result<()> {
        // TV6b: q = k = e1, Q = [e1, e2, −e1] → 4.5401e−5.
        let e1 = rows(&[E1])?;
        let l = ressl_loss(&e1, &e1, &rows(&[E1, E2, NE1])?, 0.1, 0.04)?.to_scalar::<f32>()?;
        assert_close(l as f64, 4.5401e-5, 1e-3);
        // C3 / TV6b: K = 8 entries all equal (e2) → ln 8.
        let l = ressl_loss(&e1, &e1, &rows(&[E2; 8])?, 0.1, 0.04)?.to_scalar::<f32>()?;
        assert_close(l as f64, 8f64.ln(), 1e-6);
        // C3: z_s = z_t and τ_s = τ_t → the entropy of p_t.
        let z = rows(&[[0.3, -0.6, 0.2]])?;
        let queue = l2_normalize(&rows(&[E1, E2, [0.5, 0.5, 0.5], NE1])?)?;
        let l = ressl_loss(&z, &z, &queue, 0.2, 0.2)?.to_scalar::<f32>()?;
        let p = crate::softmax_rows(&(l2_normalize(&z)?.matmul(&queue.t()?)? / 0.2)?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let h: f64 = p.iter().map(|&x| -(x as f64) * (x as f64).ln()).sum();
        assert_close(l as f64, h, 1e-5);
        Ok(())
    }

    #[test]
    fn gradient_reaches_the_student_only() -> Result<()> {
        let zs = rows(&[[0.2, -0.5, 0.9], [1.0, 0.3, -0.2]])?;
        let zt = rows(&[[0.1, -0.4, 1.0], [0.7, 0.7, 0.1]])?;
        let queue = l2_normalize(&rows(&[E2, [0.5, 0.5, -0.7], NE1, E3])?)?;
        check_gradient(
            &zs,
            |z| {
                let dt = z.dtype();
                ressl_loss(z, &zt.to_dtype(dt)?, &queue.to_dtype(dt)?, 0.1, 0.04)
            },
            1e-5,
        )?;
        let tv = Var::from_tensor(&zt)?;
        let loss = ressl_loss(&zs, tv.as_tensor(), &queue, 0.1, 0.04)?;
        assert!(loss.backward()?.get(tv.as_tensor()).is_none());
        Ok(())
    }
}
