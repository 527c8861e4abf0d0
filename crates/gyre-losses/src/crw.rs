//! The contrastive random walk (CRW): nodes of T frames, walked forward to frame h and back
//! (a palindrome); the walker must return to the node it started from.
//!
//! Jabri, Owens, Efros. "Space-Time Correspondence as a Contrastive Random Walk", NeurIPS 2020
//! (arXiv 2006.14613); reference `ajabri/videowalk` `code/model.py` (methods.md §2, §9.4).
//!
//! For frames `q_t` (`[N, D]` rows, L2-normalised) and `A_t = q_t q_{t+1}ᵀ`:
//! forward `P_t = softmax_row(drop(A_t)/τ)`, backward `P̄_t = softmax_row(drop(A_tᵀ)/τ)`,
//! `W_h = P_0 ⋯ P_{h−1} P̄_{h−1} ⋯ P̄_0`, `L_h = mean_{b,i} −ln(W_h[i,i] + 1e−20)` and
//! `L = mean_h L_h` over the horizons `h = 2 … T−1` (the code never uses the 1-step palindrome
//! in training; pass `horizons = [1]` for the frame-pair cycle of `visualize_frame_pair`).
//!
//! Edge dropout sets an entry to −1e20 (a large finite negative, never −∞: a fully dropped row
//! becomes uniform rather than NaN) with probability p, from a mask keyed on a seed, so a run is
//! reproducible. The forward and backward matrices draw independent masks; the code's in-place
//! quirk (backward built from the already-dropped forward matrix) is not reproduced.
//!
//! Input layout: `[B, T, N, D]` (videowalk's `[B, C, T, N]` is `q.permute((0, 2, 3, 1))`).

use crate::softmax::softmax_rows;
use gyre_kernels::candle::bail;
use gyre_kernels::{Device, IndexOp, Result, Tensor, D};

/// Edge dropout: probability and the seed of its masks.
#[derive(Debug, Clone, Copy)]
pub struct EdgeDropout {
    pub p: f64,
    pub seed: u64,
}

/// The loss and the walk's accuracy.
#[derive(Debug, Clone)]
pub struct CrwOutput {
    /// Scalar `mean_h L_h`.
    pub loss: Tensor,
    /// Per horizon: the fraction of walkers whose most likely end node is their start node.
    pub accuracy: Vec<f64>,
}

/// SplitMix64 of a key: a counter-based uniform in [0, 1), so masks do not depend on call order.
fn uniform(key: u64) -> f64 {
    let mut z = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// `drop(a)`: entries dropped with probability `p` become −1e20. Mask `which` of the step.
fn drop_edges(a: &Tensor, drop: Option<EdgeDropout>, which: u64) -> Result<Tensor> {
    let Some(d) = drop.filter(|d| d.p > 0.0) else {
        return Ok(a.clone());
    };
    let n = a.elem_count();
    let base = d.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ which.wrapping_mul(0x9E37_79B9);
    let keep: Vec<f32> = (0..n as u64)
        .map(|k| {
            if uniform(base ^ (k << 20) ^ k) < d.p {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    let keep = Tensor::from_vec(keep, a.shape(), a.device())?.to_dtype(a.dtype())?;
    let fill = ((keep.ones_like()? - &keep)? * -1e20)?;
    a.mul(&keep)?.add(&fill)
}

/// CRW loss of `frames` (`[B, T, N, D]`, rows L2-normalised) at temperature `tau` over the given
/// palindrome `horizons` (each in `1..T`; `None` = the training default `2 … T−1`).
pub fn crw_loss(
    frames: &Tensor,
    tau: f64,
    horizons: Option<&[usize]>,
    dropout: Option<EdgeDropout>,
) -> Result<CrwOutput> {
    let (b, t, n, _d) = frames.dims4()?;
    if !(tau > 0.0 && tau.is_finite()) {
        bail!("crw: τ must be positive and finite, got {tau}");
    }
    let default: Vec<usize> = (2..t).collect();
    let hs = horizons.unwrap_or(&default);
    if hs.is_empty() {
        bail!("crw: no horizon to walk (T = {t}: the default horizons 2..T−1 need T ≥ 3)");
    }
    if let Some(&h) = hs.iter().find(|&&h| h == 0 || h >= t) {
        bail!("crw: horizon {h} out of range 1..{t}");
    }
    let hmax = *hs.iter().max().expect("non-empty");
    let mut fwd = Vec::with_capacity(hmax);
    let mut bwd = Vec::with_capacity(hmax);
    for s in 0..hmax {
        let a = frames
            .i((.., s))?
            .matmul(&frames.i((.., s + 1))?.transpose(1, 2)?)?;
        let at = a.transpose(1, 2)?.contiguous()?;
        let p = (drop_edges(&a, dropout, 2 * s as u64)? / tau)?;
        let pb = (drop_edges(&at, dropout, 2 * s as u64 + 1)? / tau)?;
        fwd.push(softmax_rows(&p)?);
        bwd.push(softmax_rows(&pb)?);
    }
    let eye = Tensor::eye(n, frames.dtype(), frames.device())?.unsqueeze(0)?;
    let mut total: Option<Tensor> = None;
    let mut accuracy = Vec::with_capacity(hs.len());
    for &h in hs {
        let mut w = fwd[0].clone();
        for p in &fwd[1..h] {
            w = w.matmul(p)?;
        }
        for p in bwd[..h].iter().rev() {
            w = w.matmul(p)?;
        }
        let diag = w.broadcast_mul(&eye)?.sum(D::Minus1)?; // [B, N]
        let lh = (diag + 1e-20)?.log()?.mean_all()?.neg()?;
        total = Some(match total {
            None => lh,
            Some(t) => (t + lh)?,
        });
        let arg = w
            .detach()
            .argmax(D::Minus1)?
            .flatten_all()?
            .to_vec1::<u32>()?;
        let hits = arg
            .iter()
            .enumerate()
            .filter(|(k, &a)| a as usize == k % n)
            .count();
        accuracy.push(hits as f64 / (b * n) as f64);
    }
    let loss = (total.expect("non-empty") / hs.len() as f64)?;
    Ok(CrwOutput { loss, accuracy })
}

/// `[1, T, N, D]` frames from per-frame rows (test and example helper).
pub fn frames_from_rows(rows: &[Vec<Vec<f32>>]) -> Result<Tensor> {
    let t = rows.len();
    let n = rows.first().map_or(0, |f| f.len());
    let d = rows.first().and_then(|f| f.first()).map_or(0, |r| r.len());
    let flat: Vec<f32> = rows.iter().flatten().flatten().copied().collect();
    if flat.len() != t * n * d {
        bail!("crw: frames must all be [N, D]");
    }
    Tensor::from_vec(flat, (1, t, n, d), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient};

    fn n2(x: f32, y: f32) -> Vec<f32> {
        let s = (x * x + y * y).sqrt();
        vec![x / s, y / s]
    }

    fn loss(frames: &[Vec<Vec<f32>>], tau: f64, h: &[usize]) -> Result<f64> {
        let f = frames_from_rows(frames)?;
        Ok(crw_loss(&f, tau, Some(h), None)?.loss.to_scalar::<f32>()? as f64)
    }

    #[test]
    fn tv7_closed_form_identical_orthonormal_frames() -> Result<()> {
        // TV7 (C4 with N = 2): a palindrome of m = 2h hops over identical frames [e1, e2].
        let e = vec![vec![1f32, 0.0], vec![0.0, 1.0]];
        assert_close(loss(&[e.clone(), e.clone()], 1.0, &[1])?, 0.4995954, 1e-6);
        assert_close(
            loss(&[e.clone(), e.clone(), e.clone()], 1.0, &[2])?,
            0.6485519,
            1e-6,
        );
        assert_close(loss(&[e.clone(), e.clone()], 0.07, &[1])?, 1.2497e-6, 1e-3);
        // C4 in general: N = 3 nodes, τ = 0.5, h = 1 and 2.
        let e3 = vec![
            vec![1f32, 0.0, 0.0],
            vec![0.0, 1.0, 0.0],
            vec![0.0, 0.0, 1.0],
        ];
        let (nn, tau) = (3f64, 0.5f64);
        let z = (1.0 / tau).exp() + nn - 1.0;
        let (a, b) = ((1.0 / tau).exp() / z, 1.0 / z);
        for h in [1usize, 2] {
            let want = -((1.0 + (nn - 1.0) * (a - b).powi(2 * h as i32)) / nn).ln();
            assert_close(loss(&vec![e3.clone(); h + 1], tau, &[h])?, want, 1e-6);
        }
        Ok(())
    }

    #[test]
    fn tv8_one_step_palindrome() -> Result<()> {
        let fa = vec![n2(1.0, 0.2), n2(0.1, 1.0)];
        let fb = vec![n2(0.9, 0.5), n2(0.3, 1.0)];
        assert_close(loss(&[fa, fb], 0.5, &[1])?, 0.5323076, 1e-6);
        Ok(())
    }

    #[test]
    fn tv9_training_loss_for_three_frames() -> Result<()> {
        let f0 = vec![n2(1.0, 0.2), n2(0.1, 1.0)];
        let f1 = vec![n2(0.9, 0.5), n2(0.3, 1.0)];
        let f2 = vec![n2(1.0, 1.0), n2(-0.2, 1.0)];
        let f = frames_from_rows(&[f0, f1, f2])?;
        // The default horizons for T = 3 are just h = 2.
        let out = crw_loss(&f, 0.5, None, None)?;
        assert_close(out.loss.to_scalar::<f32>()? as f64, 0.6837269, 1e-6);
        // W = [[0.4534618, 0.5465382], [0.4382001, 0.5617999]]: node 0 ends at 1, node 1 at 1.
        assert_eq!(out.accuracy, vec![0.5]);
        Ok(())
    }

    #[test]
    fn finite_difference_gradient() -> Result<()> {
        let f = frames_from_rows(&[
            vec![n2(1.0, 0.2), n2(0.1, 1.0), n2(-0.5, 0.4)],
            vec![n2(0.9, 0.5), n2(0.3, 1.0), n2(-1.0, 0.1)],
            vec![n2(1.0, 1.0), n2(-0.2, 1.0), n2(0.3, -0.7)],
            vec![n2(0.6, 0.8), n2(0.0, 1.0), n2(-0.9, -0.2)],
        ])?;
        check_gradient(&f, |x| Ok(crw_loss(x, 0.4, None, None)?.loss), 1e-4)
    }

    #[test]
    fn dropout_is_seeded_and_a_fully_dropped_row_stays_finite() -> Result<()> {
        let e = vec![vec![1f32, 0.0], vec![0.0, 1.0]];
        let f = frames_from_rows(&[e.clone(), e.clone(), e])?;
        let d = EdgeDropout { p: 0.5, seed: 3 };
        let a = crw_loss(&f, 0.1, None, Some(d))?.loss.to_scalar::<f32>()?;
        let b = crw_loss(&f, 0.1, None, Some(d))?.loss.to_scalar::<f32>()?;
        assert_eq!(a, b);
        let all = EdgeDropout { p: 1.0, seed: 3 };
        let l = crw_loss(&f, 0.1, None, Some(all))?
            .loss
            .to_scalar::<f32>()?;
        // Every edge dropped: every transition uniform, W uniform, L = ln 2.
        assert_close(l as f64, 2f64.ln(), 1e-6);
        Ok(())
    }

    #[test]
    fn rejects_bad_horizons() -> Result<()> {
        let e = vec![vec![1f32, 0.0], vec![0.0, 1.0]];
        let f = frames_from_rows(&[e.clone(), e])?;
        assert!(crw_loss(&f, 0.1, None, None).is_err()); // T = 2: no default horizon
        assert!(crw_loss(&f, 0.1, Some(&[2]), None).is_err());
        assert!(crw_loss(&f, 0.0, Some(&[1]), None).is_err());
        Ok(())
    }
}
