//! PixPro's pixel-to-propagation consistency: the online view's cells, smoothed by the
//! pixel-propagation module, regress the momentum target's cells that lie at the same place of
//! the image (geometric positives from the two crop boxes).
//!
//! Xie, Lin, Zhang, Cao, Lin, Hu. "Propagate Yourself: Exploring Pixel-Level Consistency for
//! Unsupervised Visual Representation Learning", CVPR 2021 (arXiv 2011.10043); reference
//! `zdaxie/PixPro` `contrast/models/PixPro.py` (`featprop`, `regression_loss`).
//!
//! - Positives: cell `i` of view q and cell `j` of view k are a pair when the distance between
//!   their centres, mapped back into the image, divided by the larger of the two views' cell
//!   diagonals (in image units), is below `ratio` (0.7 in the reference's script).
//! - Pixel propagation: `y_i = Σ_j max(cos(x_i, x_j), 0)^γ · ĝ(x)_j` over the cells of one map
//!   (γ = 2, clamp 0), `ĝ` a value transform (a 1×1 convolution in the reference) whose output
//!   is L2-normalised.
//! - Loss per direction: `−2 · mean_b [Σ_ij P_ij cos(y_i, sg(z_j)) / (Σ_ij P_ij + 1e−6)]`, `z`
//!   the target's cells; PixPro adds both directions.

use crate::densecl::l2_channels;
use gyre_kernels::{Device, Result, Tensor};

/// The positive-pair mask `[B, S_q, S_k]` (1.0 / 0.0) from each view's cell centres in image
/// coordinates (`centres_q[b]` has `S_q` points) and each pair's normaliser (the larger cell
/// diagonal of the two views, image units).
pub fn positive_mask(
    centres_q: &[Vec<[f32; 2]>],
    centres_k: &[Vec<[f32; 2]>],
    max_diagonal: &[f32],
    ratio: f32,
    device: &Device,
) -> Result<Tensor> {
    let b = centres_q.len();
    let sq = centres_q.first().map_or(0, Vec::len);
    let sk = centres_k.first().map_or(0, Vec::len);
    if centres_k.len() != b || max_diagonal.len() != b {
        gyre_kernels::candle::bail!(
            "pixpro positive_mask: {b} query views, {} key views, {} diagonals",
            centres_k.len(),
            max_diagonal.len()
        );
    }
    let mut m = vec![0f32; b * sq * sk];
    for n in 0..b {
        if centres_q[n].len() != sq || centres_k[n].len() != sk {
            gyre_kernels::candle::bail!("pixpro positive_mask: views with different cell counts");
        }
        for (i, p) in centres_q[n].iter().enumerate() {
            for (j, q) in centres_k[n].iter().enumerate() {
                let d = (p[0] - q[0]).hypot(p[1] - q[1]) / max_diagonal[n];
                if d < ratio {
                    m[(n * sq + i) * sk + j] = 1.0;
                }
            }
        }
    }
    Tensor::from_vec(m, (b, sq, sk), device)
}

/// The pixel-propagation module: `feat` and `value` are `[B, C, H, W]` (`value` = the value
/// transform of `feat`); returns `[B, C, H, W]`, `y_i = Σ_j max(cos(f_i, f_j), clamp)^γ v̂_j`.
pub fn pixel_propagation(feat: &Tensor, value: &Tensor, gamma: f64, clamp: f64) -> Result<Tensor> {
    let (b, c, h, w) = feat.dims4()?;
    let f = l2_channels(&feat.reshape((b, c, h * w))?)?;
    let v = l2_channels(&value.reshape((b, value.dim(1)?, h * w))?)?;
    // [B, S, S]: attention[i][j] = cos(f_i, f_j).
    let att = f.transpose(1, 2)?.contiguous()?.matmul(&f)?;
    let att = att.clamp(clamp, f64::INFINITY)?;
    let att = if gamma == 1.0 { att } else { att.powf(gamma)? };
    // y[:, i] = Σ_j v[:, j] att[i][j]  →  v · attᵀ.
    let y = v.matmul(&att.transpose(1, 2)?.contiguous()?)?;
    y.reshape((b, value.dim(1)?, h, w))
}

/// One direction of PixPro's loss: `pred` (`[B, C, H, W]`, with gradient) against the target
/// `target` (`[B, C, H', W']`, detached here), over the pairs of `mask` (`[B, H·W, H'·W']`).
pub fn pixpro_loss(pred: &Tensor, target: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = pred.dims4()?;
    let (_, _, ht, wt) = target.dims4()?;
    let p = l2_channels(&pred.reshape((b, c, h * w))?)?;
    let z = l2_channels(&target.detach().reshape((b, c, ht * wt))?)?;
    let cos = p.transpose(1, 2)?.contiguous()?.matmul(&z)?; // [B, S, S']
    let mask = mask.detach().to_dtype(cos.dtype())?;
    let num = (cos * &mask)?.sum((1, 2))?;
    let den = (mask.sum((1, 2))? + 1e-6)?;
    (num / den)?.mean(0)? * -2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient};
    use gyre_kernels::DType;

    fn grid(h: usize, w: usize, left: f32, top: f32, cell: f32) -> Vec<[f32; 2]> {
        let mut v = Vec::new();
        for r in 0..h {
            for c in 0..w {
                v.push([
                    left + (c as f32 + 0.5) * cell,
                    top + (r as f32 + 0.5) * cell,
                ]);
            }
        }
        v
    }

    /// Same crop: only a cell and itself are closer than 0.7 diagonals (a side neighbour is
    /// 1/√2 ≈ 0.707 diagonals away). A crop shifted by half a cell along x pairs each cell with
    /// the two cells half a cell away (0.354); the diagonal ones are 0.79 away.
    #[test]
    fn positives_are_cells_within_the_ratio_of_a_diagonal() -> Result<()> {
        let dev = &Device::Cpu;
        let a = grid(3, 3, 0.0, 0.0, 2.0);
        let diag = 2.0f32.hypot(2.0);
        let one = std::slice::from_ref(&a);
        let m = positive_mask(one, one, &[diag], 0.7, dev)?;
        let m = m.squeeze(0)?.to_vec2::<f32>()?;
        for (i, row) in m.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                assert_eq!(v, (i == j) as u8 as f32, "({i}, {j})");
            }
        }
        // Shifted right by 1 (half a cell): pairs (i, i) and (i, i − 1 along x), distance ½ cell.
        let shifted = grid(3, 3, 1.0, 0.0, 2.0);
        let m = positive_mask(&[a], &[shifted], &[diag], 0.7, dev)?.squeeze(0)?;
        let m = m.to_vec2::<f32>()?;
        assert_eq!(m[4].iter().sum::<f32>(), 2.0);
        assert_eq!((m[4][4], m[4][3]), (1.0, 1.0));
        Ok(())
    }

    /// With a 0/1 identity mask and the prediction equal to the target, cos = 1 on every pair:
    /// L = −2·S/(S + 1e−6); an orthogonal target gives 0; an opposite one +2.
    #[test]
    fn closed_forms() -> Result<()> {
        let dev = &Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 4, 2, 3), dev)?;
        let eye = Tensor::eye(6, DType::F32, dev)?
            .unsqueeze(0)?
            .repeat((2, 1, 1))?;
        let l = pixpro_loss(&x, &x, &eye)?.to_scalar::<f32>()? as f64;
        assert_close(l, -2.0 * 6.0 / (6.0 + 1e-6), 1e-5);
        let l = pixpro_loss(&x, &x.neg()?, &eye)?.to_scalar::<f32>()? as f64;
        assert_close(l, 2.0 * 6.0 / (6.0 + 1e-6), 1e-5);
        // Channel 0 only vs channel 1 only: orthogonal everywhere.
        let e = |ch: usize| -> Result<Tensor> {
            let mut v = vec![0f32; 2 * 4 * 6];
            for b in 0..2 {
                for s in 0..6 {
                    v[(b * 4 + ch) * 6 + s] = 1.0;
                }
            }
            Tensor::from_vec(v, (2, 4, 2, 3), dev)
        };
        let l = pixpro_loss(&e(0)?, &e(1)?, &eye)?.to_scalar::<f32>()?;
        assert!(l.abs() < 1e-6, "{l}");
        // An empty mask gives 0, not NaN.
        let none = Tensor::zeros((2, 6, 6), DType::F32, dev)?;
        assert_eq!(pixpro_loss(&x, &x, &none)?.to_scalar::<f32>()?, 0.0);
        Ok(())
    }

    /// Propagation closed form: two cells with features e0 and (e0 + e1)/√2 (cosine 1/√2) and
    /// values v0, v1 (unit): with γ = 2, y_0 = 1·v0 + ½·v1 and y_1 = ½·v0 + 1·v1; a negative
    /// cosine is clamped to 0 (no contribution).
    #[test]
    fn propagation_closed_form() -> Result<()> {
        let dev = &Device::Cpu;
        // [1, 2, 1, 2]: channel-major, cells along w.
        let feat = Tensor::from_vec(vec![1f32, 1.0, 0.0, 1.0], (1, 2, 1, 2), dev)?;
        let value = Tensor::from_vec(vec![3f32, 0.0, 0.0, 5.0], (1, 2, 1, 2), dev)?; // v0 = e0, v1 = e1
        let y = pixel_propagation(&feat, &value, 2.0, 0.0)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let want = [1.0, 0.5, 0.5, 1.0]; // channel 0: (y0, y1), channel 1: (y0, y1)
        for (g, w) in y.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{y:?}");
        }
        let opposed = Tensor::from_vec(vec![1f32, -1.0, 0.0, 0.0], (1, 2, 1, 2), dev)?;
        let y = pixel_propagation(&opposed, &value, 2.0, 0.0)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(y, [1.0, 0.0, 0.0, 1.0]);
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let dev = &Device::Cpu;
        let target = Tensor::randn(0f32, 1.0, (2, 3, 2, 2), dev)?.to_dtype(DType::F64)?;
        let mask = positive_mask(
            &[grid(2, 2, 0.0, 0.0, 1.0), grid(2, 2, 0.5, 0.0, 1.0)],
            &[grid(2, 2, 0.3, 0.2, 1.0), grid(2, 2, 0.0, 0.0, 1.0)],
            &[2f32.sqrt(), 2f32.sqrt()],
            0.7,
            dev,
        )?;
        assert!(mask.sum_all()?.to_scalar::<f32>()? > 4.0);
        let x = Tensor::randn(0f32, 1.0, (2, 3, 2, 2), dev)?;
        // Through the propagation module (value = the features themselves) and the loss.
        check_gradient(
            &x,
            |x| pixpro_loss(&pixel_propagation(x, x, 2.0, 0.0)?, &target, &mask),
            1e-4,
        )
    }
}
