//! Multi-view batching: shuffles per epoch, augments every sample of a batch in parallel (rayon),
//! and prefetches batches on a background thread while the model trains.
//!
//! A batch is a pure function of (seed, epoch, step): sample `i` of view `v` is augmented with the
//! stream `SampleRng(seed, epoch, i, v)`, so thread count and prefetch depth never change a bit.
//!
//! A sample is an image ([`Sampling::Images`]: every view is a pipeline applied to it) or a clip
//! of consecutive images ([`Sampling::Clips`]: view `t` is frame `t`, every frame through the same
//! pipeline, with one draw for the clip or one per frame), or a frame paired with another frame of
//! its clip ([`Sampling::FramePairs`]: view 1 shows the partner, the image-level positive).

use crate::augment::{ViewGeometry, ViewPipeline};
use crate::dataset::ImageSet;
use crate::error::DataError;
use crate::rng::{epoch_permutation, SampleRng};
use rayon::prelude::*;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

/// Batching settings.
#[derive(Debug, Clone, Copy)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub seed: u64,
    /// Batches built ahead of the consumer (0 builds on demand, on the consumer's thread).
    pub prefetch: usize,
}

/// What one sample of a batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sampling {
    /// Sample `i` is image `i`; view `v` is pipeline `v` applied to it.
    #[default]
    Images,
    /// Sample `i` is clip `i`: the images `i·frames .. (i+1)·frames` (a set of whole clips, frame
    /// by frame), through one pipeline, so view `t` is frame `t`.
    Clips { frames: usize, draws: ClipDraws },
    /// Sample `i` is image `i` of a set of whole `frames`-frame clips, paired with its
    /// **partner**: the frame `gap` later in the same clip (`gap` earlier when that runs past
    /// the clip's end), an image-level positive with no known pixel correspondence. View 1 is
    /// pipeline 1 applied to the partner; every other view `v` is pipeline `v` applied to
    /// image `i`. [`Batch::partners`] names the partners.
    ///
    /// With `links = 2`, a chain: the partner and the frame `gap` beyond it, in the direction
    /// that keeps both in the clip (later when `t + 2·gap` is in it, else earlier); view 3 shows
    /// the second ([`Batch::second_partners`]).
    FramePairs {
        frames: usize,
        gap: usize,
        links: usize,
    },
}

impl Sampling {
    /// The partners of image `i` under [`Sampling::FramePairs`]: `links` frames, each `gap`
    /// beyond the previous.
    pub fn partners(i: usize, frames: usize, gap: usize, links: usize) -> Vec<usize> {
        let t = i % frames;
        let forward = t + links * gap < frames;
        (1..=links)
            .map(|k| if forward { i + k * gap } else { i - k * gap })
            .collect()
    }
}

/// How the frames of a clip sample draw their augmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipDraws {
    /// The same crop, flip and colour for every frame: stream `SampleRng(seed, epoch, i, 0)`.
    PerClip,
    /// Frame `t` draws its own from `SampleRng(seed, epoch, i, t)` (a crop that jitters from
    /// frame to frame, so a feature cannot find its way back by its position in the frame).
    PerFrame,
}

/// One batch: every view of the same samples, as `[B, C, H, W]` row-major f32.
#[derive(Debug, Clone)]
pub struct Batch {
    pub epoch: u64,
    pub step: usize,
    /// Dataset indices of the samples (clip indices under [`Sampling::Clips`]).
    pub indices: Vec<usize>,
    pub labels: Option<Vec<u32>>,
    /// One buffer per view.
    pub views: Vec<Vec<f32>>,
    /// `(channels, height, width)` of each view.
    pub view_shapes: Vec<(usize, usize, usize)>,
    /// Per view, each sample's crop box and flip (the pixel correspondence between views).
    pub geometry: Vec<Vec<ViewGeometry>>,
    /// Under [`Sampling::FramePairs`], each sample's partner (the dataset index view 1 shows);
    /// empty otherwise.
    pub partners: Vec<usize>,
    /// Under a two-link [`Sampling::FramePairs`], the frame view 3 shows; empty otherwise.
    pub second_partners: Vec<usize>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.indices.len()
    }
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// Produces the batches of a dataset for any epoch. Incomplete last batches are dropped (SSL
/// losses want full batches; queues want `K % B == 0`).
#[derive(Clone)]
pub struct Loader {
    data: Arc<ImageSet>,
    views: Arc<Vec<ViewPipeline>>,
    cfg: LoaderConfig,
    sampling: Sampling,
}

impl Loader {
    pub fn new(
        data: Arc<ImageSet>,
        views: Vec<ViewPipeline>,
        cfg: LoaderConfig,
    ) -> Result<Self, DataError> {
        if cfg.batch_size == 0 {
            return Err(DataError::Loader("batch_size must be positive".into()));
        }
        if data.len() < cfg.batch_size {
            return Err(DataError::Loader(format!(
                "dataset '{}' has {} images, fewer than one batch of {}",
                data.name,
                data.len(),
                cfg.batch_size
            )));
        }
        if views.is_empty() {
            return Err(DataError::Loader("at least one view is needed".into()));
        }
        Ok(Self {
            data,
            views: Arc::new(views),
            cfg,
            sampling: Sampling::Images,
        })
    }

    /// The same loader with samples of another kind. Clips need exactly one pipeline, a set that
    /// is a whole number of clips, and at least one batch of clips.
    pub fn with_sampling(mut self, sampling: Sampling) -> Result<Self, DataError> {
        if let Sampling::FramePairs { frames, gap, links } = sampling {
            let name = &self.data.name;
            if frames == 0 || !self.data.len().is_multiple_of(frames) {
                return Err(DataError::Loader(format!(
                    "{name}: {} images is not a whole number of {frames}-frame clips",
                    self.data.len()
                )));
            }
            if !(1..=2).contains(&links) {
                return Err(DataError::Loader(format!(
                    "frame pairs link 1 or 2 partners, not {links}"
                )));
            }
            if gap == 0 || links * gap >= frames {
                return Err(DataError::Loader(format!(
                    "{name}: {links} partner(s) {gap} frames apart do not fit {frames}-frame clips"
                )));
            }
            let need = if links == 2 { 4 } else { 2 };
            if self.views.len() < need {
                return Err(DataError::Loader(format!(
                    "frame pairs with {links} partner(s) need at least {need} views (view 1 shows the partner{})",
                    if links == 2 { ", view 3 the second" } else { "" }
                )));
            }
        }
        if let Sampling::Clips { frames, .. } = sampling {
            let name = &self.data.name;
            if frames == 0 || !self.data.len().is_multiple_of(frames) {
                return Err(DataError::Loader(format!(
                    "{name}: {} images is not a whole number of {frames}-frame clips",
                    self.data.len()
                )));
            }
            if self.views.len() != 1 {
                return Err(DataError::Loader(format!(
                    "clip samples take one augmentation pipeline for every frame, not {}",
                    self.views.len()
                )));
            }
            if self.data.len() / frames < self.cfg.batch_size {
                return Err(DataError::Loader(format!(
                    "{name} has {} clips, fewer than one batch of {}",
                    self.data.len() / frames,
                    self.cfg.batch_size
                )));
            }
        }
        self.sampling = sampling;
        Ok(self)
    }

    /// Samples per epoch: images, or clips.
    pub fn samples(&self) -> usize {
        match self.sampling {
            Sampling::Images | Sampling::FramePairs { .. } => self.data.len(),
            Sampling::Clips { frames, .. } => self.data.len() / frames,
        }
    }

    /// Views of every sample: the pipelines, or the frames of a clip.
    pub fn views_per_sample(&self) -> usize {
        match self.sampling {
            Sampling::Images | Sampling::FramePairs { .. } => self.views.len(),
            Sampling::Clips { frames, .. } => frames,
        }
    }

    pub fn batches_per_epoch(&self) -> usize {
        self.samples() / self.cfg.batch_size
    }

    pub fn dataset(&self) -> &ImageSet {
        &self.data
    }

    /// Builds batch `step` of `epoch` from the epoch's permutation (parallel over samples). A
    /// set kept on disk decodes the batch's images first (in parallel, once for all views); a
    /// file that no longer decodes is an error naming it.
    pub fn build(&self, epoch: u64, step: usize, perm: &[usize]) -> Result<Batch, DataError> {
        let b = self.cfg.batch_size;
        let indices: Vec<usize> = perm[step * b..(step + 1) * b].to_vec();
        if let Sampling::Clips { frames, draws } = self.sampling {
            return self.build_clips(epoch, step, indices, frames, draws);
        }
        let d = &*self.data;
        let dims = (d.height, d.width, d.channels);
        // The images of a list of dataset indices, decoded in parallel when kept on disk.
        let load = |ix: &[usize]| -> Result<Vec<std::borrow::Cow<'_, [u8]>>, DataError> {
            ix.par_iter().map(|&i| d.image(i)).collect()
        };
        let images = load(&indices)?;
        let chains: Vec<Vec<usize>> = match self.sampling {
            Sampling::FramePairs { frames, gap, links } => indices
                .iter()
                .map(|&i| Sampling::partners(i, frames, gap, links))
                .collect(),
            _ => Vec::new(),
        };
        let partners: Vec<usize> = chains.iter().map(|p| p[0]).collect();
        let second_partners: Vec<usize> = chains.iter().filter_map(|p| p.get(1).copied()).collect();
        let (partner_images, second_images) = (load(&partners)?, load(&second_partners)?);
        let mut views = Vec::with_capacity(self.views.len());
        let mut view_shapes = Vec::with_capacity(self.views.len());
        let mut geometry = Vec::with_capacity(self.views.len());
        for (v, pipe) in self.views.iter().enumerate() {
            let per = pipe.out_len(d.channels);
            let mut out = vec![0f32; b * per];
            // The stream stays the sample's own when a view shows its partner.
            let source = match v {
                1 if !partners.is_empty() => &partner_images,
                3 if !second_partners.is_empty() => &second_images,
                _ => &images,
            };
            let geo: Vec<ViewGeometry> = out
                .par_chunks_mut(per)
                .zip(indices.par_iter().zip(source.par_iter()))
                .map_init(Vec::new, |scratch, (dst, (&i, img))| {
                    let mut rng = SampleRng::new(self.cfg.seed, epoch, i as u64, v as u64);
                    pipe.apply(img, dims, &mut rng, dst, scratch)
                })
                .collect();
            views.push(out);
            geometry.push(geo);
            let s = pipe.config().size;
            view_shapes.push((d.channels, s, s));
        }
        let labels = d.labels().map(|l| indices.iter().map(|&i| l[i]).collect());
        Ok(Batch {
            epoch,
            step,
            indices,
            labels,
            views,
            view_shapes,
            geometry,
            partners,
            second_partners,
        })
    }

    /// A batch of clips: frame `t` of every clip is view `t`, all frames of a clip through the
    /// one pipeline with the clip's stream (a fresh copy for every frame, so the draws are the
    /// same) or with each frame's own.
    fn build_clips(
        &self,
        epoch: u64,
        step: usize,
        indices: Vec<usize>,
        frames: usize,
        draws: ClipDraws,
    ) -> Result<Batch, DataError> {
        let b = indices.len();
        let d = &*self.data;
        let dims = (d.height, d.width, d.channels);
        let pipe = &self.views[0];
        let per = pipe.out_len(d.channels);
        let s = pipe.config().size;
        let mut views = Vec::with_capacity(frames);
        let mut geometry = Vec::with_capacity(frames);
        for t in 0..frames {
            let images: Vec<std::borrow::Cow<'_, [u8]>> = indices
                .par_iter()
                .map(|&c| d.image(c * frames + t))
                .collect::<Result<_, _>>()?;
            let mut out = vec![0f32; b * per];
            let geo: Vec<ViewGeometry> = out
                .par_chunks_mut(per)
                .zip(indices.par_iter().zip(images.par_iter()))
                .map_init(Vec::new, |scratch, (dst, (&c, img))| {
                    let stream = match draws {
                        ClipDraws::PerClip => 0,
                        ClipDraws::PerFrame => t as u64,
                    };
                    let mut rng = SampleRng::new(self.cfg.seed, epoch, c as u64, stream);
                    pipe.apply(img, dims, &mut rng, dst, scratch)
                })
                .collect();
            views.push(out);
            geometry.push(geo);
        }
        Ok(Batch {
            epoch,
            step,
            indices,
            labels: None,
            views,
            view_shapes: vec![(d.channels, s, s); frames],
            geometry,
            partners: Vec::new(),
            second_partners: Vec::new(),
        })
    }

    /// The batches of `epoch` from `start_step` on, built `prefetch` ahead on a background thread.
    /// After an error the epoch ends.
    pub fn epoch(&self, epoch: u64, start_step: usize) -> EpochIter {
        let perm = Arc::new(epoch_permutation(self.cfg.seed, epoch, self.samples()));
        let n = self.batches_per_epoch();
        if self.cfg.prefetch == 0 {
            return EpochIter {
                inner: Inner::Sync {
                    loader: self.clone(),
                    perm,
                    next: start_step,
                    end: n,
                },
                epoch,
            };
        }
        let (tx, rx) = sync_channel(self.cfg.prefetch);
        let loader = self.clone();
        std::thread::Builder::new()
            .name(format!("gyre-loader-e{epoch}"))
            .spawn(move || {
                for step in start_step..n {
                    let b = loader.build(epoch, step, &perm);
                    let failed = b.is_err();
                    if tx.send(b).is_err() || failed {
                        return; // consumer gone, or the epoch ends at the error
                    }
                }
            })
            .expect("spawn loader thread");
        EpochIter {
            inner: Inner::Prefetch(rx),
            epoch,
        }
    }
}

enum Inner {
    Sync {
        loader: Loader,
        perm: Arc<Vec<usize>>,
        next: usize,
        end: usize,
    },
    Prefetch(Receiver<Result<Batch, DataError>>),
}

/// Iterator over one epoch's batches.
pub struct EpochIter {
    inner: Inner,
    pub epoch: u64,
}

impl Iterator for EpochIter {
    type Item = Result<Batch, DataError>;
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Sync {
                loader,
                perm,
                next,
                end,
            } => {
                if *next >= *end {
                    return None;
                }
                *next += 1;
                let b = loader.build(self.epoch, *next - 1, perm);
                if b.is_err() {
                    *next = *end;
                }
                Some(b)
            }
            Inner::Prefetch(rx) => rx.recv().ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::AugmentConfig;

    fn toy() -> Arc<ImageSet> {
        let px: Vec<u8> = (0..64 * 12 * 12 * 3)
            .map(|i| ((i * 37 + i / 7) % 256) as u8)
            .collect();
        Arc::new(
            ImageSet::new(
                "toy",
                (12, 12, 3),
                px,
                Some((0..64).map(|i| i % 4).collect()),
                vec![],
            )
            .unwrap(),
        )
    }

    fn strong() -> AugmentConfig {
        AugmentConfig {
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.1,
            grayscale_p: 0.2,
            blur_p: 0.5,
            solarize_p: 0.2,
            ..AugmentConfig {
                crop_scale: [0.2, 1.0],
                ..AugmentConfig::identity(10)
            }
        }
    }

    fn loader(prefetch: usize) -> Loader {
        let v = ViewPipeline::new(strong(), &[0.5; 3], &[0.25; 3]).unwrap();
        Loader::new(
            toy(),
            vec![v.clone(), v],
            LoaderConfig {
                batch_size: 16,
                seed: 9,
                prefetch,
            },
        )
        .unwrap()
    }

    fn run(threads: usize, prefetch: usize) -> Vec<Batch> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let l = loader(prefetch);
            (0..2)
                .flat_map(|e| l.epoch(e, 0).map(Result::unwrap).collect::<Vec<_>>())
                .collect()
        })
    }

    #[test]
    fn same_batches_at_one_and_two_threads_and_any_prefetch() {
        let a = run(1, 0);
        let b = run(2, 3);
        let c = run(2, 1);
        assert_eq!(a.len(), 8);
        for ((x, y), z) in a.iter().zip(&b).zip(&c) {
            assert_eq!(x.indices, y.indices);
            assert_eq!(x.views, y.views, "epoch {} step {}", x.epoch, x.step);
            assert_eq!(x.views, z.views);
        }
        // Two views of one sample differ; epochs differ.
        assert_ne!(a[0].views[0], a[0].views[1]);
        assert_ne!(a[0].indices, a[4].indices);
    }

    #[test]
    fn resumes_mid_epoch_with_the_same_batches() {
        let l = loader(2);
        let full: Vec<Batch> = l.epoch(1, 0).map(Result::unwrap).collect();
        let tail: Vec<Batch> = l.epoch(1, 2).map(Result::unwrap).collect();
        assert_eq!(tail.len(), 2);
        assert_eq!(tail[0].views, full[2].views);
        assert_eq!(tail[1].indices, full[3].indices);
    }

    #[test]
    fn rejects_too_small_dataset() {
        let v = ViewPipeline::new(strong(), &[0.5; 3], &[0.25; 3]).unwrap();
        let e = Loader::new(
            toy(),
            vec![v],
            LoaderConfig {
                batch_size: 100,
                seed: 0,
                prefetch: 0,
            },
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("fewer than one batch of 100"));
    }

    /// 16 clips of 4 frames: frames 0 and 2 of every clip are the same image, 1 and 3 differ.
    fn clips() -> Arc<ImageSet> {
        let per = 12 * 12 * 3;
        let mut px = Vec::with_capacity(64 * per);
        for c in 0..16usize {
            for t in 0..4usize {
                let key = if t == 2 { 0 } else { t };
                px.extend((0..per).map(|i| ((i * 37 + c * 11 + key * 101) % 256) as u8));
            }
        }
        Arc::new(ImageSet::new("clips", (12, 12, 3), px, None, vec![]).unwrap())
    }

    fn clip_loader(views: usize, draws: ClipDraws) -> Result<Loader, DataError> {
        let v = ViewPipeline::new(strong(), &[0.5; 3], &[0.25; 3]).unwrap();
        Loader::new(
            clips(),
            vec![v; views],
            LoaderConfig {
                batch_size: 4,
                seed: 3,
                prefetch: 0,
            },
        )?
        .with_sampling(Sampling::Clips { frames: 4, draws })
    }

    #[test]
    fn clip_samples_are_frames_with_one_draw() {
        let l = clip_loader(1, ClipDraws::PerClip).unwrap();
        assert_eq!(
            (l.samples(), l.batches_per_epoch(), l.views_per_sample()),
            (16, 4, 4)
        );
        let batches: Vec<Batch> = l.epoch(0, 0).map(Result::unwrap).collect();
        let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..16).collect::<Vec<_>>());
        let b = &batches[0];
        assert_eq!(b.views.len(), 4);
        assert_eq!(b.view_shapes, vec![(3, 10, 10); 4]);
        // The same frame twice in a clip gives the same view (one draw for the clip) …
        assert_eq!(b.views[0], b.views[2]);
        assert_ne!(b.views[0], b.views[1]);
        // … with the same crop and flip for every frame, and different ones across clips.
        for t in 1..4 {
            assert_eq!(b.geometry[t], b.geometry[0]);
        }
        assert_ne!(b.geometry[0][0], b.geometry[0][1]);
        // The same as building it again.
        let again = l.epoch(0, 0).next().unwrap().unwrap();
        assert_eq!(again.views, b.views);
        // Per-frame draws: the same clips, each frame with its own crop.
        let l = clip_loader(1, ClipDraws::PerFrame).unwrap();
        let p = l.epoch(0, 0).next().unwrap().unwrap();
        assert_eq!(p.indices, b.indices);
        assert_eq!(
            p.geometry[0], b.geometry[0],
            "frame 0 draws as the whole clip did"
        );
        assert_ne!(p.geometry[1], p.geometry[0]);
        assert_ne!(p.views[2], p.views[0]);
    }

    #[test]
    fn clip_sampling_refuses_what_does_not_fit() {
        let e = clip_loader(2, ClipDraws::PerClip)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("one augmentation pipeline"), "{e}");
        let v = ViewPipeline::new(strong(), &[0.5; 3], &[0.25; 3]).unwrap();
        let cfg = LoaderConfig {
            batch_size: 4,
            seed: 3,
            prefetch: 0,
        };
        let e = Loader::new(clips(), vec![v.clone()], cfg)
            .unwrap()
            .with_sampling(Sampling::Clips {
                frames: 5,
                draws: ClipDraws::PerClip,
            })
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a whole number of 5-frame clips"), "{e}");
        let e = Loader::new(
            clips(),
            vec![v],
            LoaderConfig {
                batch_size: 32,
                ..cfg
            },
        )
        .unwrap()
        .with_sampling(Sampling::Clips {
            frames: 4,
            draws: ClipDraws::PerClip,
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("16 clips, fewer than one batch of 32"), "{e}");
    }

    /// Frame pairs: view 1 shows the partner (`gap` later in the clip, earlier at its end) with
    /// the sample's own stream; view 0 is the frame itself, as under image sampling.
    #[test]
    fn frame_pairs_show_the_partner_in_view_1() {
        let v = ViewPipeline::new(strong(), &[0.5; 3], &[0.25; 3]).unwrap();
        let cfg = LoaderConfig {
            batch_size: 8,
            seed: 3,
            prefetch: 0,
        };
        let images = Loader::new(clips(), vec![v.clone(); 3], cfg).unwrap();
        let pairs = images
            .clone()
            .with_sampling(Sampling::FramePairs {
                frames: 4,
                gap: 2,
                links: 1,
            })
            .unwrap();
        assert_eq!((pairs.samples(), pairs.views_per_sample()), (64, 3));
        let (a, b) = (
            images.epoch(0, 0).next().unwrap().unwrap(),
            pairs.epoch(0, 0).next().unwrap().unwrap(),
        );
        assert_eq!(a.indices, b.indices);
        assert!(a.partners.is_empty());
        let per = a.views[0].len() / 8;
        let mut far = 0;
        for (k, &i) in b.indices.iter().enumerate() {
            let t = i % 4;
            let want = if t < 2 { i + 2 } else { i - 2 };
            assert_eq!(b.partners[k], want);
            let row = |x: &Vec<f32>| x[k * per..(k + 1) * per].to_vec();
            assert_eq!(row(&b.views[0]), row(&a.views[0]));
            assert_eq!(row(&b.views[2]), row(&a.views[2]));
            assert_eq!(b.geometry[1][k], a.geometry[1][k], "the sample's own draw");
            // Frames 0 and 2 of a clip are one image: their partner looks like themselves.
            if t % 2 == 0 {
                assert_eq!(row(&b.views[1]), row(&a.views[1]));
            } else {
                assert_ne!(row(&b.views[1]), row(&a.views[1]));
                far += 1;
            }
        }
        assert!(far > 0 && far < 8, "both kinds in the batch: {far}");
        for (s, want) in [
            (
                Sampling::FramePairs {
                    frames: 4,
                    gap: 4,
                    links: 1,
                },
                "do not fit 4-frame clips",
            ),
            (
                Sampling::FramePairs {
                    frames: 5,
                    gap: 1,
                    links: 1,
                },
                "not a whole number of 5-frame clips",
            ),
        ] {
            let e = images.clone().with_sampling(s).err().unwrap().to_string();
            assert!(e.contains(want), "{e}");
        }
        let one = Loader::new(clips(), vec![v.clone()], cfg).unwrap();
        let e = one
            .with_sampling(Sampling::FramePairs {
                frames: 4,
                gap: 1,
                links: 1,
            })
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("need at least 2 views"), "{e}");
        // A chain of two links: partner and second partner in one direction within the clip,
        // view 3 showing the second.
        let chains = Loader::new(clips(), vec![v.clone(); 4], cfg)
            .unwrap()
            .with_sampling(Sampling::FramePairs {
                frames: 4,
                gap: 1,
                links: 2,
            })
            .unwrap();
        let four = Loader::new(clips(), vec![v.clone(); 4], cfg).unwrap();
        let (c, plain) = (
            chains.epoch(0, 0).next().unwrap().unwrap(),
            four.epoch(0, 0).next().unwrap().unwrap(),
        );
        for (k, &i) in c.indices.iter().enumerate() {
            let t = i % 4;
            let (p1, p2) = if t < 2 {
                (i + 1, i + 2)
            } else {
                (i - 1, i - 2)
            };
            assert_eq!((c.partners[k], c.second_partners[k]), (p1, p2), "frame {t}");
            let row = |x: &Vec<f32>| x[k * per..(k + 1) * per].to_vec();
            // Frame t ± 2 is the same image as frame t when t is even (frames 0 and 2).
            if t % 2 == 0 {
                assert_eq!(row(&c.views[3]), row(&plain.views[3]));
            } else {
                assert_ne!(row(&c.views[3]), row(&plain.views[3]));
            }
        }
        for (links, views, want) in [
            (2, 3, "need at least 4 views"),
            (3, 4, "link 1 or 2 partners"),
        ] {
            let e = Loader::new(clips(), vec![v.clone(); views], cfg)
                .unwrap()
                .with_sampling(Sampling::FramePairs {
                    frames: 4,
                    gap: 1,
                    links,
                })
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
        let e = chains
            .clone()
            .with_sampling(Sampling::FramePairs {
                frames: 4,
                gap: 2,
                links: 2,
            })
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("2 partner(s) 2 frames apart do not fit"), "{e}");
    }
}
