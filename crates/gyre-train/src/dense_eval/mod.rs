//! Dense evaluations of frozen features: nearest-neighbour correspondence scored by PCK against
//! true flow, disparity or homography ([`correspondence`]), the CRW label-propagation protocol
//! scored by J ([`propagation`]), and the pixel linear probe scored by mIoU ([`probe`]). Every
//! evaluation takes [`FeatureMap`]s, so an encoder, a random-init encoder and raw pixel patches
//! ([`raw_patch_features`]) are scored by the same code.

pub mod correspondence;
pub mod probe;
pub mod propagation;
pub mod protocol;

use gyre_encoders::Backbone;
use gyre_kernels::{Device, Result, Tensor};

/// A dense feature map of one image: `h × w` cells, `c` channels, each cell's vector
/// L2-normalised, stored cell-major (`[h·w, c]`), `stride` image pixels per cell.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMap {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub stride: f32,
    pub data: Vec<f32>,
}

fn normalise_rows(data: &mut [f32], c: usize) {
    for row in data.chunks_mut(c) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= n);
    }
}

impl FeatureMap {
    /// From a channel-major `[c, h, w]` map (an encoder's output), normalising every cell.
    pub fn from_chw(c: usize, h: usize, w: usize, stride: f32, chw: &[f32]) -> Self {
        let mut data = vec![0f32; h * w * c];
        for ch in 0..c {
            for i in 0..h * w {
                data[i * c + ch] = chw[ch * h * w + i];
            }
        }
        normalise_rows(&mut data, c);
        Self {
            h,
            w,
            c,
            stride,
            data,
        }
    }

    pub fn cell(&self, i: usize) -> &[f32] {
        &self.data[i * self.c..(i + 1) * self.c]
    }

    /// The map resampled bilinearly (half-pixel centres, PyTorch's `align_corners=False`) to
    /// `out_h × out_w` cells, renormalised.
    pub fn resized(&self, out_h: usize, out_w: usize) -> Self {
        let mut data = resample(&self.data, (self.h, self.w), self.c, (out_h, out_w));
        normalise_rows(&mut data, self.c);
        Self {
            h: out_h,
            w: out_w,
            c: self.c,
            stride: self.stride * self.w as f32 / out_w as f32,
            data,
        }
    }
}

/// Bilinear resampling (half-pixel centres, PyTorch's `align_corners=False`) of a cell-major
/// `[h·w, c]` map to `[out_h·out_w, c]`: feature maps, and the label maps of propagation.
pub fn resample(
    data: &[f32],
    (h, w): (usize, usize),
    c: usize,
    (out_h, out_w): (usize, usize),
) -> Vec<f32> {
    let my = gyre_encoders::dense::interpolation_matrix(h, out_h);
    let mx = gyre_encoders::dense::interpolation_matrix(w, out_w);
    let mut out = vec![0f32; out_h * out_w * c];
    for oy in 0..out_h {
        for ox in 0..out_w {
            let dst = &mut out[(oy * out_w + ox) * c..(oy * out_w + ox + 1) * c];
            for iy in 0..h {
                let wy = my[oy * h + iy];
                if wy == 0.0 {
                    continue;
                }
                for ix in 0..w {
                    let wx = mx[ox * w + ix];
                    if wx == 0.0 {
                        continue;
                    }
                    let wgt = wy * wx;
                    let src = &data[(iy * w + ix) * c..(iy * w + ix + 1) * c];
                    for (d, v) in dst.iter_mut().zip(src) {
                        *d += wgt * v;
                    }
                }
            }
        }
    }
    out
}

/// Raw pixels as the feature: at every cell of a `stride`-pixel grid, the `patch × patch` RGB
/// patch centred on the cell's centre (mirrored at the borders), each channel's mean removed,
/// L2-normalised. `image` is HWC u8 with 3 channels.
pub fn raw_patch_features(
    image: &[u8],
    (height, width): (usize, usize),
    stride: usize,
    patch: usize,
) -> FeatureMap {
    let (h, w) = (height / stride, width / stride);
    let c = 3 * patch * patch;
    let mut data = vec![0f32; h * w * c];
    let mirror = |v: i64, n: usize| -> usize {
        let n = n as i64;
        let m = v.rem_euclid(2 * n);
        (if m < n { m } else { 2 * n - 1 - m }) as usize
    };
    for cy in 0..h {
        for cx in 0..w {
            let row = &mut data[(cy * w + cx) * c..(cy * w + cx + 1) * c];
            // The patch's top-left pixel: centre (cell centre) minus half the patch.
            let y0 = (cy * stride) as i64 + stride as i64 / 2 - patch as i64 / 2;
            let x0 = (cx * stride) as i64 + stride as i64 / 2 - patch as i64 / 2;
            for ch in 0..3 {
                let mut mean = 0f32;
                for py in 0..patch {
                    for px in 0..patch {
                        let y = mirror(y0 + py as i64, height);
                        let x = mirror(x0 + px as i64, width);
                        let v = image[(y * width + x) * 3 + ch] as f32 / 255.0;
                        row[ch * patch * patch + py * patch + px] = v;
                        mean += v;
                    }
                }
                mean /= (patch * patch) as f32;
                row[ch * patch * patch..(ch + 1) * patch * patch]
                    .iter_mut()
                    .for_each(|v| *v -= mean);
            }
        }
    }
    normalise_rows(&mut data, c);
    FeatureMap {
        h,
        w,
        c,
        stride: stride as f32,
        data,
    }
}

/// The backbone's dense feature maps (eval mode) of `images` (`[n, height, width, channels]`
/// u8), normalised with `mean`/`std`, `batch` images at a time.
#[allow(clippy::too_many_arguments)]
pub fn encoder_features(
    backbone: &Backbone,
    images: &[u8],
    (height, width, channels): (usize, usize, usize),
    mean: &[f32],
    std: &[f32],
    batch: usize,
    device: &Device,
) -> Result<Vec<FeatureMap>> {
    let per = height * width * channels;
    let n = images.len() / per;
    let stride = backbone.output_stride() as f32;
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(batch.max(1)) {
        let end = (start + batch.max(1)).min(n);
        let mut x = vec![0f32; (end - start) * per];
        for (k, img) in images[start * per..end * per].chunks(per).enumerate() {
            for ch in 0..channels {
                for p in 0..height * width {
                    x[k * per + ch * height * width + p] =
                        (img[p * channels + ch] as f32 / 255.0 - mean[ch]) / std[ch];
                }
            }
        }
        let x = Tensor::from_vec(x, (end - start, channels, height, width), device)?;
        let f = backbone
            .forward_dense_t(&x, false)?
            .to_device(&Device::Cpu)?;
        let (b, c, fh, fw) = f.dims4()?;
        let flat = f.flatten_all()?.to_vec1::<f32>()?;
        for k in 0..b {
            let chw = &flat[k * c * fh * fw..(k + 1) * c * fh * fw];
            out.push(FeatureMap::from_chw(c, fh, fw, stride, chw));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_normalise_cells_and_resize_bilinearly() {
        // Two cells, [c=2, h=1, w=2]: (3, 4) and (0, 2).
        let m = FeatureMap::from_chw(2, 1, 2, 8.0, &[3.0, 0.0, 4.0, 2.0]);
        assert_eq!(m.data, [0.6, 0.8, 0.0, 1.0]);
        let r = m.resized(1, 4);
        assert_eq!((r.h, r.w, r.stride), (1, 4, 4.0));
        // Output cell 1 reads ¾ of cell 0 and ¼ of cell 1: (0.45, 0.85), renormalised.
        let (a, b) = (0.45f32, 0.6 + 0.25);
        let n = a.hypot(b);
        assert!((r.cell(1)[0] - a / n).abs() < 1e-6 && (r.cell(1)[1] - b / n).abs() < 1e-6);
        assert_eq!(r.cell(0), m.cell(0));
    }

    #[test]
    fn raw_patches_are_centred_unit_vectors_that_ignore_brightness() {
        let (h, w) = (16, 16);
        let img: Vec<u8> = (0..h * w * 3).map(|i| ((i * 37) % 200) as u8).collect();
        let f = raw_patch_features(&img, (h, w), 8, 5);
        assert_eq!((f.h, f.w, f.c), (2, 2, 75));
        for i in 0..4 {
            let n: f32 = f.cell(i).iter().map(|v| v * v).sum();
            assert!((n - 1.0).abs() < 1e-5);
        }
        // Adding a constant to every pixel leaves each patch's feature unchanged.
        let brighter: Vec<u8> = img.iter().map(|v| v + 30).collect();
        let g = raw_patch_features(&brighter, (h, w), 8, 5);
        for (a, b) in f.data.iter().zip(&g.data) {
            assert!((a - b).abs() < 1e-5);
        }
    }
}
