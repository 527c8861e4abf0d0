//! IRC auto-pairing: the first hop of a circulation walk names, for each query, its most similar
//! candidate; the most confident of those matches become extra positives for the base loss.
//!
//! Pang, Wei, Lin, Lu. "Implicit Relation Circulation", IEEE TPAMI 2025; released code
//! `BoPang1996/IRC`, `pretrain/criterion.py::get_matching_matrix` (methods.md §3.2, §9.5):
//! `j*(i) = argmax_j G_0[i]·G_1[j]` (equivalently `argmax_j A_0[i, j]`: the softmax is monotone),
//! `score_i = max_j G_0[i]·G_1[j]` (the raw similarity, as in the code), rows kept when their
//! score is among the top ρ fraction of the batch (`cycle_top_percent = 20`), weighted by the ramp
//! `w(step) = min(1, step / (ramp · total))` (`gradual_cycle = 0.1`). With `top_n > 1` the match
//! is the mean of the n best candidates (`cycle_soft_num`). Nothing here carries a gradient: the
//! caller gathers the matched features (with or without gradient) and uses them as positives.
//!
//! **Balanced** matches (`balance`, gyre's option, not the IRC code's): the similarities go
//! through Sinkhorn–Knopp first (SwAV's equipartition, [`crate::swav::sinkhorn_knopp`]), so that
//! every candidate carries the same share of the queries' mass; each query's match is then the
//! best candidate of its balanced row, scored by its code value. A candidate that is near every
//! query (a hub) is scaled down for all of them, and the matches spread over the candidates.

use gyre_kernels::candle::bail;
use gyre_kernels::{DType, Result, Tensor};

/// Options of auto-pairing.
#[derive(Debug, Clone, Copy)]
pub struct AutoPairOptions {
    /// ρ: fraction of the batch's rows kept, by descending match score (0.2 in the IRC code).
    pub keep_fraction: f64,
    /// Fraction of training over which the weight ramps linearly from 0 to 1 (0.1 in the code).
    pub ramp: f64,
    /// Candidates averaged per match (1: the top-1 neighbour).
    pub top_n: usize,
    /// Match on the Sinkhorn-balanced similarities instead of the raw ones (`None`: the IRC
    /// code's raw top-1).
    pub balance: Option<Balance>,
}

/// Sinkhorn–Knopp settings for balanced matches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Balance {
    /// ε of `exp(similarity / ε)`.
    pub epsilon: f64,
    /// Alternations of the candidate (column) and query (row) normalisations.
    pub iterations: usize,
}

impl Default for Balance {
    /// SwAV's: ε 0.05, 3 iterations.
    fn default() -> Self {
        Self {
            epsilon: crate::swav::SWAV_EPSILON,
            iterations: crate::swav::SWAV_SINKHORN_ITERATIONS,
        }
    }
}

impl Default for AutoPairOptions {
    fn default() -> Self {
        Self {
            keep_fraction: 0.2,
            ramp: 0.1,
            top_n: 1,
            balance: None,
        }
    }
}

/// The kept matches, ordered by descending score.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoPairs {
    /// Row of each kept query in `G_0`.
    pub query: Vec<u32>,
    /// Its `top_n` best candidates in `G_1`, best first (`query.len() × top_n`, row-major).
    pub matched: Vec<u32>,
    /// Its match score `max_j G_0[i]·G_1[j]`.
    pub score: Vec<f32>,
    pub top_n: usize,
    /// The ramp weight `w(step)`, the same for every pair of the step.
    pub weight: f64,
}

impl AutoPairs {
    /// The best candidate of each kept query.
    pub fn top1(&self) -> impl Iterator<Item = u32> + '_ {
        self.matched.iter().step_by(self.top_n.max(1)).copied()
    }

    /// The matched features: for each kept query the mean of its `top_n` candidates' rows of
    /// `candidates` (`[n_1, d]`), `[kept, d]`. Carries the gradient of `candidates`, if any.
    pub fn matched_features(&self, candidates: &Tensor) -> Result<Tensor> {
        let d = candidates.dim(1)?;
        let idx = Tensor::from_vec(
            self.matched.clone(),
            self.matched.len(),
            candidates.device(),
        )?;
        candidates
            .index_select(&idx, 0)?
            .reshape((self.query.len(), self.top_n, d))?
            .mean(1)
    }
}

/// Ramp weight `min(1, step / (ramp · total))`; 1 when `ramp` or `total` is 0.
pub fn ramp_weight(step: u64, total: u64, ramp: f64) -> f64 {
    let span = ramp * total as f64;
    if span <= 0.0 {
        1.0
    } else {
        (step as f64 / span).min(1.0)
    }
}

/// Auto-pairs the rows of `queries` (`G_0`, `[n_0, d]`) with `candidates` (`G_1`, `[n_1, d]`), both
/// L2-normalised; `step` of `total` training steps sets the ramp weight. Ties in score or
/// similarity go to the lower index, so the result is deterministic.
pub fn auto_pair(
    queries: &Tensor,
    candidates: &Tensor,
    step: u64,
    total: u64,
    opts: AutoPairOptions,
) -> Result<AutoPairs> {
    let (_, d0) = queries.dims2()?;
    let (n1, d1) = candidates.dims2()?;
    if d0 != d1 {
        bail!("auto_pair: queries are {d0}-d, candidates {d1}-d");
    }
    check_options(opts, n1)?;
    let mut sim = queries.detach().matmul(&candidates.detach().t()?)?;
    if let Some(b) = opts.balance {
        sim = crate::swav::sinkhorn_knopp(&sim, b.epsilon, b.iterations, sim.dim(0)?)?;
    }
    let sim = sim.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let best = sim
        .iter()
        .map(|row| best_of_row(row, 0, opts.top_n))
        .collect();
    Ok(keep_most_confident(best, step, total, opts))
}

/// Auto-pairing within blocks (the released code's per-sample matching: a query only meets the
/// candidates of its own sample): `queries` `[B, n, d]`, `candidates` `[B, m, d]`, both
/// L2-normalised along `d`. Each query's best candidate is searched in its own block; the kept
/// fraction ρ is taken over all `B·n` queries together (the code's global top 20% of the batch).
/// Indices are flat: query `b·n + i`, candidate `b·m + j` (rows of the blocks stacked).
pub fn auto_pair_blocks(
    queries: &Tensor,
    candidates: &Tensor,
    step: u64,
    total: u64,
    opts: AutoPairOptions,
) -> Result<AutoPairs> {
    if opts.balance.is_some() {
        bail!("auto_pair_blocks: balanced matches are not implemented within blocks");
    }
    let (b0, _, d0) = queries.dims3()?;
    let (b1, m, d1) = candidates.dims3()?;
    if b0 != b1 || d0 != d1 {
        bail!(
            "auto_pair_blocks: queries {:?} and candidates {:?} differ in blocks or width",
            queries.dims(),
            candidates.dims()
        );
    }
    check_options(opts, m)?;
    let sim = queries
        .detach()
        .matmul(&candidates.detach().transpose(1, 2)?)?
        .to_dtype(DType::F32)?
        .to_vec3::<f32>()?;
    let best = sim
        .iter()
        .enumerate()
        .flat_map(|(b, rows)| {
            rows.iter()
                .map(move |row| best_of_row(row, (b * m) as u32, opts.top_n))
        })
        .collect();
    Ok(keep_most_confident(best, step, total, opts))
}

fn check_options(opts: AutoPairOptions, n1: usize) -> Result<()> {
    if !(0.0..=1.0).contains(&opts.keep_fraction) {
        bail!(
            "auto_pair: keep_fraction must be in [0, 1], got {}",
            opts.keep_fraction
        );
    }
    if opts.top_n == 0 || opts.top_n > n1 {
        bail!("auto_pair: top_n must be in 1..={n1}, got {}", opts.top_n);
    }
    Ok(())
}

/// A row's `top_n` candidates, by similarity descending then index ascending (a total order, so
/// partial selection is deterministic), as indices plus `offset`; and the best similarity.
fn best_of_row(row: &[f32], offset: u32, top_n: usize) -> (f32, Vec<u32>) {
    let n1 = row.len();
    let order = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    let mut idx: Vec<u32> = (0..n1 as u32).collect();
    if top_n < n1 {
        idx.select_nth_unstable_by(top_n - 1, order);
    }
    idx.truncate(top_n);
    idx.sort_by(order);
    let score = row[idx[0] as usize];
    (score, idx.into_iter().map(|j| j + offset).collect())
}

/// The top ρ of the rows by score (ties to the lower row), best first.
fn keep_most_confident(
    mut best: Vec<(f32, Vec<u32>)>,
    step: u64,
    total: u64,
    opts: AutoPairOptions,
) -> AutoPairs {
    let n0 = best.len();
    let keep = ((opts.keep_fraction * n0 as f64).ceil() as usize).min(n0);
    let mut order: Vec<usize> = (0..n0).collect();
    order.sort_by(|&a, &b| best[b].0.total_cmp(&best[a].0).then(a.cmp(&b)));
    order.truncate(keep);
    let mut out = AutoPairs {
        query: Vec::with_capacity(keep),
        matched: Vec::with_capacity(keep * opts.top_n),
        score: Vec::with_capacity(keep),
        top_n: opts.top_n,
        weight: ramp_weight(step, total, opts.ramp),
    };
    for i in order {
        let (score, idx) = std::mem::take(&mut best[i]);
        out.query.push(i as u32);
        out.score.push(score);
        out.matched.extend(idx);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::rows;

    #[test]
    fn keeps_the_most_confident_top1_matches() -> Result<()> {
        // Query 0 matches candidate 2 at 1.0, query 1 candidate 0 at 0.8, query 2 candidate 1
        // at 0.6, query 3 candidate 1 at 0.5 (rows need not be unit length for the ranking).
        let q = rows(&[
            [0f32, 0.0, 1.0],
            [0.8, 0.0, 0.0],
            [0.0, 0.6, 0.0],
            [0.0, 0.5, 0.1],
        ])?;
        let c = rows(&[[1f32, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])?;
        let opts = AutoPairOptions {
            keep_fraction: 0.5,
            ramp: 0.1,
            top_n: 1,
            balance: None,
        };
        let p = auto_pair(&q, &c, 5, 100, opts)?;
        assert_eq!(p.query, vec![0, 1]);
        assert_eq!(p.matched, vec![2, 0]);
        assert_eq!(p.score, vec![1.0, 0.8]);
        assert!((p.weight - 0.5).abs() < 1e-12); // step 5 of a 10-step ramp
                                                 // ρ = 0.2 of 4 rows keeps ⌈0.8⌉ = 1.
        let p = auto_pair(&q, &c, 50, 100, AutoPairOptions::default())?;
        assert_eq!((p.query.clone(), p.weight), (vec![0], 1.0));
        Ok(())
    }

    #[test]
    fn top_n_soft_match_averages_the_best_candidates() -> Result<()> {
        let q = rows(&[[1f32, 0.2, 0.0]])?;
        let c = rows(&[[1f32, 0.0, 0.0], [0.0, 1.0, 0.0], [0.9, 0.3, 0.0]])?;
        let opts = AutoPairOptions {
            keep_fraction: 1.0,
            ramp: 0.0,
            top_n: 2,
            balance: None,
        };
        let p = auto_pair(&q, &c, 0, 10, opts)?;
        // Similarities 1.0, 0.2, 0.96: best 0 then 2.
        assert_eq!(p.matched, vec![0, 2]);
        assert_eq!(p.top1().collect::<Vec<_>>(), vec![0]);
        assert_eq!(p.weight, 1.0);
        let f = p.matched_features(&c)?.to_vec2::<f32>()?;
        assert!((f[0][0] - 0.95).abs() < 1e-6 && (f[0][1] - 0.15).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn ramp_and_bad_options() -> Result<()> {
        assert_eq!(ramp_weight(0, 1000, 0.1), 0.0);
        assert!((ramp_weight(50, 1000, 0.1) - 0.5).abs() < 1e-12);
        assert_eq!(ramp_weight(500, 1000, 0.1), 1.0);
        let q = rows(&[[1f32, 0.0]])?;
        let bad = AutoPairOptions {
            top_n: 3,
            ..AutoPairOptions::default()
        };
        assert!(auto_pair(&q, &q, 0, 1, bad).is_err());
        let bad = AutoPairOptions {
            keep_fraction: 1.5,
            ..AutoPairOptions::default()
        };
        assert!(auto_pair(&q, &q, 0, 1, bad).is_err());
        Ok(())
    }

    /// Blocks: each query meets only its own block's candidates (a better match in another
    /// block is ignored), flat indices, and ρ over all the blocks' queries together.
    #[test]
    fn blocks_match_within_their_own_sample() -> Result<()> {
        let dev = gyre_kernels::Device::Cpu;
        // Block 0: queries e0, e1; candidates e1, e0. Block 1: queries e0, (e0+e1)/√2;
        // candidates e1, −e0 (so query 0 of block 1 matches nothing well).
        let r = std::f32::consts::FRAC_1_SQRT_2;
        let q = Tensor::new(&[[[1f32, 0.], [0., 1.]], [[1., 0.], [r, r]]], &dev)?;
        let c = Tensor::new(&[[[0f32, 1.], [1., 0.]], [[0., 1.], [-1., 0.]]], &dev)?;
        let opts = AutoPairOptions {
            keep_fraction: 1.0,
            ramp: 0.0,
            top_n: 1,
            balance: None,
        };
        let all = auto_pair_blocks(&q, &c, 0, 10, opts)?;
        // Scores: 1, 1 (block 0), 0 (e0 vs e1 beats −1), r (block 1): sorted 1, 1, r, 0.
        assert_eq!(all.query, vec![0, 1, 3, 2]);
        assert_eq!(all.matched, vec![1, 0, 2, 2]);
        assert!((all.score[2] - r).abs() < 1e-6 && all.score[3].abs() < 1e-6);
        let half = auto_pair_blocks(
            &q,
            &c,
            0,
            10,
            AutoPairOptions {
                keep_fraction: 0.5,
                ..opts
            },
        )?;
        assert_eq!(
            half.query,
            vec![0, 1],
            "ρ over the whole batch, not per block"
        );
        // One block equals the flat form.
        let flat = auto_pair(&q.get(0)?, &c.get(0)?, 3, 10, AutoPairOptions::default())?;
        let blk = auto_pair_blocks(
            &q.narrow(0, 0, 1)?,
            &c.narrow(0, 0, 1)?,
            3,
            10,
            AutoPairOptions::default(),
        )?;
        assert_eq!(flat, blk);
        assert!(auto_pair_blocks(&q, &c.narrow(0, 0, 1)?, 0, 10, opts).is_err());
        Ok(())
    }

    /// A hub candidate near every query takes every raw top-1 match; balanced, the matches
    /// spread, each query going to its own nearest non-hub candidate.
    #[test]
    fn balanced_matches_spread_over_the_candidates() -> Result<()> {
        let q = rows(&[
            [1f32, 0.2, 0.0],
            [1.0, 0.0, 0.2],
            [1.0, -0.2, 0.0],
            [1.0, 0.0, -0.2],
        ])?;
        let q = crate::l2_normalize(&q)?;
        let c = rows(&[
            [1f32, 0.0, 0.0],
            [0.7, 0.7, 0.0],
            [0.7, 0.0, 0.7],
            [0.7, -0.7, 0.0],
            [0.7, 0.0, -0.7],
        ])?;
        let c = crate::l2_normalize(&c)?;
        let raw = AutoPairOptions {
            keep_fraction: 1.0,
            ramp: 0.0,
            top_n: 1,
            balance: None,
        };
        let p = auto_pair(&q, &c, 0, 1, raw)?;
        assert!(p.top1().all(|j| j == 0), "{:?}", p.matched);
        let balanced = AutoPairOptions {
            balance: Some(Balance {
                epsilon: 0.05,
                iterations: 50,
            }),
            ..raw
        };
        let p = auto_pair(&q, &c, 0, 1, balanced)?;
        let mut by_query: Vec<(u32, u32)> = p.query.iter().copied().zip(p.top1()).collect();
        by_query.sort();
        assert_eq!(by_query, [(0, 1), (1, 2), (2, 3), (3, 4)]);
        // Scores are code values: each a share of its query's unit row.
        assert!(
            p.score.iter().all(|&s| s > 0.0 && s <= 1.0),
            "{:?}",
            p.score
        );
        Ok(())
    }
}
