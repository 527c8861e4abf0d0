//! Pixel-level pieces: projection heads applied at every cell of a feature map (1×1
//! convolutions), and bilinear up-sampling of feature maps and logits.
//!
//! A 1×1 convolution is a Linear layer applied at every position, and BatchNorm2d normalises
//! each channel over (batch, height, width), which is BatchNorm1d over the flattened positions:
//! so a [`DenseHead`] is a [`ProjectionHead`] run on `[B·H·W, C]` rows. (Its weights are Linear
//! `[out, in]`; PyTorch's `Conv2d(in, out, 1)` holds the same numbers as `[out, in, 1, 1]`.)
//!
//! For the global head on pooled features, use a plain [`ProjectionHead`] on the mean of the
//! map; a cycle head (IRC, next) is one more `DenseHead`.

use crate::head::{ProjectionHead, ProjectionHeadConfig};
use crate::params::ParamStore;
use gyre_kernels::{Device, Result, Tensor};

/// A projection head at every cell of a `[B, C, H, W]` map, giving `[B, D, H, W]`.
#[derive(Debug, Clone)]
pub struct DenseHead {
    head: ProjectionHead,
}

impl DenseHead {
    pub fn new(cfg: ProjectionHeadConfig, seed: u64, name: &str, device: &Device) -> Result<Self> {
        Ok(Self {
            head: ProjectionHead::new(cfg, seed, name, device)?,
        })
    }

    pub fn params(&self) -> &ParamStore {
        self.head.params()
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let y = self.forward_cells(x, train)?;
        let d = y.dim(2)?;
        y.reshape((b, h, w, d))?.permute((0, 3, 1, 2))?.contiguous()
    }

    /// The same outputs as one row per cell: `[B, H·W, D]`, cells in row-major order.
    pub fn forward_cells(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let rows = x.permute((0, 2, 3, 1))?.reshape((b * h * w, c))?;
        let y = self.head.forward_t(&rows, train)?;
        let d = y.dim(1)?;
        y.reshape((b, h * w, d))
    }
}

/// The `[output, input]` matrix of 1-D linear interpolation with half-pixel centres and no
/// corner alignment (PyTorch's `interpolate(mode="bilinear", align_corners=False)`): output
/// sample `o` reads input position `(o + ½)·input/output − ½`, clamped at 0 below and at the last
/// sample above.
pub fn interpolation_matrix(input: usize, output: usize) -> Vec<f32> {
    let mut m = vec![0f32; output * input];
    let scale = input as f32 / output as f32;
    for o in 0..output {
        let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        let w1 = src - i0 as f32;
        m[o * input + i0] += 1.0 - w1;
        m[o * input + i1] += w1;
    }
    m
}

/// Bilinear resize of `[B, C, H, W]` to `[B, C, out_h, out_w]` (PyTorch's
/// `align_corners=False`), as two matrix products, so autograd differentiates it.
pub fn upsample_bilinear(x: &Tensor, (out_h, out_w): (usize, usize)) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let dev = x.device();
    let uh =
        Tensor::from_vec(interpolation_matrix(h, out_h), (out_h, h), dev)?.to_dtype(x.dtype())?;
    let uw =
        Tensor::from_vec(interpolation_matrix(w, out_w), (out_w, w), dev)?.to_dtype(x.dtype())?;
    // [B, C, H, W] · Uwᵀ → [B, C, H, out_w]; Uh · that → [B, C, out_h, out_w].
    let xw = x.broadcast_matmul(&uw.t()?)?;
    uh.broadcast_matmul(&xw.contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_upsampling_matches_its_closed_form() -> Result<()> {
        // 2 → 4 samples: positions −¼ (clamped to 0), ¼, ¾, 1¼ (clamped to the last).
        assert_eq!(
            interpolation_matrix(2, 4),
            [1.0, 0.0, 0.75, 0.25, 0.25, 0.75, 0.0, 1.0]
        );
        // Same size is the identity; every row sums to 1.
        assert_eq!(
            interpolation_matrix(3, 3),
            [1., 0., 0., 0., 1., 0., 0., 0., 1.]
        );
        let m = interpolation_matrix(5, 13);
        for r in m.chunks(5) {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        let x = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu)?;
        let y = upsample_bilinear(&x, (4, 4))?;
        assert_eq!(y.dims(), &[1, 1, 4, 4]);
        let y = y.flatten_all()?.to_vec1::<f32>()?;
        // Row 1 reads ¾ of row 0 and ¼ of row 1; column 2 ¼ of column 0 and ¾ of column 1.
        let want = 0.75 * (0.25 * 1.0 + 0.75 * 2.0) + 0.25 * (0.25 * 3.0 + 0.75 * 4.0);
        assert!((y[4 + 2] - want).abs() < 1e-6, "{} vs {want}", y[6]);
        assert_eq!((y[0], y[3], y[12], y[15]), (1.0, 2.0, 3.0, 4.0));
        // A ramp in x stays a ramp inside the image (bilinear reproduces linear functions).
        let ramp = Tensor::arange(0f32, 8.0, &Device::Cpu)?.reshape((1, 1, 1, 8))?;
        let up = upsample_bilinear(&ramp.broadcast_as((1, 1, 2, 8))?.contiguous()?, (2, 16))?;
        let up = up.flatten_all()?.to_vec1::<f32>()?;
        for (o, &got) in up.iter().enumerate().take(15).skip(1) {
            let want = (o as f32 + 0.5) * 0.5 - 0.5;
            assert!((got - want).abs() < 1e-5, "{o}: {got} vs {want}");
        }
        Ok(())
    }

    /// The dense head is the MLP at every cell, with BatchNorm over all cells of the batch.
    #[test]
    fn a_dense_head_is_the_mlp_at_every_cell() -> Result<()> {
        let cfg = ProjectionHeadConfig::new(6, 10, 4);
        let dense = DenseHead::new(cfg, 3, "dense", &Device::Cpu)?;
        let mlp = ProjectionHead::new(cfg, 3, "dense", &Device::Cpu)?;
        let x = Tensor::randn(0f32, 1.0, (2, 6, 3, 5), &Device::Cpu)?;
        let rows = x.permute((0, 2, 3, 1))?.reshape((30, 6))?;
        for train in [false, true] {
            let y = dense.forward_t(&x, train)?;
            assert_eq!(y.dims(), &[2, 4, 3, 5]);
            let want = mlp
                .forward_t(&rows, train)?
                .reshape((2, 3, 5, 4))?
                .permute((0, 3, 1, 2))?;
            let diff = (y - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-6, "train {train}: {diff}");
        }
        Ok(())
    }
}
