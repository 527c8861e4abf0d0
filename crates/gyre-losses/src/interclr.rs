//! InterCLR's inter-image term: a query against a memory-bank positive that shares its online
//! cluster label (with a cosine margin) and semi-hard bank negatives with other labels.
//!
//! Xie, Zhan, Liu, Ong, Loy. "Delving into Inter-Image Invariance for Unsupervised Visual
//! Representations", IJCV 2022 (arXiv 2008.11702); reference mmselfsup 0.x
//! `models/algorithms/interclr_moco.py`, `models/memories/interclr_memory.py`.
//!
//! For normalised queries `q̂` (`[B, D]`, gradient) and the bank `M` (`[N, D]`, no gradient):
//! `pos_b = q̂_b·M[pos_b] − margin` (margin −0.5: the positive's logit gets +0.5, a looser
//! boundary), `neg_bj = q̂_b·M[neg_bj]`, `L_inter = CE([pos | neg] / τ, 0)`. InterCLR's loss is
//! `0.75 L_intra + 0.25 L_inter` with `L_intra` = [`crate::info_nce`]. The sampling of `pos` and
//! `neg` (same-label uniform; semi-hard pool then uniform, same-label redrawn) and the online
//! k-means that labels the bank are the caller's bookkeeping.

use crate::info_nce::logits_ce_first;
use crate::normalize::l2_normalize;
use gyre_kernels::{candle::bail, Result, Tensor};

/// InterCLR's inter loss for queries `q` (any scale; normalised here) against `bank` (`[N, D]`,
/// normalised rows, detached here): `pos` holds one bank index per query, `neg` (`[B, M]`
/// indices, row-major) M per query.
pub fn inter_loss(
    q: &Tensor,
    bank: &Tensor,
    pos: &[u32],
    neg: &[u32],
    margin: f64,
    tau: f64,
) -> Result<Tensor> {
    let (b, d) = q.dims2()?;
    let (n, dm) = bank.dims2()?;
    if dm != d || pos.len() != b || b == 0 || !neg.len().is_multiple_of(b) || neg.is_empty() {
        bail!(
            "inter_loss: q [{b}, {d}], bank [{n}, {dm}], {} positives, {} negatives",
            pos.len(),
            neg.len()
        );
    }
    if let Some(bad) = pos.iter().chain(neg).find(|&&i| i as usize >= n) {
        bail!("inter_loss: bank index {bad} out of range for N = {n}");
    }
    let m = neg.len() / b;
    let dev = q.device();
    let sims = l2_normalize(q)?.matmul(&bank.detach().t()?)?; // [B, N]
    let pos_i = Tensor::from_slice(pos, (b, 1), dev)?;
    let pos_l = sims.gather(&pos_i, 1)?.squeeze(1)?.affine(1.0, -margin)?;
    let neg_i = Tensor::from_slice(neg, (b, m), dev)?;
    let neg_l = sims.gather(&neg_i, 1)?;
    logits_ce_first(&pos_l, &neg_l, tau)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient, rows};

    #[test]
    fn tv12_and_c6_margin() -> Result<()> {
        // docs/spec/test-vectors.md TV12: positive cos 0.5, margin −0.5, 4 negatives at cos 0,
        // T = 0.2 → ln(1 + 4e^{-5}) = 0.0265950 (C6: the positive's logit is 1.0/τ).
        let q = rows(&[[1.0, 0.0, 0.0]])?;
        let s = 3f32.sqrt() / 2.0;
        let bank = rows(&[[0.5, s, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])?;
        let l = inter_loss(&q, &bank, &[0], &[1, 2, 1, 2], -0.5, 0.2)?.to_scalar::<f32>()?;
        assert_close(l as f64, 0.0265950, 1e-5);
        Ok(())
    }

    #[test]
    fn gradient_and_index_errors() -> Result<()> {
        let q = rows(&[[0.2, -0.5, 0.9], [1.0, 0.3, -0.2]])?;
        let bank = l2_normalize(&rows(&[
            [0.0, 1.0, 0.0],
            [0.5, 0.5, -0.7],
            [-1.0, 0.0, 0.0],
            [0.3, 0.1, 0.9],
        ])?)?;
        check_gradient(
            &q,
            |q| {
                inter_loss(
                    q,
                    &bank.to_dtype(q.dtype())?,
                    &[3, 0],
                    &[1, 2, 0, 2, 1, 3],
                    -0.5,
                    0.2,
                )
            },
            1e-5,
        )?;
        let e = inter_loss(&q, &bank, &[9, 0], &[1, 2], -0.5, 0.2).unwrap_err();
        assert!(e.to_string().contains("bank index 9"), "{e}");
        Ok(())
    }
}
