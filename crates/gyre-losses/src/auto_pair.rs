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
}

impl Default for AutoPairOptions {
    fn default() -> Self {
        Self {
            keep_fraction: 0.2,
            ramp: 0.1,
            top_n: 1,
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
    let (n0, d0) = queries.dims2()?;
    let (n1, d1) = candidates.dims2()?;
    if d0 != d1 {
        bail!("auto_pair: queries are {d0}-d, candidates {d1}-d");
    }
    if !(0.0..=1.0).contains(&opts.keep_fraction) {
        bail!(
            "auto_pair: keep_fraction must be in [0, 1], got {}",
            opts.keep_fraction
        );
    }
    if opts.top_n == 0 || opts.top_n > n1 {
        bail!("auto_pair: top_n must be in 1..={n1}, got {}", opts.top_n);
    }
    let sim = queries
        .detach()
        .matmul(&candidates.detach().t()?)?
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()?;
    // Per row: the top_n candidates, by similarity descending then index ascending.
    let mut best: Vec<(f32, Vec<u32>)> = sim
        .iter()
        .map(|row| {
            let order =
                |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
            let mut idx: Vec<u32> = (0..n1 as u32).collect();
            // A total order (ties by index), so partial selection is deterministic.
            if opts.top_n < n1 {
                idx.select_nth_unstable_by(opts.top_n - 1, order);
            }
            idx.truncate(opts.top_n);
            idx.sort_by(order);
            (row[idx[0] as usize], idx)
        })
        .collect();
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
    Ok(out)
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
}
