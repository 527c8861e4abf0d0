//! DenseCL's dense term: an InfoNCE per query cell whose positive is the key view's cell most
//! similar in backbone features, against a queue of pooled dense keys.
//!
//! Wang, Zhang, Shen, Kong, Li. "Dense Contrastive Learning for Self-Supervised Visual
//! Pre-Training", CVPR 2021 (arXiv 2011.09157); reference `WXinlong/DenseCL`
//! `openselfsup/models/densecl.py` (as carried into mmselfsup).
//!
//! For query cells `q` (`[B, D, S]`, the dense head of the online encoder), key cells `k`
//! (`[B, D, S]`, the momentum encoder's dense head) and the two views' backbone feature maps
//! `f_q`, `f_k` (`[B, C, S]`), every map L2-normalised over its channels:
//! `m(b, s) = argmax_t f_q[b,:,s]·f_k[b,:,t]` (the match, no gradient), then the InfoNCE of each
//! cell, `Z = [q_s·k_m(s) | q_s Qᵀ] / τ`, `L = mean over the B·S cells of lse(Z) − Z_0`.
//! The queue `Q` (`[K, D]`) holds the key view's dense head output averaged over cells and
//! normalised (the reference's `k2`). DenseCL's total is `(1 − λ)·L_global + λ·L_dense`
//! (λ = 0.5, τ = 0.2), the global term being MoCo v2's.

use crate::info_nce::logits_ce_first;
use crate::normalize::{l2_normalize, l2_normalize_dim};
use gyre_kernels::{DType, Result, Tensor};

/// For every cell of the query map, the index of the key map's most similar cell (cosine of the
/// backbone features), `[B, S]` as u32. Ties go to the lower index.
pub fn backbone_matches(f_q: &Tensor, f_k: &Tensor) -> Result<Tensor> {
    let q = l2_channels(&f_q.detach())?;
    let k = l2_channels(&f_k.detach())?;
    // [B, S, C] · [B, C, T] → [B, S, T]
    let sim = q.transpose(1, 2)?.contiguous()?.matmul(&k)?;
    sim.argmax_keepdim(2)?.squeeze(2)?.to_dtype(DType::U32)
}

/// L2-normalises a `[B, C, S]` map over its channels (dim 1), as `F.normalize`
/// ([`l2_normalize_dim`]: a finite gradient at an all-zero cell).
pub fn l2_channels(x: &Tensor) -> Result<Tensor> {
    l2_normalize_dim(x, 1)
}

/// The key cells each query cell is matched to: `[B·S, D]` rows, in query-cell order.
fn gather_keys(k: &Tensor, matches: &Tensor) -> Result<Tensor> {
    let (b, d, s) = k.dims3()?;
    let rows = k.transpose(1, 2)?.contiguous()?.reshape((b * s, d))?;
    let t = matches.dim(1)?;
    let offsets = Tensor::arange(0u32, b as u32, matches.device())?
        .affine(s as f64, 0.0)?
        .to_dtype(DType::U32)?
        .reshape((b, 1))?;
    let global = matches.broadcast_add(&offsets)?.reshape(b * t)?;
    rows.index_select(&global, 0)
}

/// DenseCL's dense InfoNCE (see the module docs). `q` has the gradient; `k`, `queue` and the
/// matches are detached. `q` and `k` are normalised here; the queue is used as given.
pub fn densecl_dense_loss(
    q: &Tensor,
    k: &Tensor,
    matches: &Tensor,
    queue: &Tensor,
    tau: f64,
) -> Result<Tensor> {
    let (b, d, s) = q.dims3()?;
    let q_rows = l2_channels(q)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b * s, d))?;
    let k_rows = gather_keys(&l2_channels(&k.detach())?, matches)?;
    let pos = (&q_rows * &k_rows)?.sum(1)?;
    let neg = q_rows.matmul(&queue.detach().t()?)?;
    logits_ce_first(&pos, &neg, tau)
}

/// The dense queue's entry for each image: the key cells' mean, normalised, `[B, D]`.
pub fn pooled_keys(k: &Tensor) -> Result<Tensor> {
    l2_normalize(&k.detach().mean(2)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient};
    use gyre_kernels::Device;

    /// `[1, C, S]` from cell vectors.
    fn map(cells: &[&[f32]]) -> Tensor {
        let c = cells[0].len();
        let mut v = vec![0f32; c * cells.len()];
        for (s, cell) in cells.iter().enumerate() {
            for (ch, x) in cell.iter().enumerate() {
                v[ch * cells.len() + s] = *x;
            }
        }
        Tensor::from_vec(v, (1, c, cells.len()), &Device::Cpu).unwrap()
    }

    #[test]
    fn each_cell_is_matched_to_its_most_similar_key_cell() -> Result<()> {
        // Key cells are the query cells permuted (3, 0, 2, 1) and rescaled: cosine ignores scale.
        let fq = map(&[&[1., 0., 0.], &[0., 1., 0.], &[0., 0., 1.], &[1., 1., 0.]]);
        let fk = map(&[&[0., 2., 0.], &[3., 3., 0.], &[0., 0., 5.], &[4., 0., 0.]]);
        let m = backbone_matches(&fq, &fk)?.to_vec2::<u32>()?;
        assert_eq!(m, [[3, 0, 2, 1]]);
        // A batch of two: matches index within each image.
        let two = Tensor::cat(&[&fq, &fq], 0)?;
        let two_k = Tensor::cat(&[&fk, &fq], 0)?;
        assert_eq!(
            backbone_matches(&two, &two_k)?.to_vec2::<u32>()?,
            [[3, 0, 2, 1], [0, 1, 2, 3]]
        );
        Ok(())
    }

    /// Closed form: with orthonormal cells, each query cell's matched key equal to itself and
    /// the queue holding K unit vectors orthogonal to every cell, every row's logits are
    /// `[1/τ, 0, …, 0]`, so `L = ln(e^{1/τ} + K) − 1/τ`.
    #[test]
    fn closed_form_with_orthogonal_queue() -> Result<()> {
        let q = map(&[&[1., 0., 0., 0.], &[0., 1., 0., 0.]]);
        let k = map(&[&[0., 2., 0., 0.], &[3., 0., 0., 0.]]); // matched: cell 0 → 1, 1 → 0
        let matches = Tensor::new(&[[1u32, 0]], &Device::Cpu)?;
        let queue = Tensor::new(
            &[[0f32, 0., 1., 0.], [0., 0., 0., 1.], [0., 0., 0.6, 0.8]],
            &Device::Cpu,
        )?;
        let tau = 0.2;
        let l = densecl_dense_loss(&q, &k, &matches, &queue, tau)?.to_scalar::<f32>()? as f64;
        assert_close(l, ((1.0f64 / tau).exp() + 3.0).ln() - 1.0 / tau, 1e-5);
        // A wrong match makes the positive logit 0: L = ln(1 + K) for every cell.
        let wrong = Tensor::new(&[[0u32, 1]], &Device::Cpu)?;
        let l = densecl_dense_loss(&q, &k, &wrong, &queue, tau)?.to_scalar::<f32>()? as f64;
        assert_close(l, 4f64.ln(), 1e-5);
        Ok(())
    }

    /// A numeric vector: two cells, one queue entry, worked by hand.
    #[test]
    fn numeric_vector() -> Result<()> {
        // q cells (0.6, 0.8) and (1, 0); key cells (0, 1) and (0.8, 0.6); matches 0 → 0, 1 → 1;
        // queue (1, 0); τ = 0.5.
        // Cell 0: pos 0.8, neg 0.6 → lse(1.6, 1.2) − 1.6; cell 1: pos 0.8, neg 1 → lse(1.6, 2) − 1.6.
        let q = map(&[&[0.6, 0.8], &[1.0, 0.0]]);
        let k = map(&[&[0.0, 1.0], &[0.8, 0.6]]);
        let m = Tensor::new(&[[0u32, 1]], &Device::Cpu)?;
        let queue = Tensor::new(&[[1f32, 0.]], &Device::Cpu)?;
        let lse = |a: f64, b: f64| (a.exp() + b.exp()).ln();
        let want = ((lse(1.6, 1.2) - 1.6) + (lse(1.6, 2.0) - 1.6)) / 2.0;
        let got = densecl_dense_loss(&q, &k, &m, &queue, 0.5)?.to_scalar::<f32>()? as f64;
        assert_close(got, want, 1e-5);
        // The pooled key: mean of (0, 1) and (0.8, 0.6) = (0.4, 0.8), normalised.
        let p = pooled_keys(&k)?.to_vec2::<f32>()?;
        let n = (0.4f32.powi(2) + 0.8f32.powi(2)).sqrt();
        assert!((p[0][0] - 0.4 / n).abs() < 1e-6 && (p[0][1] - 0.8 / n).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let dev = &Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (2, 5, 6), dev)?;
        let k = Tensor::randn(0f32, 1.0, (2, 5, 6), dev)?.to_dtype(DType::F64)?;
        let fq = Tensor::randn(0f32, 1.0, (2, 4, 6), dev)?;
        let fk = Tensor::randn(0f32, 1.0, (2, 4, 6), dev)?;
        let m = backbone_matches(&fq, &fk)?;
        let queue = l2_channels(&Tensor::randn(0f32, 1.0, (7, 5, 1), dev)?)?
            .squeeze(2)?
            .to_dtype(DType::F64)?;
        check_gradient(&q, |x| densecl_dense_loss(x, &k, &m, &queue, 0.2), 1e-4)
    }
}
