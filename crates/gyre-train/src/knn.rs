//! Weighted k-nearest-neighbour classification of features, the InstDisc / MoCo-demo monitor
//! (Wu et al., CVPR 2018): cosine similarity to a labelled bank, the k most similar vote with
//! weight `exp(s / t)`, ties go to the lowest class index.

use gyre_kernels::{Device, Result, Tensor};
use rayon::prelude::*;

/// L2-normalised features with labels, row-major `[n, dim]`.
pub struct FeatureSet {
    pub features: Vec<f32>,
    pub labels: Vec<u32>,
    pub dim: usize,
}

impl FeatureSet {
    /// Normalises each row to unit length (zero rows stay zero).
    pub fn new(mut features: Vec<f32>, labels: Vec<u32>, dim: usize) -> Self {
        for row in features.chunks_exact_mut(dim) {
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|x| *x /= n);
        }
        Self {
            features,
            labels,
            dim,
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// The neighbours a kNN vote over a bank of `bank_len` images uses when `k` are asked: all of
/// them when the bank is smaller (callers report this value, not the asked one).
pub fn effective_k(k: usize, bank_len: usize) -> usize {
    k.min(bank_len)
}

/// Checks a kNN neighbour count (the recipe's `eval.knn_k` and `gyre eval --k`).
pub fn check_k(k: usize) -> std::result::Result<(), String> {
    if k == 0 {
        return Err("must be at least 1 neighbour, got 0".into());
    }
    Ok(())
}

/// Checks a kNN temperature (the recipe's `eval.knn_t` and `gyre eval --t`).
pub fn check_t(t: f64) -> std::result::Result<(), String> {
    if !(t > 0.0 && t.is_finite()) {
        return Err(format!("must be a positive number, got {t}"));
    }
    Ok(())
}

/// Predicted class of every query, by the [`effective_k`] most similar bank rows.
pub fn knn_predict(
    bank: &FeatureSet,
    queries: &FeatureSet,
    k: usize,
    t: f64,
    classes: usize,
) -> Result<Vec<u32>> {
    let bad = |p: String| gyre_kernels::Error::Msg(format!("kNN: {p}"));
    check_k(k).map_err(|p| bad(format!("k {p}")))?;
    check_t(t).map_err(|p| bad(format!("t {p}")))?;
    if bank.dim != queries.dim {
        return Err(bad(format!(
            "bank features are {}-d, queries {}-d",
            bank.dim, queries.dim
        )));
    }
    if bank.is_empty() {
        return Err(bad("the bank is empty".into()));
    }
    if let Some(l) = bank.labels.iter().find(|l| **l as usize >= classes) {
        return Err(bad(format!(
            "bank label {l} is not below {classes} classes"
        )));
    }
    let dev = Device::Cpu;
    let b = Tensor::from_slice(&bank.features, (bank.len(), bank.dim), &dev)?;
    let bt = b.t()?.contiguous()?;
    let k = effective_k(k, bank.len());
    let mut preds = Vec::with_capacity(queries.len());
    let chunk = 256;
    for start in (0..queries.len()).step_by(chunk) {
        let n = chunk.min(queries.len() - start);
        let q = Tensor::from_slice(
            &queries.features[start * queries.dim..(start + n) * queries.dim],
            (n, queries.dim),
            &dev,
        )?;
        let sims = q.matmul(&bt)?.flatten_all()?.to_vec1::<f32>()?;
        let chunk_preds: Vec<u32> = sims
            .par_chunks_exact(bank.len())
            .map(|row| {
                let mut idx: Vec<usize> = (0..row.len()).collect();
                if k < row.len() {
                    idx.select_nth_unstable_by(k - 1, |&a, &b| {
                        row[b].total_cmp(&row[a]).then(a.cmp(&b))
                    });
                }
                let mut votes = vec![0f64; classes];
                for &j in &idx[..k] {
                    votes[bank.labels[j] as usize] += (row[j] as f64 / t).exp();
                }
                let mut best = 0;
                for c in 1..classes {
                    if votes[c] > votes[best] {
                        best = c;
                    }
                }
                best as u32
            })
            .collect();
        preds.extend(chunk_preds);
    }
    Ok(preds)
}

/// Top-1 accuracy (a fraction in [0, 1]) of the kNN classifier.
pub fn knn_top1(
    bank: &FeatureSet,
    queries: &FeatureSet,
    k: usize,
    t: f64,
    classes: usize,
) -> Result<f64> {
    let preds = knn_predict(bank, queries, k, t, classes)?;
    let hits = preds
        .iter()
        .zip(&queries.labels)
        .filter(|(p, l)| p == l)
        .count();
    Ok(hits as f64 / queries.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tv11_bank() -> FeatureSet {
        FeatureSet::new(
            vec![1.0, 0.0, 0.8, 0.6, 0.0, 1.0, -1.0, 0.0],
            vec![0, 1, 1, 0],
            2,
        )
    }

    #[test]
    fn tv11_temperature_is_applied() {
        // docs/spec/test-vectors.md TV11: query n(1, 0.2), k = 3: class 0 at t = 0.1, class 1
        // at t = 0.5.
        let q = FeatureSet::new(vec![1.0, 0.2], vec![0], 2);
        assert_eq!(knn_predict(&tv11_bank(), &q, 3, 0.1, 2).unwrap(), vec![0]);
        assert_eq!(knn_predict(&tv11_bank(), &q, 3, 0.5, 2).unwrap(), vec![1]);
        // The scores behind it: t = 0.5 gives [7.107577, 7.555807].
        let s0 = (0.9805807f64 / 0.5).exp();
        let s1 = (0.9021342f64 / 0.5).exp() + (0.1961161f64 / 0.5).exp();
        assert!((s0 - 7.107577).abs() < 1e-5 && (s1 - 7.555807).abs() < 1e-5);
    }

    #[test]
    fn bad_settings_are_errors_and_a_large_k_uses_the_whole_bank() {
        let q = FeatureSet::new(vec![1.0, 0.2], vec![0], 2);
        let e = knn_predict(&tv11_bank(), &q, 0, 0.1, 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("k must be at least 1"), "{e}");
        for t in [0.0, -1.0, f64::NAN] {
            let e = knn_predict(&tv11_bank(), &q, 3, t, 2)
                .unwrap_err()
                .to_string();
            assert!(e.contains("t must be a positive number"), "{e}");
        }
        let wide = FeatureSet::new(vec![1.0, 0.2, 0.0], vec![0], 3);
        assert!(knn_predict(&tv11_bank(), &wide, 3, 0.1, 2).is_err());
        // k = 1000 on a bank of 4: all 4 vote, as k = 4 does.
        assert_eq!(effective_k(1000, 4), 4);
        assert_eq!(
            knn_predict(&tv11_bank(), &q, 1000, 0.5, 2).unwrap(),
            knn_predict(&tv11_bank(), &q, 4, 0.5, 2).unwrap()
        );
    }

    #[test]
    fn ties_go_to_the_lowest_class() {
        let bank = FeatureSet::new(vec![1.0, 0.0, 1.0, 0.0], vec![1, 0], 2);
        let q = FeatureSet::new(vec![1.0, 0.0], vec![0], 2);
        assert_eq!(knn_predict(&bank, &q, 2, 0.1, 2).unwrap(), vec![0]);
        assert_eq!(knn_top1(&bank, &q, 2, 0.1, 2).unwrap(), 1.0);
    }
}
