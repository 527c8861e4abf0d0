//! An in-memory set of u8 images (HWC, grey or RGB) with optional class labels.

use crate::error::DataError;

/// Decoded images of one size, stored contiguously as `[n, h, w, c]` u8.
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub name: String,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pixels: Vec<u8>,
    labels: Option<Vec<u32>>,
    pub classes: Vec<String>,
}

impl ImageSet {
    pub fn new(
        name: impl Into<String>,
        (height, width, channels): (usize, usize, usize),
        pixels: Vec<u8>,
        labels: Option<Vec<u32>>,
        classes: Vec<String>,
    ) -> Result<Self, DataError> {
        let name = name.into();
        let per = height * width * channels;
        if per == 0 || !pixels.len().is_multiple_of(per) {
            return Err(DataError::Loader(format!(
                "{name}: {} bytes is not a whole number of {height}×{width}×{channels} images",
                pixels.len()
            )));
        }
        if let Some(l) = &labels {
            if l.len() != pixels.len() / per {
                return Err(DataError::Loader(format!(
                    "{name}: {} labels for {} images",
                    l.len(),
                    pixels.len() / per
                )));
            }
        }
        Ok(Self {
            name,
            height,
            width,
            channels,
            pixels,
            labels,
            classes,
        })
    }

    pub fn len(&self) -> usize {
        self.pixels.len() / (self.height * self.width * self.channels)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image `i` as HWC bytes.
    pub fn image(&self, i: usize) -> &[u8] {
        let per = self.height * self.width * self.channels;
        &self.pixels[i * per..(i + 1) * per]
    }

    pub fn label(&self, i: usize) -> Option<u32> {
        self.labels.as_ref().map(|l| l[i])
    }

    pub fn labels(&self) -> Option<&[u32]> {
        self.labels.as_deref()
    }

    /// A new set holding the images at `indices`, in that order.
    pub fn select(&self, name: impl Into<String>, indices: &[usize]) -> ImageSet {
        let per = self.height * self.width * self.channels;
        let mut pixels = Vec::with_capacity(indices.len() * per);
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        let labels = self
            .labels
            .as_ref()
            .map(|l| indices.iter().map(|&i| l[i]).collect());
        ImageSet {
            name: name.into(),
            height: self.height,
            width: self.width,
            channels: self.channels,
            pixels,
            labels,
            classes: self.classes.clone(),
        }
    }

    /// The first `n` images (all when `n ≥ len`).
    pub fn head(&self, n: usize) -> ImageSet {
        let idx: Vec<usize> = (0..n.min(self.len())).collect();
        self.select(format!("{}[:{}]", self.name, idx.len()), &idx)
    }

    /// Clean images (no augmentation) normalised with `mean`/`std` per channel, as `[n, c, h, w]`
    /// f32 in row-major order, for evaluation.
    pub fn normalized_chw(
        &self,
        range: std::ops::Range<usize>,
        mean: &[f32],
        std: &[f32],
    ) -> Vec<f32> {
        let (h, w, c) = (self.height, self.width, self.channels);
        let mut out = vec![0f32; range.len() * c * h * w];
        for (k, i) in range.enumerate() {
            let img = self.image(i);
            let dst = &mut out[k * c * h * w..(k + 1) * c * h * w];
            for ch in 0..c {
                let (m, s) = (mean[ch], std[ch]);
                for p in 0..h * w {
                    dst[ch * h * w + p] = (img[p * c + ch] as f32 / 255.0 - m) / s;
                }
            }
        }
        out
    }
}
