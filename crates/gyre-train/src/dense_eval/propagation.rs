//! Label propagation, the CRW (videowalk) protocol (`field.md` §2.3): the first frame's masks
//! are given; each later frame's labels are the affinity-weighted labels of its context — the
//! first frame (always) and the `context` frames before it (the clip front-padded with copies of
//! frame 0) — over the top-k context cells jointly, softmax over those k at temperature τ, the
//! short-term context restricted to cells within `radius` cells; predictions are fed back as
//! soft labels. Scored by J: each object's IoU per frame (1 when it is absent from both
//! truth and prediction), averaged over frames 1..T, then over objects.

use super::{resample, FeatureMap};

/// The protocol's settings; defaults are videowalk's README command.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PropagationConfig {
    pub topk: usize,
    /// In feature cells; only the short-term context is restricted.
    pub radius: f32,
    /// Short-term context frames.
    pub context: usize,
    pub temperature: f32,
}

impl Default for PropagationConfig {
    fn default() -> Self {
        Self {
            topk: 10,
            radius: 12.0,
            context: 20,
            temperature: 0.05,
        }
    }
}

/// Soft labels `[h·w, k]` of a label mask `[height, width]` with labels `0..k`: each label's
/// one-hot map resized bilinearly to the feature grid (videowalk resizes the one-hot masks).
pub fn soft_labels(
    mask: &[u8],
    (height, width): (usize, usize),
    k: usize,
    (h, w): (usize, usize),
) -> Vec<f32> {
    let mut one_hot = vec![0f32; height * width * k];
    for (i, &l) in mask.iter().enumerate() {
        if (l as usize) < k {
            one_hot[i * k + l as usize] = 1.0;
        }
    }
    resample(&one_hot, (height, width), k, (h, w))
}

/// A label map at pixel resolution: soft labels `[h·w, k]` resized bilinearly to
/// `height × width`, then the most likely label of each pixel (the first on ties).
pub fn hard_labels(
    soft: &[f32],
    (h, w): (usize, usize),
    k: usize,
    (height, width): (usize, usize),
) -> Vec<u8> {
    resample(soft, (h, w), k, (height, width))
        .chunks(k)
        .map(|p| {
            let mut best = 0;
            for (l, &a) in p.iter().enumerate() {
                if a > p[best] {
                    best = l;
                }
            }
            best as u8
        })
        .collect()
}

/// Propagates `first` (frame 0's label mask, labels `0..k`, at `height × width`) through the
/// clip's feature maps; returns the predicted mask of every frame (frame 0's is `first`).
pub fn propagate(
    features: &[FeatureMap],
    first: &[u8],
    (height, width): (usize, usize),
    k: usize,
    cfg: &PropagationConfig,
) -> Vec<Vec<u8>> {
    let Some(f0) = features.first() else {
        return Vec::new();
    };
    let (h, w, c) = (f0.h, f0.w, f0.c);
    let cells = h * w;
    let mut soft: Vec<Vec<f32>> = vec![soft_labels(first, (height, width), k, (h, w))];
    let mut masks = vec![first.to_vec()];
    let r2 = cfg.radius * cfg.radius;
    for t in 1..features.len() {
        // Context: frame 0 (long memory, no radius), then frames t − context … t − 1, indices
        // below 0 being frame 0 again (videowalk's front padding).
        let mut ctx: Vec<(usize, bool)> = vec![(0, false)];
        for j in 0..cfg.context {
            let f = t as i64 - cfg.context as i64 + j as i64;
            ctx.push((f.max(0) as usize, true));
        }
        let mut pred = vec![0f32; cells * k];
        let ft = &features[t];
        let mut scores: Vec<(f32, usize, usize)> = Vec::with_capacity(ctx.len() * cells);
        for i in 0..cells {
            let (yi, xi) = ((i / w) as f32, (i % w) as f32);
            let q = &ft.data[i * c..(i + 1) * c];
            scores.clear();
            for (n, &(frame, local)) in ctx.iter().enumerate() {
                let fm = &features[frame];
                for m in 0..cells {
                    if local {
                        let (ym, xm) = ((m / w) as f32, (m % w) as f32);
                        if (ym - yi).powi(2) + (xm - xi).powi(2) >= r2 {
                            continue;
                        }
                    }
                    let dot: f32 = q
                        .iter()
                        .zip(&fm.data[m * c..(m + 1) * c])
                        .map(|(a, b)| a * b)
                        .sum();
                    scores.push((dot / cfg.temperature, n, m));
                }
            }
            // Top-k by score (ties by context order, then cell), softmax over them.
            let kk = cfg.topk.min(scores.len());
            scores.select_nth_unstable_by(kk.saturating_sub(1), |a, b| {
                b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
            });
            let top = &scores[..kk];
            let max = top.iter().map(|s| s.0).fold(f32::NEG_INFINITY, f32::max);
            let z: f32 = top.iter().map(|s| (s.0 - max).exp()).sum();
            for &(sc, n, m) in top {
                let wgt = (sc - max).exp() / z;
                let labels = &soft[ctx[n].0][m * k..(m + 1) * k];
                for (p, l) in pred[i * k..(i + 1) * k].iter_mut().zip(labels) {
                    *p += wgt * l;
                }
            }
        }
        masks.push(hard_labels(&pred, (h, w), k, (height, width)));
        soft.push(pred);
    }
    masks
}

/// J: per object (labels `1..k`), the mean over frames `1..` of the IoU of prediction and
/// truth (1 when both are empty); returns each object's J.
pub fn j_per_object(pred: &[Vec<u8>], truth: &[&[u8]], k: usize) -> Vec<f64> {
    (1..k)
        .map(|o| {
            let frames = pred.len().min(truth.len());
            let mut sum = 0.0;
            for t in 1..frames {
                let (mut inter, mut union) = (0usize, 0usize);
                for (p, g) in pred[t].iter().zip(truth[t]) {
                    let (p, g) = (*p as usize == o, *g as usize == o);
                    inter += (p && g) as usize;
                    union += (p || g) as usize;
                }
                sum += if union == 0 {
                    1.0
                } else {
                    inter as f64 / union as f64
                };
            }
            sum / (frames.max(2) - 1) as f64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dense_eval::raw_patch_features;

    #[test]
    fn soft_labels_of_a_half_split_mask() {
        // 4×4 mask: left half 0, right half 1 → 2×2 grid: left cells all 0, right cells all 1.
        let mask: Vec<u8> = (0..16).map(|i| (i % 4 >= 2) as u8).collect();
        let s = soft_labels(&mask, (4, 4), 2, (2, 2));
        assert_eq!(s, [1., 0., 0., 1., 1., 0., 0., 1.]);
        assert_eq!(hard_labels(&s, (2, 2), 2, (4, 4)), mask);
    }

    /// Identical frames: every cell's top match is itself (in frame 0 and its copies), so every
    /// frame gets frame 0's labels back — the mask through the protocol's bilinear round trip
    /// (down to the cells, up to the pixels). Stripe masks survive it exactly: J = 1.
    #[test]
    fn identical_frames_propagate_perfectly() {
        use rand::Rng;
        let mut rng = gyre_rng::stream([5, 0, 0, 0]);
        let img: Vec<u8> = (0..32 * 32 * 3).map(|_| rng.gen()).collect();
        let f = raw_patch_features(&img, (32, 32), 4, 4);
        let frames = vec![f; 5];
        let cfg = PropagationConfig {
            topk: 1,
            ..PropagationConfig::default()
        };
        // Stripes: rows 8..20 object 1, rows 20..28 object 2.
        let stripes: Vec<u8> = (0..32 * 32)
            .map(|i| match i / 32 {
                8..=19 => 1,
                20..=27 => 2,
                _ => 0,
            })
            .collect();
        let pred = propagate(&frames, &stripes, (32, 32), 3, &cfg);
        assert_eq!(pred.len(), 5);
        assert!(pred.iter().all(|p| p == &stripes));
        let truth: Vec<&[u8]> = vec![&stripes; 5];
        assert_eq!(j_per_object(&pred, &truth, 3), [1.0, 1.0]);
        // A prediction of all background scores J = 0 for both objects.
        let none = vec![vec![0u8; 32 * 32]; 5];
        assert_eq!(j_per_object(&none, &truth, 3), [0.0, 0.0]);
        // A rectangle loses its corners in the round trip, and propagation gives exactly that.
        let mut rect = vec![0u8; 32 * 32];
        for y in 8..20 {
            for x in 4..16 {
                rect[y * 32 + x] = 1;
            }
        }
        let round_trip = hard_labels(
            &soft_labels(&rect, (32, 32), 2, (8, 8)),
            (8, 8),
            2,
            (32, 32),
        );
        assert_ne!(round_trip, rect);
        let pred = propagate(&frames, &rect, (32, 32), 2, &cfg);
        assert!(pred[1..].iter().all(|p| p == &round_trip));
    }

    /// The radius applies to the short-term context only: with radius 0 nothing local is
    /// reachable and every label comes from frame 0 (the long memory).
    #[test]
    fn the_radius_restricts_only_the_short_term_context() {
        use rand::Rng;
        let mut rng = gyre_rng::stream([6, 0, 0, 0]);
        let img: Vec<u8> = (0..16 * 16 * 3).map(|_| rng.gen()).collect();
        let f = raw_patch_features(&img, (16, 16), 4, 4);
        let mask: Vec<u8> = (0..256).map(|i| (i % 16 >= 8) as u8).collect();
        let cfg = PropagationConfig {
            radius: 0.0,
            topk: 3,
            ..PropagationConfig::default()
        };
        let pred = propagate(&vec![f; 3], &mask, (16, 16), 2, &cfg);
        assert_eq!(pred[2], mask);
    }
}
