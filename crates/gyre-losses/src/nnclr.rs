//! NNCLR's loss: nearest-neighbour positives from a support set.
//!
//! Dwibedi, Aytar, Tompson, Sermanet, Zisserman. "With a Little Help from My Friends:
//! Nearest-Neighbor Contrastive Learning of Visual Representations", ICCV 2021 (arXiv
//! 2104.14548), Eq. 3; solo-learn `solo/losses/nnclr.py` (`nnclr_loss_func`) and
//! `solo/methods/nnclr.py` (`find_nn`).
//!
//! For embeddings `z` (`[B, D]`) of one view, a support set `S` (`[K, D]`, a FIFO queue of past
//! embeddings, no gradient) and the other view's predictions `p` (`[B, D]`):
//! `NN(z_i) = S[argmax_k ⟨n(z_i), n(S_k)⟩]`, and
//! `L = mean_i −log softmax_j(⟨n(NN(z_i)), n(p_j)⟩ / τ)_i` — the neighbour is the positive of the
//! same image's prediction, the batch's other predictions its negatives. The neighbour is a
//! constant (no gradient flows into the support set); the gradient reaches `p`.
//!
//! Convention: one direction, the mean over the B rows (solo-learn's `F.cross_entropy`); NNCLR is
//! the caller's `(L(NN(z1), p2) + L(NN(z2), p1)) / 2`.

use crate::normalize::l2_normalize;
use gyre_kernels::{candle::bail, Result, Tensor};

/// The index of each row's nearest support row by cosine similarity (`z`: `[B, D]`, `support`:
/// `[K, D]`, any scale; ties go to the lowest index).
pub fn nearest_neighbours(z: &Tensor, support: &Tensor) -> Result<Vec<u32>> {
    let (_, d) = z.dims2()?;
    let (k, ds) = support.dims2()?;
    if ds != d || k == 0 {
        bail!(
            "nearest_neighbours: z is {:?}, the support set {:?}: needs the same width and K ≥ 1",
            z.dims(),
            support.dims()
        );
    }
    let sims = l2_normalize(&z.detach())?.matmul(&l2_normalize(&support.detach())?.t()?)?;
    let rows = sims.to_vec2::<f32>()?;
    Ok(rows
        .iter()
        .map(|r| {
            let mut best = 0;
            for (j, &s) in r.iter().enumerate() {
                if s > r[best] {
                    best = j;
                }
            }
            best as u32
        })
        .collect())
}

/// One direction of NNCLR's loss: row i of `nn` (the support-set neighbour of view 1's image i,
/// detached here) is the positive of row i of `p` (view 2's prediction) at temperature `tau`.
pub fn nnclr_loss(nn: &Tensor, p: &Tensor, tau: f64) -> Result<Tensor> {
    let (b, d) = p.dims2()?;
    if nn.dims2()? != (b, d) || b == 0 {
        bail!(
            "nnclr_loss: nn {:?} and p {:?} must have the same non-empty shape",
            nn.dims(),
            p.dims()
        );
    }
    if !(tau > 0.0 && tau.is_finite()) {
        bail!("nnclr_loss: τ must be positive, got {tau}");
    }
    let logits = (l2_normalize(&nn.detach())?.matmul(&l2_normalize(p)?.t()?)? / tau)?;
    let logp = gyre_kernels::nn::ops::log_softmax(&logits, 1)?;
    let eye = Tensor::eye(b, logp.dtype(), logp.device())?;
    (logp * eye)?.sum_all()?.affine(-1.0 / b as f64, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient, n3, rows};

    /// NN1 (docs/spec/test-vectors.md): S = [e1, e2, e3], z = [n(1, 0.2, 0), n(0, 0.1, 1)] have
    /// neighbours [e1, e3]; with p = [n(1, 0, 0.1), n(0.1, 0, 1)] and τ = 0.5 both rows give
    /// ln(1 + exp(−0.9 / (√1.01 · τ))) = 0.1542496.
    #[test]
    fn nn1_closed_form() -> Result<()> {
        let s = rows(&[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])?;
        let z = rows(&[n3([1.0, 0.2, 0.0]), n3([0.0, 0.1, 1.0])])?;
        let idx = nearest_neighbours(&z, &s)?;
        assert_eq!(idx, [0, 2]);
        let nn = s.index_select(&Tensor::new(idx.as_slice(), s.device())?, 0)?;
        let p = rows(&[n3([1.0, 0.0, 0.1]), n3([0.1, 0.0, 1.0])])?;
        let l = nnclr_loss(&nn, &p, 0.5)?.to_scalar::<f32>()? as f64;
        let want = (1.0 + (-0.9 / (1.01f64.sqrt() * 0.5)).exp()).ln();
        assert_close(want, 0.1542496, 1e-6);
        assert_close(l, want, 1e-5);
        // Scale does not matter: both sides are normalised.
        let l2 = nnclr_loss(&(nn * 3.0)?, &(p * 0.2)?, 0.5)?.to_scalar::<f32>()? as f64;
        assert_close(l2, want, 1e-5);
        Ok(())
    }

    /// C1's form: when every neighbour and prediction is the same vector, L = ln B for any τ.
    #[test]
    fn identical_rows_give_ln_b() -> Result<()> {
        let x = rows(&[[0.6, 0.8], [0.6, 0.8], [0.6, 0.8], [0.6, 0.8]])?;
        let l = nnclr_loss(&x, &x, 0.07)?.to_scalar::<f32>()? as f64;
        assert_close(l, 4f64.ln(), 1e-6);
        Ok(())
    }

    /// The gradient with respect to the predictions, against central differences (f64); the
    /// neighbours get none.
    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let nn = rows(&[[0.3, -0.2, 0.9], [0.5, 0.5, -0.1], [-0.7, 0.1, 0.2]])?
            .to_dtype(gyre_kernels::DType::F64)?;
        let p = rows(&[[0.2, 0.4, 0.1], [-0.3, 0.8, 0.5], [0.9, -0.1, 0.3]])?;
        check_gradient(&p, |p| nnclr_loss(&nn, p, 0.3), 1e-6)?;
        let v = gyre_kernels::Var::from_tensor(&nn)?;
        let g =
            nnclr_loss(v.as_tensor(), &p.to_dtype(gyre_kernels::DType::F64)?, 0.3)?.backward()?;
        assert!(
            g.get(v.as_tensor()).is_none(),
            "no gradient into the support set"
        );
        Ok(())
    }

    #[test]
    fn bad_shapes_and_temperatures_are_errors() -> Result<()> {
        let a = rows(&[[1.0, 0.0]])?;
        let b = rows(&[[1.0, 0.0, 0.0]])?;
        assert!(nnclr_loss(&a, &b, 0.1).is_err());
        assert!(nnclr_loss(&a, &a, 0.0).is_err());
        assert!(nearest_neighbours(&a, &b).is_err());
        Ok(())
    }
}
