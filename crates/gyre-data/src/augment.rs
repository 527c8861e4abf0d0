//! Image augmentations on u8 images (grey or RGB), fused into one pass per view: random resized
//! crop with bilinear resampling and optional flip, colour jitter, random grayscale, Gaussian blur,
//! solarisation, then per-channel normalisation into a CHW f32 slice.
//!
//! Semantics follow torchvision (`RandomResizedCrop`, `ColorJitter` with a random order of its four
//! parts, `RandomGrayscale`, `GaussianBlur`, `RandomSolarize`) on float images in [0, 1]. Resizing
//! is bilinear with half-pixel centres and no antialiasing.

use crate::error::DataError;
use rand::Rng;
use serde::{Deserialize, Serialize};

fn d_scale() -> [f32; 2] {
    [0.08, 1.0]
}
fn d_ratio() -> [f32; 2] {
    [3.0 / 4.0, 4.0 / 3.0]
}
fn d_half() -> f32 {
    0.5
}
fn d_sigma() -> [f32; 2] {
    [0.1, 2.0]
}

/// One view's augmentation settings (a recipe's `[augment.<name>]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    /// Output side in pixels.
    pub size: usize,
    /// RandomResizedCrop area fraction range.
    #[serde(default = "d_scale")]
    pub crop_scale: [f32; 2],
    /// RandomResizedCrop aspect-ratio range.
    #[serde(default = "d_ratio")]
    pub crop_ratio: [f32; 2],
    #[serde(default = "d_half")]
    pub hflip_p: f32,
    /// Probability of applying colour jitter at all.
    #[serde(default)]
    pub jitter_p: f32,
    #[serde(default)]
    pub brightness: f32,
    #[serde(default)]
    pub contrast: f32,
    /// Ignored for grey images.
    #[serde(default)]
    pub saturation: f32,
    /// Ignored for grey images; at most 0.5.
    #[serde(default)]
    pub hue: f32,
    #[serde(default)]
    pub grayscale_p: f32,
    #[serde(default)]
    pub blur_p: f32,
    #[serde(default = "d_sigma")]
    pub blur_sigma: [f32; 2],
    /// Blur kernel side (odd); 0 picks about a tenth of `size`.
    #[serde(default)]
    pub blur_kernel: usize,
    #[serde(default)]
    pub solarize_p: f32,
    #[serde(default = "d_half")]
    pub solarize_threshold: f32,
}

impl AugmentConfig {
    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<(), DataError> {
        /// The largest output side (a 16384² RGB view is already 3 GB of f32).
        const MAX_SIZE: usize = 1 << 14;
        let bad = |field: &'static str, problem: String| Err(DataError::Augment { field, problem });
        if self.size == 0 || self.size > MAX_SIZE {
            return bad(
                "size",
                format!("must be in 1..={MAX_SIZE}, got {}", self.size),
            );
        }
        let [s0, s1] = self.crop_scale;
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            return bad(
                "crop_scale",
                format!("needs 0 < min ≤ max ≤ 1, got [{s0}, {s1}]"),
            );
        }
        let [r0, r1] = self.crop_ratio;
        if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
            return bad(
                "crop_ratio",
                format!("needs 0 < min ≤ max, got [{r0}, {r1}]"),
            );
        }
        for (f, p) in [
            ("hflip_p", self.hflip_p),
            ("jitter_p", self.jitter_p),
            ("grayscale_p", self.grayscale_p),
            ("blur_p", self.blur_p),
            ("solarize_p", self.solarize_p),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(f, format!("a probability must be in [0, 1], got {p}"));
            }
        }
        for (f, v) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(f, format!("must be ≥ 0, got {v}"));
            }
        }
        if !(0.0..=0.5).contains(&self.hue) {
            return bad("hue", format!("must be in [0, 0.5], got {}", self.hue));
        }
        let [b0, b1] = self.blur_sigma;
        if !(b0 > 0.0 && b0 <= b1 && b1.is_finite()) {
            return bad(
                "blur_sigma",
                format!("needs 0 < min ≤ max, got [{b0}, {b1}]"),
            );
        }
        if self.blur_kernel != 0 && self.blur_kernel.is_multiple_of(2) {
            return bad(
                "blur_kernel",
                format!("must be odd (or 0 for automatic), got {}", self.blur_kernel),
            );
        }
        if !(0.0..=1.0).contains(&self.solarize_threshold) {
            return bad(
                "solarize_threshold",
                format!("must be in [0, 1], got {}", self.solarize_threshold),
            );
        }
        Ok(())
    }

    /// A view with no randomness but a resize: for evaluation inputs of another size.
    pub fn identity(size: usize) -> Self {
        Self {
            size,
            crop_scale: [1.0, 1.0],
            crop_ratio: [1.0, 1.0],
            hflip_p: 0.0,
            jitter_p: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            hue: 0.0,
            grayscale_p: 0.0,
            blur_p: 0.0,
            blur_sigma: d_sigma(),
            blur_kernel: 0,
            solarize_p: 0.0,
            solarize_threshold: 0.5,
        }
    }
}

/// A validated augmentation pipeline plus the normalisation of its output.
#[derive(Debug, Clone)]
pub struct ViewPipeline {
    cfg: AugmentConfig,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

/// Where a view came from: its crop box in the source image and whether it was flipped, so that
/// points of two views of one image can be mapped onto each other (dense positives).
///
/// Coordinates are continuous pixels (pixel `(x, y)` covers `[x, x+1) × [y, y+1)`), the view's
/// with its `size × size` output. The view resamples the box bilinearly with half-pixel centres,
/// so output point `o` shows source point `left + o·width/size` (`size − o` when flipped) along x.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewGeometry {
    pub top: f32,
    pub left: f32,
    pub height: f32,
    pub width: f32,
    pub flip: bool,
    /// The view's side in pixels.
    pub size: usize,
}

impl ViewGeometry {
    /// The view of a whole `size × size` image: no crop, no flip.
    pub fn whole(size: usize) -> Self {
        Self {
            top: 0.0,
            left: 0.0,
            height: size as f32,
            width: size as f32,
            flip: false,
            size,
        }
    }

    /// The source point that view point `[x, y]` shows.
    pub fn to_source(&self, [x, y]: [f32; 2]) -> [f32; 2] {
        let s = self.size as f32;
        let x = if self.flip { s - x } else { x };
        [
            self.left + x * self.width / s,
            self.top + y * self.height / s,
        ]
    }

    /// The view point that shows source point `[x, y]` (outside `[0, size)²` when the crop
    /// missed it).
    pub fn from_source(&self, [x, y]: [f32; 2]) -> [f32; 2] {
        let s = self.size as f32;
        let vx = (x - self.left) * s / self.width;
        [
            if self.flip { s - vx } else { vx },
            (y - self.top) * s / self.height,
        ]
    }

    /// Where view point `p` of this view shows up in `other`, a view of the same image.
    pub fn map_to(&self, other: &ViewGeometry, p: [f32; 2]) -> [f32; 2] {
        other.from_source(self.to_source(p))
    }

    /// The centre of feature cell `(row, col)` of a map with `stride` view pixels per cell, in
    /// source coordinates.
    pub fn cell_centre(&self, row: usize, col: usize, stride: f32) -> [f32; 2] {
        self.to_source([(col as f32 + 0.5) * stride, (row as f32 + 0.5) * stride])
    }

    /// A source-image length: the diagonal of one `stride`-pixel cell of this view.
    pub fn cell_diagonal(&self, stride: f32) -> f32 {
        let s = self.size as f32;
        (self.width * stride / s).hypot(self.height * stride / s)
    }
}

/// Where the random crop lands in the source image.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Crop {
    top: usize,
    left: usize,
    h: usize,
    w: usize,
}

fn sample_crop<R: Rng>(
    rng: &mut R,
    height: usize,
    width: usize,
    scale: [f32; 2],
    ratio: [f32; 2],
) -> Crop {
    let area = (height * width) as f32;
    let (lr0, lr1) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target = area * rng.gen_range(scale[0]..=scale[1]);
        let aspect = if lr0 < lr1 {
            rng.gen_range(lr0..lr1).exp()
        } else {
            ratio[0]
        };
        let w = (target * aspect).sqrt().round() as usize;
        let h = (target / aspect).sqrt().round() as usize;
        if w > 0 && h > 0 && w <= width && h <= height {
            let top = rng.gen_range(0..=height - h);
            let left = rng.gen_range(0..=width - w);
            return Crop { top, left, h, w };
        }
    }
    // Fallback (torchvision): the whole image, aspect clamped into the ratio range, centred.
    let in_ratio = width as f32 / height as f32;
    let (w, h) = if in_ratio < ratio[0] {
        (width, ((width as f32 / ratio[0]).round() as usize).max(1))
    } else if in_ratio > ratio[1] {
        (((height as f32 * ratio[1]).round() as usize).max(1), height)
    } else {
        (width, height)
    };
    Crop {
        top: (height - h.min(height)) / 2,
        left: (width - w.min(width)) / 2,
        h: h.min(height),
        w: w.min(width),
    }
}

/// Luma of an RGB pixel (ITU-R 601-2, as PIL and torchvision).
#[inline]
fn luma(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let v = maxc;
    let delta = maxc - minc;
    if delta <= 0.0 {
        return (0.0, 0.0, v);
    }
    let s = delta / maxc;
    let h = if maxc == r {
        ((g - b) / delta).rem_euclid(6.0)
    } else if maxc == g {
        (b - r) / delta + 2.0
    } else {
        (r - g) / delta + 4.0
    };
    (h / 6.0, s, v)
}

fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let h6 = h.rem_euclid(1.0) * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let p = v * (1.0 - s);
    let q = v * (1.0 - s * f);
    let t = v * (1.0 - s * (1.0 - f));
    match i as i32 % 6 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

impl ViewPipeline {
    /// `mean` and `std` have one entry per image channel (in [0, 1] units).
    pub fn new(cfg: AugmentConfig, mean: &[f32], std: &[f32]) -> Result<Self, DataError> {
        cfg.validate()?;
        if mean.is_empty()
            || mean.len() != std.len()
            || std.iter().any(|&s| s <= 0.0 || !s.is_finite())
        {
            return Err(DataError::Augment {
                field: "std",
                problem: format!("mean {mean:?} and std {std:?} need equal lengths and std > 0"),
            });
        }
        Ok(Self {
            cfg,
            mean: mean.to_vec(),
            inv_std: std.iter().map(|s| 1.0 / s).collect(),
        })
    }

    pub fn config(&self) -> &AugmentConfig {
        &self.cfg
    }

    /// Output floats per image for `channels` input channels.
    pub fn out_len(&self, channels: usize) -> usize {
        channels * self.cfg.size * self.cfg.size
    }

    /// Augments one HWC u8 image into `out` (CHW, normalised, `out_len` floats) and says where
    /// the view came from. `scratch` is reused between calls to stay allocation-free.
    #[allow(clippy::too_many_arguments)]
    pub fn apply<R: Rng>(
        &self,
        img: &[u8],
        (height, width, c): (usize, usize, usize),
        rng: &mut R,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) -> ViewGeometry {
        assert_eq!(
            self.mean.len(),
            c,
            "normalisation has {} channels, the image {c}",
            self.mean.len()
        );
        let cfg = &self.cfg;
        let s = cfg.size;
        let crop = sample_crop(rng, height, width, cfg.crop_scale, cfg.crop_ratio);
        let flip = rng.gen::<f32>() < cfg.hflip_p;
        let geometry = ViewGeometry {
            top: crop.top as f32,
            left: crop.left as f32,
            height: crop.h as f32,
            width: crop.w as f32,
            flip,
            size: s,
        };
        scratch.clear();
        scratch.resize(s * s * c, 0.0);
        let buf = scratch.as_mut_slice();
        // Bilinear resample of the crop (half-pixel centres, clamped to the crop), flip folded in.
        let (sy, sx) = (crop.h as f32 / s as f32, crop.w as f32 / s as f32);
        for oy in 0..s {
            let fy = ((oy as f32 + 0.5) * sy - 0.5).clamp(0.0, (crop.h - 1) as f32);
            let y0 = fy.floor() as usize;
            let y1 = (y0 + 1).min(crop.h - 1);
            let wy = fy - y0 as f32;
            for ox in 0..s {
                let tx = if flip { s - 1 - ox } else { ox };
                let fx = ((tx as f32 + 0.5) * sx - 0.5).clamp(0.0, (crop.w - 1) as f32);
                let x0 = fx.floor() as usize;
                let x1 = (x0 + 1).min(crop.w - 1);
                let wx = fx - x0 as f32;
                let p = |y: usize, x: usize, ch: usize| {
                    img[((crop.top + y) * width + crop.left + x) * c + ch] as f32
                };
                for ch in 0..c {
                    let top = p(y0, x0, ch) * (1.0 - wx) + p(y0, x1, ch) * wx;
                    let bot = p(y1, x0, ch) * (1.0 - wx) + p(y1, x1, ch) * wx;
                    buf[(oy * s + ox) * c + ch] = (top * (1.0 - wy) + bot * wy) * (1.0 / 255.0);
                }
            }
        }
        if rng.gen::<f32>() < cfg.jitter_p {
            let mut order = [0usize, 1, 2, 3];
            for i in (1..4).rev() {
                order.swap(i, rng.gen_range(0..=i));
            }
            let factor = |rng: &mut R, v: f32| {
                if v > 0.0 {
                    rng.gen_range((1.0 - v).max(0.0)..=1.0 + v)
                } else {
                    1.0
                }
            };
            let b = factor(rng, cfg.brightness);
            let ct = factor(rng, cfg.contrast);
            let sat = factor(rng, cfg.saturation);
            let hue = if cfg.hue > 0.0 {
                rng.gen_range(-cfg.hue..=cfg.hue)
            } else {
                0.0
            };
            for op in order {
                match op {
                    0 if b != 1.0 => buf.iter_mut().for_each(|x| *x = (*x * b).clamp(0.0, 1.0)),
                    1 if ct != 1.0 => {
                        let mean = if c == 3 {
                            buf.chunks_exact(3)
                                .map(|p| luma(p[0], p[1], p[2]))
                                .sum::<f32>()
                                / (s * s) as f32
                        } else {
                            buf.iter().sum::<f32>() / buf.len() as f32
                        };
                        buf.iter_mut()
                            .for_each(|x| *x = (ct * *x + (1.0 - ct) * mean).clamp(0.0, 1.0));
                    }
                    2 if sat != 1.0 && c == 3 => {
                        for p in buf.chunks_exact_mut(3) {
                            let l = luma(p[0], p[1], p[2]);
                            for v in p.iter_mut() {
                                *v = (sat * *v + (1.0 - sat) * l).clamp(0.0, 1.0);
                            }
                        }
                    }
                    3 if hue != 0.0 && c == 3 => {
                        for p in buf.chunks_exact_mut(3) {
                            let (h, sv, v) = rgb_to_hsv(p[0], p[1], p[2]);
                            let (r, g, bb) = hsv_to_rgb(h + hue, sv, v);
                            p[0] = r;
                            p[1] = g;
                            p[2] = bb;
                        }
                    }
                    _ => {}
                }
            }
        }
        if rng.gen::<f32>() < cfg.grayscale_p && c == 3 {
            for p in buf.chunks_exact_mut(3) {
                let l = luma(p[0], p[1], p[2]);
                p.fill(l);
            }
        }
        if rng.gen::<f32>() < cfg.blur_p {
            let sigma = rng.gen_range(cfg.blur_sigma[0]..=cfg.blur_sigma[1]);
            gaussian_blur(buf, s, c, sigma, cfg.blur_kernel);
        }
        if rng.gen::<f32>() < cfg.solarize_p {
            let t = cfg.solarize_threshold;
            buf.iter_mut().for_each(|x| {
                if *x >= t {
                    *x = 1.0 - *x
                }
            });
        }
        for ch in 0..c {
            let (m, is) = (self.mean[ch], self.inv_std[ch]);
            let dst = &mut out[ch * s * s..(ch + 1) * s * s];
            for (p, d) in dst.iter_mut().enumerate() {
                *d = (buf[p * c + ch] - m) * is;
            }
        }
        geometry
    }
}

/// Separable Gaussian blur with reflect padding, in place on an HWC square image.
fn gaussian_blur(buf: &mut [f32], s: usize, c: usize, sigma: f32, kernel: usize) {
    let k = if kernel == 0 {
        ((s / 10) | 1).max(3)
    } else {
        kernel
    };
    let r = (k / 2) as isize;
    let mut wts: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = wts.iter().sum();
    wts.iter_mut().for_each(|w| *w /= sum);
    let reflect = |i: isize| -> usize {
        let n = s as isize;
        let mut i = i;
        if n == 1 {
            return 0;
        }
        while i < 0 || i >= n {
            i = if i < 0 { -i } else { 2 * (n - 1) - i };
        }
        i as usize
    };
    let mut tmp = vec![0f32; buf.len()];
    for y in 0..s {
        for x in 0..s {
            for ch in 0..c {
                let mut acc = 0.0;
                for (t, w) in wts.iter().enumerate() {
                    acc += w * buf[(y * s + reflect(x as isize + t as isize - r)) * c + ch];
                }
                tmp[(y * s + x) * c + ch] = acc;
            }
        }
    }
    for y in 0..s {
        for x in 0..s {
            for ch in 0..c {
                let mut acc = 0.0;
                for (t, w) in wts.iter().enumerate() {
                    acc += w * tmp[(reflect(y as isize + t as isize - r) * s + x) * c + ch];
                }
                buf[(y * s + x) * c + ch] = acc;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SampleRng;

    fn grey_ramp(n: usize) -> Vec<u8> {
        (0..n * n).map(|i| (i * 255 / (n * n - 1)) as u8).collect()
    }

    /// On an image whose red channel is 6·x and green 6·y (at pixel centres), every view pixel
    /// away from the crop's border shows the ramp's value at the source point its geometry names.
    #[test]
    fn a_views_geometry_names_the_source_point_each_pixel_shows() {
        let n = 40;
        let mut img = vec![0u8; n * n * 3];
        for y in 0..n {
            for x in 0..n {
                img[(y * n + x) * 3] = (6 * x) as u8;
                img[(y * n + x) * 3 + 1] = (6 * y) as u8;
            }
        }
        let cfg = AugmentConfig {
            crop_scale: [0.2, 0.7],
            ..AugmentConfig::identity(16)
        };
        let cfg = AugmentConfig {
            hflip_p: 0.5,
            ..cfg
        };
        let p = ViewPipeline::new(cfg, &[0.0; 3], &[1.0; 3]).unwrap();
        let mut out = vec![0f32; 3 * 16 * 16];
        let mut flips = [0; 2];
        for seed in 0..40 {
            let g = p.apply(
                &img,
                (n, n, 3),
                &mut SampleRng::new(seed, 0, 0, 0),
                &mut out,
                &mut Vec::new(),
            );
            assert_eq!(g.size, 16);
            flips[g.flip as usize] += 1;
            for oy in 1..15 {
                for ox in 1..15 {
                    let [sx, sy] = g.to_source([ox as f32 + 0.5, oy as f32 + 0.5]);
                    let (r, gr) = (out[oy * 16 + ox] * 255.0, out[256 + oy * 16 + ox] * 255.0);
                    assert!(
                        (r - 6.0 * (sx - 0.5)).abs() < 2e-3,
                        "seed {seed} ({ox}, {oy}): {r} vs x {sx}"
                    );
                    assert!(
                        (gr - 6.0 * (sy - 0.5)).abs() < 2e-3,
                        "seed {seed}: {gr} vs y {sy}"
                    );
                    // from_source inverts to_source.
                    let back = g.from_source([sx, sy]);
                    assert!(
                        (back[0] - ox as f32 - 0.5).abs() < 1e-4
                            && (back[1] - oy as f32 - 0.5).abs() < 1e-4
                    );
                }
            }
        }
        assert!(flips[0] > 5 && flips[1] > 5, "{flips:?}");
        // Two views of one image: a point maps to where the other view shows the same source point.
        let a = ViewGeometry {
            top: 4.0,
            left: 10.0,
            height: 20.0,
            width: 16.0,
            flip: false,
            size: 8,
        };
        let b = ViewGeometry {
            top: 0.0,
            left: 0.0,
            height: 40.0,
            width: 40.0,
            flip: true,
            size: 8,
        };
        // a's (2, 2) is source (14, 9): in b (a flipped 5× reduction) at (8 − 2.8, 1.8).
        let q = a.map_to(&b, [2.0, 2.0]);
        assert!(
            (q[0] - 5.2).abs() < 1e-5 && (q[1] - 1.8).abs() < 1e-5,
            "{q:?}"
        );
        assert_eq!(
            a.cell_centre(0, 0, 4.0),
            [10.0 + 2.0 * 2.0, 4.0 + 2.0 * 2.5]
        );
        assert!((a.cell_diagonal(4.0) - 8.0f32.hypot(10.0)).abs() < 1e-5);
    }

    #[test]
    fn identity_view_reproduces_the_normalised_image() {
        let img = grey_ramp(8);
        let p = ViewPipeline::new(AugmentConfig::identity(8), &[0.5], &[0.25]).unwrap();
        let mut out = vec![0f32; 64];
        p.apply(
            &img,
            (8, 8, 1),
            &mut SampleRng::new(0, 0, 0, 0),
            &mut out,
            &mut Vec::new(),
        );
        for i in 0..64 {
            let want = (img[i] as f32 / 255.0 - 0.5) / 0.25;
            assert!((out[i] - want).abs() < 1e-5, "{i}: {} vs {want}", out[i]);
        }
    }

    #[test]
    fn flip_mirrors_columns() {
        let img = grey_ramp(6);
        let mut cfg = AugmentConfig::identity(6);
        cfg.hflip_p = 1.0;
        let p = ViewPipeline::new(cfg, &[0.0], &[1.0]).unwrap();
        let mut out = vec![0f32; 36];
        p.apply(
            &img,
            (6, 6, 1),
            &mut SampleRng::new(0, 0, 0, 0),
            &mut out,
            &mut Vec::new(),
        );
        assert!((out[0] - img[5] as f32 / 255.0).abs() < 1e-6);
        assert!((out[11] - img[6] as f32 / 255.0).abs() < 1e-6);
    }

    #[test]
    fn crops_stay_inside_and_respect_scale() {
        let mut rng = SampleRng::new(3, 0, 0, 0);
        for _ in 0..2000 {
            let c = sample_crop(&mut rng, 28, 28, [0.2, 1.0], [0.75, 4.0 / 3.0]);
            assert!(c.top + c.h <= 28 && c.left + c.w <= 28 && c.h > 0 && c.w > 0);
            let frac = (c.h * c.w) as f32 / 784.0;
            assert!(frac > 0.15 && frac <= 1.0, "{c:?}");
        }
    }

    #[test]
    fn grayscale_and_solarize() {
        // One red pixel image, 2×2.
        let img = vec![255u8, 0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0];
        let mut cfg = AugmentConfig::identity(2);
        cfg.grayscale_p = 1.0;
        let p = ViewPipeline::new(cfg.clone(), &[0.0; 3], &[1.0; 3]).unwrap();
        let mut out = vec![0f32; 12];
        p.apply(
            &img,
            (2, 2, 3),
            &mut SampleRng::new(0, 0, 0, 0),
            &mut out,
            &mut Vec::new(),
        );
        assert!(out.iter().all(|&v| (v - 0.299).abs() < 1e-6), "{out:?}");
        cfg.solarize_p = 1.0;
        cfg.solarize_threshold = 0.2;
        let p = ViewPipeline::new(cfg, &[0.0; 3], &[1.0; 3]).unwrap();
        p.apply(
            &img,
            (2, 2, 3),
            &mut SampleRng::new(0, 0, 0, 0),
            &mut out,
            &mut Vec::new(),
        );
        assert!(out.iter().all(|&v| (v - 0.701).abs() < 1e-6), "{out:?}");
    }

    #[test]
    fn hsv_round_trip() {
        for &(r, g, b) in &[
            (0.2f32, 0.5, 0.9),
            (0.9, 0.1, 0.1),
            (0.3, 0.3, 0.3),
            (0.0, 1.0, 0.5),
        ] {
            let (h, s, v) = rgb_to_hsv(r, g, b);
            let (r2, g2, b2) = hsv_to_rgb(h, s, v);
            assert!((r - r2).abs() < 1e-5 && (g - g2).abs() < 1e-5 && (b - b2).abs() < 1e-5);
        }
    }

    #[test]
    fn blur_keeps_constant_images_and_smooths_edges() {
        let mut buf = vec![0.7f32; 16 * 16];
        gaussian_blur(&mut buf, 16, 1, 1.5, 5);
        assert!(buf.iter().all(|&v| (v - 0.7).abs() < 1e-5));
        let mut step: Vec<f32> = (0..256)
            .map(|i| if i % 16 < 8 { 0.0 } else { 1.0 })
            .collect();
        gaussian_blur(&mut step, 16, 1, 1.0, 5);
        assert!(step[7] > 0.05 && step[8] < 0.95);
    }

    #[test]
    fn validation_names_the_field() {
        let mut cfg = AugmentConfig::identity(8);
        cfg.jitter_p = 1.5;
        assert_eq!(
            cfg.validate().unwrap_err().to_string(),
            "invalid augmentation setting 'jitter_p': a probability must be in [0, 1], got 1.5"
        );
        let mut cfg = AugmentConfig::identity(8);
        cfg.crop_scale = [0.5, 0.2];
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("'crop_scale'"));
    }
}
