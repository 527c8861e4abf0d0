//! A set of u8 images (HWC, grey or RGB) of one size, with optional class labels: decoded once into
//! memory, or decoded on every read from a [`LazySource`] when the decoded set would not fit.

use crate::error::DataError;
use std::borrow::Cow;
use std::sync::Arc;

/// Images decoded on demand (image files on disk): what an [`ImageSet`] reads when its pixels are
/// not kept in memory. Reading image `i` twice gives the same bytes.
pub trait LazySource: Send + Sync + std::fmt::Debug {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Image `i` as HWC bytes of the set's size; an error names the file and the problem.
    fn read(&self, i: usize) -> Result<Vec<u8>, DataError>;
    /// The images at `indices`, in that order, as a new source.
    fn select(&self, indices: &[usize]) -> Arc<dyn LazySource>;
}

#[derive(Debug, Clone)]
enum Pixels {
    /// `[n, h, w, c]` contiguous.
    Memory(Vec<u8>),
    Lazy(Arc<dyn LazySource>),
}

/// Images of one size: contiguous `[n, h, w, c]` u8 in memory, or a [`LazySource`] decoded on
/// every read.
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub name: String,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pixels: Pixels,
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
            pixels: Pixels::Memory(pixels),
            labels,
            classes,
        })
    }

    /// A set whose images are decoded from `source` on every read.
    pub fn lazy(
        name: impl Into<String>,
        (height, width, channels): (usize, usize, usize),
        source: Arc<dyn LazySource>,
        labels: Option<Vec<u32>>,
        classes: Vec<String>,
    ) -> Result<Self, DataError> {
        let name = name.into();
        if let Some(l) = &labels {
            if l.len() != source.len() {
                return Err(DataError::Loader(format!(
                    "{name}: {} labels for {} images",
                    l.len(),
                    source.len()
                )));
            }
        }
        Ok(Self {
            name,
            height,
            width,
            channels,
            pixels: Pixels::Lazy(source),
            labels,
            classes,
        })
    }

    pub fn len(&self) -> usize {
        match &self.pixels {
            Pixels::Memory(p) => p.len() / (self.height * self.width * self.channels),
            Pixels::Lazy(s) => s.len(),
        }
    }

    /// Whether the pixels are kept in memory (else every read decodes).
    pub fn in_memory(&self) -> bool {
        matches!(self.pixels, Pixels::Memory(_))
    }

    /// Bytes of one decoded image.
    pub fn image_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image `i` as HWC bytes: borrowed from memory, or decoded now.
    pub fn image(&self, i: usize) -> Result<Cow<'_, [u8]>, DataError> {
        let per = self.image_len();
        match &self.pixels {
            Pixels::Memory(p) => Ok(Cow::Borrowed(&p[i * per..(i + 1) * per])),
            Pixels::Lazy(s) => {
                let v = s.read(i)?;
                if v.len() != per {
                    return Err(DataError::Loader(format!(
                        "{}: image {i} decoded to {} bytes, expected {per}",
                        self.name,
                        v.len()
                    )));
                }
                Ok(Cow::Owned(v))
            }
        }
    }

    pub fn label(&self, i: usize) -> Option<u32> {
        self.labels.as_ref().map(|l| l[i])
    }

    pub fn labels(&self) -> Option<&[u32]> {
        self.labels.as_deref()
    }

    /// A new set holding the images at `indices`, in that order (lazy stays lazy).
    pub fn select(&self, name: impl Into<String>, indices: &[usize]) -> ImageSet {
        let pixels = match &self.pixels {
            Pixels::Memory(p) => {
                let per = self.image_len();
                let mut out = Vec::with_capacity(indices.len() * per);
                for &i in indices {
                    out.extend_from_slice(&p[i * per..(i + 1) * per]);
                }
                Pixels::Memory(out)
            }
            Pixels::Lazy(s) => Pixels::Lazy(s.select(indices)),
        };
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
    ) -> Result<Vec<f32>, DataError> {
        use rayon::prelude::*;
        let (h, w, c) = (self.height, self.width, self.channels);
        let mut out = vec![0f32; range.len() * c * h * w];
        // Parallel over images: a lazy set decodes here.
        out.par_chunks_mut(c * h * w)
            .zip(range.into_par_iter())
            .try_for_each(|(dst, i)| {
                let img = self.image(i)?;
                for ch in 0..c {
                    let (m, s) = (mean[ch], std[ch]);
                    for p in 0..h * w {
                        dst[ch * h * w + p] = (img[p * c + ch] as f32 / 255.0 - m) / s;
                    }
                }
                Ok::<(), DataError>(())
            })?;
        Ok(out)
    }

    /// Per-channel mean and standard deviation (population) of the pixel values in [0, 1] units,
    /// over at most `max_images` images spread evenly over the set (all when it has fewer): the
    /// normalisation of a dataset with no published one. Exact sums (integer per image, then f64),
    /// so the result does not depend on the thread count.
    pub fn channel_stats(&self, max_images: usize) -> Result<(Vec<f32>, Vec<f32>), DataError> {
        use rayon::prelude::*;
        let n = self.len();
        let take = n.min(max_images.max(1));
        if take == 0 {
            return Err(DataError::Loader(format!("{}: no images", self.name)));
        }
        let c = self.channels;
        let picked: Vec<usize> = (0..take).map(|k| k * n / take).collect();
        // Per image and channel: (Σ v, Σ v²) as integers, exact.
        let sums: Vec<Vec<(u64, u64)>> = picked
            .par_iter()
            .map(|&i| {
                let img = self.image(i)?;
                let mut acc = vec![(0u64, 0u64); c];
                for px in img.chunks_exact(c) {
                    for (a, &v) in acc.iter_mut().zip(px) {
                        a.0 += v as u64;
                        a.1 += (v as u64) * (v as u64);
                    }
                }
                Ok(acc)
            })
            .collect::<Result<_, DataError>>()?;
        let count = (take * self.height * self.width) as f64;
        let mut mean = Vec::with_capacity(c);
        let mut std = Vec::with_capacity(c);
        for ch in 0..c {
            let (s, s2) = sums.iter().fold((0u128, 0u128), |(a, b), v| {
                (a + v[ch].0 as u128, b + v[ch].1 as u128)
            });
            let m = s as f64 / count / 255.0;
            let var = (s2 as f64 / count / (255.0 * 255.0) - m * m).max(0.0);
            mean.push(m as f32);
            // A constant channel would divide by zero: its values normalise to 0 with std 1.
            std.push(if var > 0.0 { var.sqrt() as f32 } else { 1.0 });
        }
        Ok((mean, std))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_stats_are_the_pixel_mean_and_population_std() {
        // Two 1×2 RGB images: R = 0, 255, 255, 0 → mean 0.5, std 0.5; G constant 51 → 0.2, std 1
        // (a constant channel); B = 0, 0, 0, 255 → mean 0.25, std √(0.25·0.75).
        let px = vec![0, 51, 0, 255, 51, 0, 255, 51, 0, 0, 51, 255];
        let set = ImageSet::new("s", (1, 2, 3), px, None, vec![]).unwrap();
        let (m, s) = set.channel_stats(10).unwrap();
        assert_eq!(m, [0.5, 0.2, 0.25]);
        assert_eq!(s, [0.5, 1.0, (0.1875f64).sqrt() as f32]);
        // One image only (spread evenly: image 0): R = 0, 255.
        let (m, _) = set.channel_stats(1).unwrap();
        assert_eq!(m[0], 0.5);
        assert_eq!(m[2], 0.0);
    }
}
