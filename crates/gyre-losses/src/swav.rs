//! SwAV's swapped prediction: each view's prototype scores predict the balanced cluster codes
//! that Sinkhorn–Knopp computes from another view.
//!
//! Caron, Misra, Mairal, Goyal, Bojanowski, Joulin. "Unsupervised Learning of Visual Features by
//! Contrasting Cluster Assignments", NeurIPS 2020 (arXiv 2006.09882); reference
//! `facebookresearch/swav` `main_swav.py` (`distributed_sinkhorn` and the loss loop).
//!
//! **Codes** ([`sinkhorn_knopp`]): from the scores `S` (`[B, K]`, cosine similarities of normalised
//! embeddings to normalised prototypes) the reference makes `Q = exp(S / ε)ᵀ` (`[K, B]`), divides
//! by its sum, then `iterations` times divides each prototype's row by its sum and by `K`, and
//! each sample's column by its sum and by `B`; the codes are `B·Q`ᵀ: every row sums to 1 (after
//! the last column step, exactly), every prototype gets about `B/K` of the batch (the
//! equipartition constraint, approached as the iterations grow). ε = 0.05, 3 iterations. The
//! scores of queued embeddings from past batches can be put before the batch's own rows to make
//! the equipartition hold over more samples; only the batch's rows are returned then.
//!
//! **Loss** ([`swapped_prediction`]): for each assigned view `i` (the two global crops) and every
//! other view `v`, the cross-entropy of `softmax(S_v / τ)` against `q_i`, `τ = 0.1`, averaged over
//! the batch, over the `V − 1` other views, and over the assigned views. The codes carry no
//! gradient (the reference computes them under `torch.no_grad`).

use gyre_kernels::{candle::bail, DType, Result, Tensor};

/// Sinkhorn's entropy ε.
pub const SWAV_EPSILON: f64 = 0.05;
/// Sinkhorn iterations.
pub const SWAV_SINKHORN_ITERATIONS: usize = 3;
/// The softmax temperature τ of the swapped prediction.
pub const SWAV_TEMPERATURE: f64 = 0.1;

/// The balanced soft assignment of each row of `scores` (`[N, K]`) to the `K` columns by
/// Sinkhorn–Knopp (`iterations` alternations, entropy `epsilon`), detached; the last `keep` rows
/// are returned (`[keep, K]`; rows before them, e.g. a queue's, only take part in the balancing).
/// Computed in f64 for any input dtype and returned in the input's dtype. The largest score is
/// subtracted before `exp` (a factor that the first normalisation removes exactly), so that no
/// score overflows.
pub fn sinkhorn_knopp(
    scores: &Tensor,
    epsilon: f64,
    iterations: usize,
    keep: usize,
) -> Result<Tensor> {
    if scores.rank() != 2 {
        bail!("sinkhorn: scores must be [N, K], got {:?}", scores.dims());
    }
    let (n, k) = scores.dims2()?;
    if n == 0 || k == 0 || keep == 0 || keep > n {
        bail!("sinkhorn: need N ≥ 1 rows, K ≥ 1 columns and 1 ≤ keep ≤ N, got [{n}, {k}] and keep {keep}");
    }
    if !(epsilon > 0.0 && epsilon.is_finite()) {
        bail!("sinkhorn: epsilon must be a positive number, got {epsilon}");
    }
    let s = scores.detach().to_dtype(DType::F64)?;
    let top = s.max_all()?;
    // Q: [K, N].
    let mut q = (s.broadcast_sub(&top)? / epsilon)?.exp()?.t()?;
    q = q.broadcast_div(&q.sum_all()?)?;
    for _ in 0..iterations {
        // Each prototype (row) carries 1/K of the mass, each sample (column) 1/N.
        q = (q.broadcast_div(&q.sum_keepdim(1)?)? / k as f64)?;
        q = (q.broadcast_div(&q.sum_keepdim(0)?)? / n as f64)?;
    }
    let codes = (q * n as f64)?.t()?;
    codes.narrow(0, n - keep, keep)?.to_dtype(scores.dtype())
}

/// SwAV's swapped-prediction loss. `scores[v]` is view `v`'s `[B, K]` prototype scores (with
/// gradient), `codes[i]` the codes of assigned view `i` (`[B, K]`, from [`sinkhorn_knopp`]),
/// which must be `scores`' first `codes.len()` views: each predicts every other view.
pub fn swapped_prediction(scores: &[Tensor], codes: &[Tensor], temperature: f64) -> Result<Tensor> {
    let v = scores.len();
    if v < 2 || codes.is_empty() || codes.len() > v {
        bail!(
            "swav: need at least 2 views and 1..=views assigned ones, got {v} views and {} codes",
            codes.len()
        );
    }
    let dims = scores[0].dims().to_vec();
    if dims.len() != 2 {
        bail!("swav: scores must be [B, K], got {dims:?}");
    }
    for t in scores.iter().chain(codes) {
        if t.dims() != dims.as_slice() {
            bail!(
                "swav: every view's scores and codes must be [B, K] = {dims:?}, got {:?}",
                t.dims()
            );
        }
    }
    // Every assigned view has the V − 1 others: the mean over views of their mean is the mean
    // over all pairs.
    crate::softmax::cross_view_soft_cross_entropy(codes, scores, temperature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient, rows};

    fn sums(t: &Tensor, dim: usize) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .sum(dim)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    }

    #[test]
    fn codes_rows_sum_to_one_and_columns_approach_b_over_k() -> Result<()> {
        // Six samples, three prototypes, scores leaning to prototype 0.
        let s = rows(&[
            [0.9, 0.1, -0.2],
            [0.8, 0.3, 0.0],
            [0.7, -0.1, 0.4],
            [0.95, 0.2, 0.1],
            [0.6, 0.5, -0.3],
            [0.85, 0.0, 0.3],
        ])?;
        let (b, k) = (6.0, 3.0);
        for iters in [3, 1000] {
            let q = sinkhorn_knopp(&s, SWAV_EPSILON, iters, 6)?;
            for r in sums(&q, 1) {
                assert_close(r, 1.0, 1e-5);
            }
            let cols = sums(&q, 0);
            let worst = cols.iter().map(|c| (c - b / k).abs()).fold(0.0, f64::max);
            if iters == 1000 {
                // Converged: each prototype gets B/K of the batch.
                assert!(worst < 1e-4, "{cols:?}");
            } else {
                // Three iterations already move most of the mass off prototype 0.
                assert!(cols[0] < 3.0, "{cols:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn one_iteration_by_hand() -> Result<()> {
        // Two samples, two prototypes, ε = 1: Q = exp(S)ᵀ / Σ; rows to 1/2; columns to 1/2;
        // codes = 2 Qᵀ. S = [[0, ln 3], [0, 0]]: exp = [[1, 3], [1, 1]], Q (K×B) = [[1, 1],
        // [3, 1]] / 6; rows: [[1/2, 1/2], [3/4, 1/4]] / 2; columns: sample 0 (1/4, 3/8) → (2/5,
        // 3/5) / 2, sample 1 (1/4, 1/8) → (2/3, 1/3) / 2; codes: [[2/5, 3/5], [2/3, 1/3]].
        let s = rows(&[[0.0, 3f32.ln()], [0.0, 0.0]])?;
        let q = sinkhorn_knopp(&s, 1.0, 1, 2)?.to_vec2::<f32>()?;
        let want = [[0.4, 0.6], [2.0 / 3.0, 1.0 / 3.0]];
        for (g, w) in q.iter().flatten().zip(want.iter().flatten()) {
            assert_close(*g as f64, *w, 1e-6);
        }
        // Keeping the last row only: the same row.
        let last = sinkhorn_knopp(&s, 1.0, 1, 1)?.to_vec2::<f32>()?;
        assert_close(last[0][0] as f64, 2.0 / 3.0, 1e-6);
        Ok(())
    }

    #[test]
    fn a_shared_offset_or_huge_scores_change_nothing() -> Result<()> {
        // In f64, so that adding 100 rounds nothing away.
        let s =
            rows(&[[0.3, -0.2, 0.5], [0.1, 0.4, -0.6], [0.0, 0.2, 0.2]])?.to_dtype(DType::F64)?;
        let q = sinkhorn_knopp(&s, SWAV_EPSILON, 3, 3)?;
        // 100 / ε = 2000: exp would overflow without the shift.
        let moved = sinkhorn_knopp(&(&s + 100.0)?, SWAV_EPSILON, 3, 3)?;
        let d = (q - moved)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(d < 1e-9, "{d}");
        Ok(())
    }

    #[test]
    fn codes_match_the_reference_lines() -> Result<()> {
        // `distributed_sinkhorn` of swav's main_swav.py (world size 1, ε 0.05, 3 iterations) on
        // these scores, in torch 2.15 float64.
        let s = rows(&[
            [0.3, -0.2, 0.5],
            [0.1, 0.4, -0.6],
            [0.0, 0.2, 0.2],
            [0.7, 0.1, -0.1],
        ])?;
        let q = sinkhorn_knopp(&s, SWAV_EPSILON, 3, 4)?.to_vec2::<f32>()?;
        for (g, w) in q.iter().flatten().zip(REFERENCE_CODES.iter().flatten()) {
            assert_close(*g as f64, *w, 1e-5);
        }
        Ok(())
    }
    const REFERENCE_CODES: [[f64; 3]; 4] = [
        [
            4.485089326178756e-4,
            2.352958991892951e-6,
            0.9995491381083903,
        ],
        [
            2.1450407342849348e-5,
            0.999978548864596,
            7.280610624946507e-10,
        ],
        [
            1.1711402073844302e-4,
            0.7388819451658472,
            0.26100094081341435,
        ],
        [
            0.9992859229926667,
            7.094867886361786e-4,
            4.590218697125355e-6,
        ],
    ];

    #[test]
    fn loss_is_the_mean_cross_entropy_over_swapped_views() -> Result<()> {
        // Two views, one-hot codes: each term is −log softmax at the coded prototype.
        let s1 = rows(&[[0.2, 0.0], [0.0, 0.1]])?;
        let s2 = rows(&[[0.0, 0.3], [0.5, 0.0]])?;
        let q1 = rows(&[[1.0, 0.0], [0.0, 1.0]])?;
        let q2 = rows(&[[0.0, 1.0], [1.0, 0.0]])?;
        let t = 0.5;
        let l = swapped_prediction(&[s1, s2], &[q1, q2], t)?.to_scalar::<f32>()? as f64;
        let nll = |a: f64, b: f64| -> f64 { -(a / t - ((a / t).exp() + (b / t).exp()).ln()) };
        // q1 predicts from s2: rows pick 0.0 (vs 0.3) and 0.0 (vs 0.5); q2 from s1: 0.0 (vs
        // 0.2) and 0.0 (vs 0.1).
        let from_s2 = (nll(0.0, 0.3) + nll(0.0, 0.5)) / 2.0;
        let from_s1 = (nll(0.0, 0.2) + nll(0.0, 0.1)) / 2.0;
        assert_close(l, (from_s2 + from_s1) / 2.0, 1e-6);
        Ok(())
    }

    #[test]
    fn loss_matches_the_reference_loop() -> Result<()> {
        // main_swav.py's loop with crops_for_assign [0, 1], 3 crops (the third a local crop),
        // temperature 0.1, codes from distributed_sinkhorn, torch 2.15 float64.
        let views = reference_views()?;
        let codes = [
            sinkhorn_knopp(&views[0], SWAV_EPSILON, 3, 4)?,
            sinkhorn_knopp(&views[1], SWAV_EPSILON, 3, 4)?,
        ];
        let l = swapped_prediction(&views, &codes, SWAV_TEMPERATURE)?.to_scalar::<f32>()? as f64;
        assert_close(l, REFERENCE_LOSS, 1e-5);
        Ok(())
    }
    const REFERENCE_LOSS: f64 = 1.9608960308104257;

    fn reference_views() -> Result<Vec<Tensor>> {
        Ok(vec![
            rows(&[
                [0.3, -0.2, 0.5],
                [0.1, 0.4, -0.6],
                [0.0, 0.2, 0.2],
                [0.7, 0.1, -0.1],
            ])?,
            rows(&[
                [0.2, -0.1, 0.6],
                [0.0, 0.5, -0.4],
                [0.1, 0.1, 0.3],
                [0.6, 0.2, 0.0],
            ])?,
            rows(&[
                [-0.3, 0.2, 0.1],
                [0.4, 0.4, -0.2],
                [0.2, -0.5, 0.3],
                [0.1, 0.0, 0.9],
            ])?,
        ])
    }

    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let views = reference_views()?;
        let codes = [
            sinkhorn_knopp(&views[0], SWAV_EPSILON, 3, 4)?.to_dtype(DType::F64)?,
            sinkhorn_knopp(&views[1], SWAV_EPSILON, 3, 4)?.to_dtype(DType::F64)?,
        ];
        let v1 = views[1].to_dtype(DType::F64)?;
        let v2 = views[2].to_dtype(DType::F64)?;
        // The codes are constants: the gradient reaches every view's scores through the
        // log-softmax only.
        check_gradient(
            &views[0],
            |s| swapped_prediction(&[s.clone(), v1.clone(), v2.clone()], &codes, 0.1),
            1e-5,
        )
    }

    #[test]
    fn bad_shapes_are_errors() -> Result<()> {
        let a = rows(&[[0.1, 0.2], [0.3, 0.4]])?;
        let b = rows(&[[0.1, 0.2, 0.3], [0.3, 0.4, 0.5]])?;
        assert!(
            swapped_prediction(std::slice::from_ref(&a), std::slice::from_ref(&a), 0.1).is_err()
        );
        assert!(
            swapped_prediction(&[a.clone(), b.clone()], std::slice::from_ref(&a), 0.1).is_err()
        );
        assert!(sinkhorn_knopp(&a, 0.05, 3, 3).is_err());
        assert!(sinkhorn_knopp(&a, 0.0, 3, 2).is_err());
        Ok(())
    }
}
