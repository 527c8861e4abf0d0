//! Correspondence by nearest neighbours: each query pixel of image A is matched to the pixel of
//! image B whose feature is most similar (cosine, both maps resized bilinearly to pixel
//! resolution), and scored against the true position by PCK@t: the fraction of queries whose
//! match lies within `t` pixels of the truth.
//!
//! Truth comes from a scene clip's flow ([`scene_queries`]), a stereo pair's disparity (the
//! left pixel `(x, y)` is the right's `(x − d, y)`, [`stereo_queries`]) or a homography
//! ([`homography_queries`]).

use super::FeatureMap;
use gyre_data::dense_gt::{HomographyPair, StereoPair};
use gyre_data::scenes::Flow;
use gyre_kernels::{Device, Result, Tensor};

/// Query pixels of A (`(x, y)` pixel indices) and where each truly is in B (continuous pixel
/// coordinates, pixel centres at half-integers).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Queries {
    pub pixels: Vec<(usize, usize)>,
    pub truth: Vec<[f32; 2]>,
}

/// The pixel of `b` most similar to each query pixel of `a` (maps at pixel resolution, same
/// channels), as `(x, y)`; ties go to the lower index.
pub fn nearest_pixels(
    a: &FeatureMap,
    b: &FeatureMap,
    queries: &[(usize, usize)],
) -> Result<Vec<(usize, usize)>> {
    if queries.is_empty() {
        return Ok(Vec::new());
    }
    let c = a.c;
    let mut q = Vec::with_capacity(queries.len() * c);
    for &(x, y) in queries {
        q.extend_from_slice(a.cell(y * a.w + x));
    }
    let q = Tensor::from_vec(q, (queries.len(), c), &Device::Cpu)?;
    let keys = Tensor::from_slice(&b.data, (b.h * b.w, c), &Device::Cpu)?;
    // Blocks of queries keep the similarity matrix small on large images.
    let mut out = Vec::with_capacity(queries.len());
    let block = (1 << 22) / (b.h * b.w).max(1);
    for start in (0..queries.len()).step_by(block.max(1)) {
        let len = block.max(1).min(queries.len() - start);
        let sim = q.narrow(0, start, len)?.matmul(&keys.t()?)?;
        let idx = sim.argmax(1)?.to_vec1::<u32>()?;
        out.extend(
            idx.into_iter()
                .map(|i| (i as usize % b.w, i as usize / b.w)),
        );
    }
    Ok(out)
}

/// The distance of each match (its pixel centre) from the truth.
pub fn match_errors(a: &FeatureMap, b: &FeatureMap, queries: &Queries) -> Result<Vec<f32>> {
    let matched = nearest_pixels(a, b, &queries.pixels)?;
    Ok(matched
        .iter()
        .zip(&queries.truth)
        .map(|(&(x, y), t)| (x as f32 + 0.5 - t[0]).hypot(y as f32 + 0.5 - t[1]))
        .collect())
}

/// PCK at each threshold: the fraction of `errors` at most `t`.
pub fn pck(errors: &[f32], thresholds: &[f32]) -> Vec<f64> {
    thresholds
        .iter()
        .map(|&t| {
            if errors.is_empty() {
                return f64::NAN;
            }
            errors.iter().filter(|&&e| e <= t).count() as f64 / errors.len() as f64
        })
        .collect()
}

/// Queries on a `step`-pixel grid of a scene frame: the pixels whose flow is valid (inside the
/// other frame and visible there), the truth their flow's end.
pub fn scene_queries(flow: &Flow, step: usize) -> Queries {
    let s = flow.size;
    let mut q = Queries::default();
    for y in (step / 2..s).step_by(step.max(1)) {
        for x in (step / 2..s).step_by(step.max(1)) {
            let i = y * s + x;
            if flow.valid[i] {
                let d = flow.displacement[i];
                q.pixels.push((x, y));
                q.truth.push([x as f32 + 0.5 + d[0], y as f32 + 0.5 + d[1]]);
            }
        }
    }
    q
}

/// Queries on a `step`-pixel grid of the left image at `scale` (working pixels per original
/// pixel): the pixels with a known disparity whose match is inside the right image.
pub fn stereo_queries(pair: &StereoPair, scale: f32, step: usize) -> Queries {
    let (w, h) = (pair.left.width, pair.left.height);
    let (ww, wh) = ((w as f32 * scale) as usize, (h as f32 * scale) as usize);
    let mut q = Queries::default();
    for y in (step / 2..wh).step_by(step.max(1)) {
        for x in (step / 2..ww).step_by(step.max(1)) {
            // The working pixel's centre in original pixels, and its original pixel.
            let (ox, oy) = ((x as f32 + 0.5) / scale, (y as f32 + 0.5) / scale);
            let (px, py) = ((ox as usize).min(w - 1), (oy as usize).min(h - 1));
            let d = pair.disparity[py * w + px];
            if d.is_nan() || ox - d < 0.0 {
                continue;
            }
            q.pixels.push((x, y));
            q.truth.push([(ox - d) * scale, oy * scale]);
        }
    }
    q
}

/// Queries on a `step`-pixel grid of the first image at `scale`, mapped by the homography
/// (pixel positions as coordinates), kept when inside the second image.
pub fn homography_queries(pair: &HomographyPair, scale: f32, step: usize) -> Queries {
    let (w, h) = (pair.first.width, pair.first.height);
    let (ww, wh) = ((w as f32 * scale) as usize, (h as f32 * scale) as usize);
    let (w2, h2) = (pair.second.width as f64, pair.second.height as f64);
    let mut q = Queries::default();
    for y in (step / 2..wh).step_by(step.max(1)) {
        for x in (step / 2..ww).step_by(step.max(1)) {
            // The homography maps pixel positions (pixel centres at integers).
            let (ox, oy) = (
                (x as f64 + 0.5) / scale as f64 - 0.5,
                (y as f64 + 0.5) / scale as f64 - 0.5,
            );
            let [u, v] = pair.map(ox, oy);
            if u < -0.5 || v < -0.5 || u >= w2 - 0.5 || v >= h2 - 0.5 {
                continue;
            }
            q.pixels.push((x, y));
            q.truth.push([
                ((u + 0.5) * scale as f64) as f32,
                ((v + 0.5) * scale as f64) as f32,
            ]);
        }
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dense_eval::raw_patch_features;
    use gyre_data::dense_gt::Rgb;

    fn texture(w: usize, h: usize, seed: u64) -> Vec<u8> {
        use rand::Rng;
        let mut rng = gyre_rng::stream([seed, 0, 0, 0]);
        (0..w * h * 3).map(|_| rng.gen::<u8>()).collect()
    }

    /// Identical frames, zero flow: every pixel's nearest neighbour is itself, PCK 1.0 at every
    /// threshold.
    #[test]
    fn identical_frames_give_pck_one() -> Result<()> {
        let img = texture(32, 32, 1);
        let f = raw_patch_features(&img, (32, 32), 1, 5);
        let flow = Flow {
            size: 32,
            displacement: vec![[0.0; 2]; 32 * 32],
            valid: vec![true; 32 * 32],
        };
        let q = scene_queries(&flow, 4);
        assert_eq!(q.pixels.len(), 64);
        let e = match_errors(&f, &f, &q)?;
        assert_eq!(pck(&e, &[1.0, 2.0, 4.0, 8.0]), [1.0; 4]);
        Ok(())
    }

    /// A frame shifted by (3, 2) pixels, with that flow: raw patches find the shift (interior
    /// queries); claiming zero flow instead gives PCK@1 = 0.
    #[test]
    fn a_shifted_texture_is_found_and_a_wrong_truth_is_scored_as_wrong() -> Result<()> {
        let (s, (dx, dy)) = (40usize, (3usize, 2usize));
        let a = texture(s, s, 2);
        let mut b = texture(s, s, 3);
        for y in 0..s - dy {
            for x in 0..s - dx {
                for c in 0..3 {
                    b[((y + dy) * s + x + dx) * 3 + c] = a[(y * s + x) * 3 + c];
                }
            }
        }
        let (fa, fb) = (
            raw_patch_features(&a, (s, s), 1, 5),
            raw_patch_features(&b, (s, s), 1, 5),
        );
        let mut valid = vec![false; s * s];
        for y in 3..s - dy - 3 {
            for x in 3..s - dx - 3 {
                valid[y * s + x] = true;
            }
        }
        let flow = Flow {
            size: s,
            displacement: vec![[dx as f32, dy as f32]; s * s],
            valid: valid.clone(),
        };
        let q = scene_queries(&flow, 3);
        let e = match_errors(&fa, &fb, &q)?;
        assert_eq!(pck(&e, &[0.0]), [1.0]);
        let zero = Flow {
            displacement: vec![[0.0; 2]; s * s],
            valid,
            size: s,
        };
        let e = match_errors(&fa, &fb, &scene_queries(&zero, 3))?;
        assert_eq!(pck(&e, &[1.0]), [0.0]);
        // √13 ≈ 3.61 away: inside PCK@4.
        assert_eq!(pck(&e, &[4.0]), [1.0]);
        Ok(())
    }

    #[test]
    fn stereo_and_homography_truth_follow_their_conventions() {
        let rgb = |w, h| Rgb {
            width: w,
            height: h,
            pixels: vec![0; w * h * 3],
        };
        let mut disparity = vec![f32::NAN; 8 * 4];
        disparity[2 * 8 + 6] = 4.0; // original pixel (6, 2) is the right's (2, 2)
        disparity[3 * 8 + 7] = 4.0;
        let pair = StereoPair {
            name: "t",
            left: rgb(8, 4),
            right: rgb(8, 4),
            disparity,
        };
        let q = stereo_queries(&pair, 1.0, 1);
        assert_eq!(q.pixels, [(6, 2), (7, 3)]);
        assert_eq!(q.truth, [[2.5, 2.5], [3.5, 3.5]]);
        // At half scale, working pixel (3, 1) is centred on original (7, 3), whose match (3, 3)
        // is (1.5, 1.5) in working pixels; no other working pixel is centred on a known one.
        let q = stereo_queries(&pair, 0.5, 1);
        assert_eq!(q.pixels, [(3, 1)]);
        assert_eq!(q.truth, [[1.5, 1.5]]);
        let h = HomographyPair {
            name: "t",
            first: rgb(8, 8),
            second: rgb(8, 8),
            h: [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]],
        };
        let q = homography_queries(&h, 1.0, 1);
        // A translation by (2, −1): x in 0..6, y in 1..8 stay inside.
        assert_eq!(q.pixels.len(), 6 * 7);
        let i = q.pixels.iter().position(|&p| p == (0, 1)).unwrap();
        assert_eq!(q.truth[i], [2.5, 0.5]);
    }
}
