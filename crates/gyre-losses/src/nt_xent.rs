//! NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.
//!
//! Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual
//! Representations", ICML 2020 (arXiv 2002.05709); reference `google-research/simclr`
//! `objective.py::add_contrastive_loss`.
//!
//! For `B` images with two views, `z = [n(z_a); n(z_b)]` is `[2B, D]`, `S = z zᵀ / τ` with the
//! diagonal removed, and row `i`'s positive is `(i + B) mod 2B`:
//! `ℓ_i = lse_{j≠i}(S_ij) − S_{i,pos(i)}`, `L = mean_i ℓ_i` over the 2B rows.
//!
//! Convention: the **paper mean over 2B rows** (as lightly's `NTXentLoss` and solo-learn). The TF
//! reference returns twice this (`loss_a + loss_b`, each a mean over B).

use crate::normalize::l2_normalize;
use gyre_kernels::{Result, Tensor};

/// NT-Xent of two view batches `z_a`, `z_b` (`[B, D]` each, any scale: they are L2-normalised
/// here) at temperature `tau`. Returns a scalar: the mean over the 2B rows.
pub fn nt_xent(z_a: &Tensor, z_b: &Tensor, tau: f64) -> Result<Tensor> {
    let (b, d) = z_a.dims2()?;
    let (b2, d2) = z_b.dims2()?;
    if (b, d) != (b2, d2) {
        gyre_kernels::candle::bail!("nt_xent: view shapes differ: [{b}, {d}] vs [{b2}, {d2}]");
    }
    if b == 0 || tau <= 0.0 || !tau.is_finite() {
        gyre_kernels::candle::bail!("nt_xent: needs B ≥ 1 and τ > 0 (B = {b}, τ = {tau})");
    }
    let dev = z_a.device();
    let n = 2 * b;
    let z = Tensor::cat(&[&l2_normalize(z_a)?, &l2_normalize(z_b)?], 0)?;
    let sim = (z.matmul(&z.t()?)? / tau)?;
    // Remove self-similarity with −∞: exp(−∞) = 0 in the softmax and its gradient is exactly 0.
    let diag: Vec<f32> = (0..n * n)
        .map(|k| {
            if k / n == k % n {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(diag, (n, n), dev)?.to_dtype(sim.dtype())?;
    let logp = gyre_kernels::nn::ops::log_softmax(&sim.add(&mask)?, 1)?;
    let pos: Vec<u32> = (0..n).map(|i| ((i + b) % n) as u32).collect();
    let pos = Tensor::from_vec(pos, (n, 1), dev)?;
    let picked = logp.gather(&pos, 1)?;
    picked.mean_all()?.neg()
}

/// NT-Xent with extra positives (IRC auto-pairing on a SimCLR base): for each listed row `i` of
/// view a, `positives[k]` (any scale, normalised here; usually a detached memory entry) is the
/// positive and the negatives are the usual NT-Xent ones — every other embedding of the batch
/// except `z_a[i]` itself and its own partner `z_b[i]` (itself a positive):
/// `ℓ_k = −log( e^{q·p/τ} / (e^{q·p/τ} + Σ_{j ∉ {i, i+B}} e^{q·z_j/τ}) )`, `L = mean_k ℓ_k`.
/// Returns 0 (with a gradient of 0) when `rows` is empty.
pub fn nt_xent_extra_positives(
    z_a: &Tensor,
    z_b: &Tensor,
    rows: &[u32],
    positives: &Tensor,
    tau: f64,
) -> Result<Tensor> {
    let (b, d) = z_a.dims2()?;
    let (k, dp) = positives.dims2()?;
    if z_b.dims2()? != (b, d) || dp != d || k != rows.len() {
        gyre_kernels::candle::bail!(
            "nt_xent_extra_positives: shapes z_a [{b}, {d}], z_b {:?}, positives [{k}, {dp}] for {} rows",
            z_b.dims(),
            rows.len()
        );
    }
    if let Some(&r) = rows.iter().find(|&&r| r as usize >= b) {
        gyre_kernels::candle::bail!("nt_xent_extra_positives: row {r} out of range for B = {b}");
    }
    if rows.is_empty() {
        return z_a.sum_all()?.affine(0.0, 0.0);
    }
    let dev = z_a.device();
    let za = l2_normalize(z_a)?;
    let z = Tensor::cat(&[&za, &l2_normalize(z_b)?], 0)?;
    let idx = Tensor::from_vec(rows.to_vec(), k, dev)?;
    let q = za.index_select(&idx, 0)?;
    let pos = (q.mul(&l2_normalize(positives)?)?.sum_keepdim(1)? / tau)?;
    let neg = (q.matmul(&z.t()?)? / tau)?;
    let mask: Vec<f32> = rows
        .iter()
        .flat_map(|&r| {
            (0..2 * b).map(move |j| {
                if j == r as usize || j == r as usize + b {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    let mask = Tensor::from_vec(mask, (k, 2 * b), dev)?.to_dtype(neg.dtype())?;
    let logits = Tensor::cat(&[&pos, &neg.add(&mask)?], 1)?;
    let logp = gyre_kernels::nn::ops::log_softmax(&logits, 1)?;
    logp.narrow(1, 0, 1)?.mean_all()?.neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient, n3, rows};
    use gyre_kernels::{DType, Device};

    #[test]
    fn tv1_identical_embeddings_give_ln_2b_minus_1() -> Result<()> {
        // docs/spec/test-vectors.md TV1: B = 4, every embedding identical → ln 7 for any τ.
        let e = [[0.3f32, -0.1, 0.7]; 4];
        for tau in [0.07, 0.5, 2.0] {
            let l = nt_xent(&rows(&e)?, &rows(&e)?, tau)?.to_scalar::<f32>()?;
            assert_close(l as f64, 7f64.ln(), 1e-6);
        }
        Ok(())
    }

    #[test]
    fn tv2_orthogonal_pairs() -> Result<()> {
        // TV2: [a1, a2, b1, b2] = [e1, e2, e1, e2], τ = 0.5 → ln(1 + 2e^{−2}) = 0.2395448.
        let a = [[1f32, 0.0, 0.0], [0.0, 1.0, 0.0]];
        let l = nt_xent(&rows(&a)?, &rows(&a)?, 0.5)?.to_scalar::<f32>()?;
        assert_close(l as f64, 0.2395448, 1e-6);
        assert_close(l as f64, (1.0 + 2.0 * (-2f64).exp()).ln(), 1e-6);
        Ok(())
    }

    #[test]
    fn tv3_general_pairs() -> Result<()> {
        // TV3: a = [n(1,2,0), n(0,1,1)], b = [n(1,1,0), n(1,0,1)], τ = 0.5 → 0.8442249.
        let a = [n3([1.0, 2.0, 0.0]), n3([0.0, 1.0, 1.0])];
        let b = [n3([1.0, 1.0, 0.0]), n3([1.0, 0.0, 1.0])];
        let l = nt_xent(&rows(&a)?, &rows(&b)?, 0.5)?.to_scalar::<f32>()?;
        assert_close(l as f64, 0.8442249, 1e-6);
        // Unnormalised inputs give the same value: normalisation is part of the loss.
        let a2: Vec<[f32; 3]> = a
            .iter()
            .map(|r| [r[0] * 3.0, r[1] * 3.0, r[2] * 3.0])
            .collect();
        let l2 = nt_xent(&rows(&a2)?, &rows(&b)?, 0.5)?.to_scalar::<f32>()?;
        assert_close(l2 as f64, 0.8442249, 1e-6);
        Ok(())
    }

    #[test]
    fn finite_difference_gradient() -> Result<()> {
        let a = [
            [0.3f32, -1.2, 0.5, 0.1],
            [1.0, 0.2, -0.3, 0.8],
            [-0.4, 0.9, 0.6, -0.2],
        ];
        let b = [
            [0.1f32, -0.8, 0.7, 0.3],
            [0.9, 0.1, 0.2, 0.5],
            [-0.6, 1.1, 0.1, 0.0],
        ];
        let zb = rows(&b)?.to_dtype(DType::F64)?;
        check_gradient(&rows(&a)?, |za| nt_xent(za, &zb, 0.3), 2e-3)?;
        let za = rows(&a)?.to_dtype(DType::F64)?;
        check_gradient(&rows(&b)?, |zb| nt_xent(&za, zb, 0.3), 2e-3)
    }

    #[test]
    fn extra_positive_matches_the_closed_form_c2() -> Result<()> {
        // C2: one positive at s_p and K negatives at s_n give ln(1 + K e^{(s_n − s_p)/τ}). Row 0 of
        // z_a = [e1, e2], z_b = [e1, e2]: its negatives are z_a[1] = z_b[1] = e2 (s_n = 0, K = 2),
        // the positive n(1, 1) has s_p = 1/√2.
        let z = rows(&[[1f32, 0.0], [0.0, 1.0]])?;
        let p = rows(&[[1f32, 1.0]])?;
        for tau in [0.1, 0.5] {
            let l = nt_xent_extra_positives(&z, &z, &[0], &p, tau)?.to_scalar::<f32>()?;
            let want = (1.0 + 2.0 * (-(0.5f64).sqrt() / tau).exp()).ln();
            // f32 log-softmax of a probability near 1: absolute error ~1e-7 on 0.0017 at τ = 0.1.
            assert_close(l as f64, want, 1e-4);
        }
        let none = nt_xent_extra_positives(&z, &z, &[], &p.narrow(0, 0, 0)?, 0.1)?;
        assert_eq!(none.to_scalar::<f32>()?, 0.0);
        assert!(nt_xent_extra_positives(&z, &z, &[2], &p, 0.1).is_err());
        let a = [[0.3f32, -1.2, 0.5], [1.0, 0.2, -0.3], [-0.4, 0.9, 0.6]];
        let zb = rows(&[[0.1f32, -0.8, 0.7], [0.9, 0.1, 0.2], [-0.6, 1.1, 0.1]])?
            .to_dtype(DType::F64)?;
        let pp = rows(&[[0.2f32, 0.1, 0.9], [0.5, -0.5, 0.1]])?.to_dtype(DType::F64)?;
        check_gradient(
            &rows(&a)?,
            |za| nt_xent_extra_positives(za, &zb, &[2, 0], &pp, 0.3),
            2e-3,
        )
    }

    #[test]
    fn rejects_bad_shapes_and_temperature() {
        let dev = Device::Cpu;
        let a = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        let b = Tensor::zeros((3, 3), DType::F32, &dev).unwrap();
        assert!(nt_xent(&a, &b, 0.5).is_err());
        assert!(nt_xent(&a, &a, 0.0).is_err());
    }
}
