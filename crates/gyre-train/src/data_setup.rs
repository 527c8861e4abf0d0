//! Turns a recipe's `[data]` section into the pretraining set, the kNN bank and the kNN queries.

use crate::recipe::{DataKind, KnnBank, Recipe, ScenesConfig, ScenesSources, VideoConfig};
use anyhow::Context;
use gyre_data::cifar::{self, Cifar};
use gyre_data::scenes::{self, SceneSources};
use gyre_data::{
    fashion_mnist, load_image_folder, load_train_test_folders, FolderOptions, ImageSet, LoadReport,
    OnBadSample, Residency,
};
use std::path::Path;
use std::sync::Arc;

/// The image sets a run needs, and how to normalise them.
pub struct RunData {
    pub pretrain: Arc<ImageSet>,
    /// The kNN monitor's labelled bank and queries; `None` for unlabelled data.
    pub eval: Option<(Arc<ImageSet>, Arc<ImageSet>)>,
    /// One line for the summary: what was used for what.
    pub description: String,
    pub dataset: String,
    /// Per-channel normalisation in [0, 1] units: the recipe's `data.mean` / `data.std`, else
    /// the dataset's own (see [`Self::normalisation`]).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Where `mean` and `std` come from: `recipe`, `published` (Fashion-MNIST's or CIFAR's), or
    /// `computed from N images` (an image folder without them in its recipe).
    pub normalisation: String,
    /// Samples skipped under `on_bad_sample = "skip"`, grey images converted, warnings.
    pub report: LoadReport,
    /// `Some(T)` when the pretraining set is whole clips of `T` frames, clip by clip (scenes).
    pub clip_frames: Option<usize>,
    /// Scenes: the training clips' hidden masks and motion, frame by frame as the pretraining
    /// set — for diagnostics only (IRC's dense auto-pair precision), never a training signal.
    pub scene_truth: Option<Arc<scenes::SceneTruth>>,
}

/// The embedded split's images each scene split draws on: (garments, tiles and backgrounds).
const EMBEDDED_SCENES_TRAIN: [std::ops::Range<usize>; 2] = [0..4000, 4000..8000];
const EMBEDDED_SCENES_HELD_OUT: [std::ops::Range<usize>; 2] = [8000..9000, 9000..10000];

/// The object and background images of training (`held_out = false`) or held-out scene clips,
/// disjoint between the two, and a line saying what they are. `root`: the cifar10-jpeg folder
/// for `real` sources (else searched).
pub fn scene_sources(
    sources: ScenesSources,
    root: Option<&Path>,
    held_out: bool,
) -> anyhow::Result<(SceneSources, String)> {
    match sources {
        ScenesSources::Embedded => {
            let fm = fashion_mnist::embedded()?;
            let [g, c] = if held_out {
                EMBEDDED_SCENES_HELD_OUT
            } else {
                EMBEDDED_SCENES_TRAIN
            };
            let name = |r: &std::ops::Range<usize>| {
                format!("fashion-mnist-embedded[{}:{}]", r.start, r.end)
            };
            let desc = format!(
                "garments {}; grey tiles and backgrounds {} (even / odd)",
                name(&g),
                name(&c)
            );
            let garments = fm.select(name(&g), &g.clone().collect::<Vec<_>>());
            let colour = fm.select(name(&c), &c.clone().collect::<Vec<_>>());
            Ok((SceneSources::new(garments, colour)?, desc))
        }
        ScenesSources::Real => {
            let dir = cifar::locate("cifar10-jpeg", root)?;
            let (colour, _) =
                cifar::load_cifar10_jpeg(&dir, !held_out, OnBadSample::Fail, Residency::Memory)
                    .with_context(|| format!("loading cifar10-jpeg from {}", dir.display()))?;
            let fm_dir = fashion_mnist::locate(None)?;
            let split = if held_out { "t10k" } else { "train" };
            let garments = fashion_mnist::load_split(&fm_dir, split)
                .with_context(|| format!("loading Fashion-MNIST from {}", fm_dir.display()))?;
            let desc = format!(
                "garments fashion-mnist {split} ({}); tiles and backgrounds {} {} (even / odd)",
                fm_dir.display(),
                dir.display(),
                if held_out { "test" } else { "train" }
            );
            Ok((SceneSources::new(garments, colour)?, desc))
        }
    }
}

/// The clips of real videos as one unlabelled set, clip by clip: each clip `clip_frames` frames
/// `frame_gap` apart, one starting every `clip_stride` frames.
fn video_clips(cfg: &VideoConfig, root: Option<&Path>) -> anyhow::Result<ImageSet> {
    let dir = gyre_data::video::locate(root)?;
    let span = (cfg.clip_frames - 1) * cfg.frame_gap + 1;
    let mut pixels = Vec::new();
    let mut clips = 0;
    for name in &cfg.videos {
        if !gyre_data::video::VIDEOS.iter().any(|v| v.name == name) {
            anyhow::bail!(
                "data.video.videos: unknown video `{name}` (expected {})",
                gyre_data::video::VIDEOS.map(|v| v.name).join(", ")
            );
        }
        let v = gyre_data::video::load_frames(&dir.join(name), name)?;
        let sq = v.squared(cfg.size)?;
        for start in v.clip_starts(span, cfg.clip_stride)? {
            for t in 0..cfg.clip_frames {
                pixels.extend_from_slice(&sq.image(start + t * cfg.frame_gap)?);
            }
            clips += 1;
        }
    }
    let s = cfg.size;
    let name = format!(
        "opencv-video[{}; {clips} clips × {} frames {} apart, {s} px]",
        cfg.videos.join(", "),
        cfg.clip_frames,
        cfg.frame_gap
    );
    Ok(ImageSet::new(name, (s, s, 3), pixels, None, vec![])?)
}

/// The training clips' frames as one unlabelled set, clip by clip, and their hidden truth.
fn scene_frames(
    cfg: &ScenesConfig,
    root: Option<&Path>,
) -> anyhow::Result<(ImageSet, scenes::SceneTruth)> {
    let (sources, desc) = scene_sources(cfg.sources, root, false)?;
    let clips = scenes::generate(
        &cfg.clip,
        &sources,
        cfg.seed,
        scenes::TRAIN_SPLIT,
        0..cfg.clips as u64,
    )
    .map_err(|e| anyhow::anyhow!("data.scenes.clip: {e}"))?;
    let s = cfg.clip.size;
    let mut pixels = Vec::with_capacity(cfg.clips * cfg.clip.frames * s * s * 3);
    for c in &clips {
        pixels.extend_from_slice(&c.pixels);
    }
    let name = format!(
        "scenes[{} clips × {} frames, {s} px; {desc}]",
        cfg.clips, cfg.clip.frames
    );
    let truth = scenes::SceneTruth::from_clips(&clips);
    Ok((ImageSet::new(name, (s, s, 3), pixels, None, vec![])?, truth))
}

/// Images an image folder's normalisation is computed from (evenly spread over the set).
pub const STATS_IMAGES: usize = 10_000;

/// The published per-channel mean and std of a dataset kind; `None` for image folders.
pub fn published_normalisation(kind: DataKind) -> Option<(Vec<f32>, Vec<f32>)> {
    match kind {
        DataKind::FashionMnistEmbedded | DataKind::FashionMnist => {
            Some((vec![fashion_mnist::MEAN], vec![fashion_mnist::STD]))
        }
        DataKind::Cifar10 | DataKind::Cifar10Jpeg => {
            Some((cifar::CIFAR10_MEAN.to_vec(), cifar::CIFAR10_STD.to_vec()))
        }
        DataKind::Cifar100 => Some((cifar::CIFAR100_MEAN.to_vec(), cifar::CIFAR100_STD.to_vec())),
        DataKind::ImageFolder | DataKind::Scenes | DataKind::Video => None,
    }
}

/// Images 0..8000 of the embedded split pretrain (and form the bank), 8000..10000 are queries.
pub const EMBEDDED_PRETRAIN: usize = 8000;

/// The first `n` images in an order that takes one image of each class in turn (the k-th image
/// of every class before the (k+1)-th of any), so that a subset of a class-sorted folder is
/// balanced. Unlabelled sets keep their order.
fn interleaved_head(set: &ImageSet, n: usize) -> ImageSet {
    let Some(labels) = set.labels() else {
        return set.head(n);
    };
    let mut rank = vec![0usize; set.classes.len().max(1)];
    let mut keyed: Vec<(usize, u32, usize)> = labels
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            let r = rank[l as usize];
            rank[l as usize] += 1;
            (r, l, i)
        })
        .collect();
    keyed.sort_unstable();
    let idx: Vec<usize> = keyed.into_iter().take(n).map(|k| k.2).collect();
    set.select(format!("{}[:{n} interleaved]", set.name), &idx)
}

/// The normalisation a trained run used: its `recipe.toml`'s (every run records it), else the
/// dataset's published one; an image folder's recipe without it is an error.
pub fn run_normalisation(recipe: &Recipe) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
    match (&recipe.data.mean, &recipe.data.std) {
        (Some(m), Some(s)) => Ok((m.clone(), s.clone())),
        _ => published_normalisation(recipe.data.kind).context(
            "data.mean: the recipe has no normalisation and the dataset has no published one",
        ),
    }
}

/// Loads the recipe's data: the pretraining set, the kNN bank and queries, the normalisation.
pub fn load(recipe: &Recipe) -> anyhow::Result<RunData> {
    let d = &recipe.data;
    let policy = d.on_bad_sample;
    let mut report = LoadReport::default();
    let mut add = |r: (ImageSet, LoadReport)| {
        report.merge(r.1);
        r.0
    };
    // Class-sorted sources take their subset interleaved across classes.
    let mut sorted_by_class = false;
    let mut clip_frames = None;
    let mut scene_truth = None;
    let (train, test, dataset) = match d.kind {
        DataKind::FashionMnistEmbedded => {
            let all = fashion_mnist::embedded()?;
            let train = all.select(
                "fashion-mnist-embedded[0:8000]",
                &(0..EMBEDDED_PRETRAIN).collect::<Vec<_>>(),
            );
            let test = all.select(
                "fashion-mnist-embedded[8000:10000]",
                &(EMBEDDED_PRETRAIN..all.len()).collect::<Vec<_>>(),
            );
            (train, Some(test), "fashion-mnist-embedded")
        }
        DataKind::FashionMnist => {
            let dir = fashion_mnist::locate(d.root.as_deref())?;
            let train = fashion_mnist::load_split(&dir, "train")
                .with_context(|| format!("loading Fashion-MNIST from {}", dir.display()))?;
            let test = fashion_mnist::load_split(&dir, "t10k")?;
            (train, Some(test), "fashion-mnist")
        }
        DataKind::Cifar10 | DataKind::Cifar100 => {
            let which = if d.kind == DataKind::Cifar10 {
                Cifar::Ten
            } else {
                Cifar::Hundred
            };
            let dir = cifar::locate(which.folder(), d.root.as_deref())?;
            let train = add(cifar::load_cifar_bin(&dir, which, true, policy)?);
            let test = add(cifar::load_cifar_bin(&dir, which, false, policy)?);
            let name = if which == Cifar::Ten {
                "cifar10"
            } else {
                "cifar100"
            };
            (train, Some(test), name)
        }
        DataKind::Cifar10Jpeg => {
            let dir = cifar::locate("cifar10-jpeg", d.root.as_deref())?;
            sorted_by_class = true;
            let train = add(cifar::load_cifar10_jpeg(&dir, true, policy, d.residency())?);
            let test = add(cifar::load_cifar10_jpeg(
                &dir,
                false,
                policy,
                d.residency(),
            )?);
            (train, Some(test), "cifar10-jpeg")
        }
        DataKind::ImageFolder => {
            let root = d
                .root
                .as_deref()
                .context("data.root: image-folder needs the folder")?;
            let opts = FolderOptions {
                labelled: d.labelled,
                size: d.image_size,
                channels: d.mean.as_ref().map(Vec::len),
                on_bad_sample: policy,
                residency: d.residency(),
            };
            sorted_by_class = d.labelled;
            let (tr, te) = (root.join("train"), root.join("test"));
            if tr.is_dir() && te.is_dir() && d.labelled {
                let (train, test, r) = load_train_test_folders(&tr, &te, opts)?;
                report.merge(r);
                (train, Some(test), "image-folder")
            } else if tr.is_dir() {
                let train = add(load_image_folder(&tr, &tr.display().to_string(), opts)?);
                (train, None, "image-folder")
            } else {
                let train = add(load_image_folder(root, &root.display().to_string(), opts)?);
                (train, None, "image-folder")
            }
        }
        DataKind::Scenes => {
            let cfg = d.scenes.clone().unwrap_or_default();
            clip_frames = Some(cfg.clip.frames);
            let (frames, truth) = scene_frames(&cfg, d.root.as_deref())?;
            scene_truth = Some(Arc::new(truth));
            (frames, None, "scenes")
        }
        DataKind::Video => {
            let cfg = d.video.clone().unwrap_or_default();
            clip_frames = Some(cfg.clip_frames);
            (video_clips(&cfg, d.root.as_deref())?, None, "video")
        }
    };
    let train = Arc::new(train);
    let pretrain = match d.subset {
        Some(n) if n > train.len() => anyhow::bail!(
            "data.subset: {n} is more than the {} training images",
            train.len()
        ),
        Some(n) if n < train.len() && sorted_by_class => Arc::new(interleaved_head(&train, n)),
        Some(n) if n < train.len() => Arc::new(train.head(n)),
        // All of them.
        Some(_) | None => train.clone(),
    };
    let (mean, std, normalisation) = match (&d.mean, &d.std, published_normalisation(d.kind)) {
        (Some(m), Some(s), _) => (m.clone(), s.clone(), "recipe".to_string()),
        (_, _, Some((m, s))) => (m, s, "published".to_string()),
        _ => {
            let (m, s) = pretrain.channel_stats(STATS_IMAGES)?;
            let n = pretrain.len().min(STATS_IMAGES);
            (
                m,
                s,
                format!("computed from {n} images of {}", pretrain.name),
            )
        }
    };
    if train.channels != mean.len() {
        anyhow::bail!(
            "data.mean: the images have {} channel(s), data.mean and data.std have {}",
            train.channels,
            mean.len()
        );
    }
    let bank = match d.knn_bank {
        KnnBank::Pretrain => pretrain.clone(),
        KnnBank::Train => train.clone(),
    };
    let eval = match test {
        Some(t) if bank.labels().is_some() && t.labels().is_some() => Some((bank, Arc::new(t))),
        _ => None,
    };
    let description = match &eval {
        Some((bank, test)) => format!(
            "pretrain on {} ({} images); kNN bank {} ({} images); kNN queries {} ({} images)",
            pretrain.name,
            pretrain.len(),
            bank.name,
            bank.len(),
            test.name,
            test.len()
        ),
        None => format!(
            "pretrain on {} ({} images); no labelled test split: kNN monitor off",
            pretrain.name,
            pretrain.len()
        ),
    };
    Ok(RunData {
        pretrain,
        eval,
        description,
        dataset: dataset.to_string(),
        mean,
        std,
        normalisation,
        report,
        clip_frames,
        scene_truth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scenes kind: `clips × frames` unlabelled frames, clip by clip, exactly the generator's
    /// frames; embedded training and held-out sources share no image.
    #[test]
    fn scene_frames_are_the_generated_clips_and_sources_are_disjoint() {
        let cfg = ScenesConfig {
            clips: 3,
            clip: scenes::SceneConfig {
                size: 32,
                frames: 4,
                ..Default::default()
            },
            ..Default::default()
        };
        let (set, truth) = scene_frames(&cfg, None).unwrap();
        assert_eq!((set.len(), set.height, set.channels), (12, 32, 3));
        assert_eq!(truth.len(), 12, "the truth names the same frames");
        assert!(set.labels().is_none());
        let (sources, _) = scene_sources(ScenesSources::Embedded, None, false).unwrap();
        let clips = scenes::generate(&cfg.clip, &sources, 0, scenes::TRAIN_SPLIT, 0..3).unwrap();
        assert_eq!(&*set.image(5).unwrap(), clips[1].frame(1));
        let [g, c] = EMBEDDED_SCENES_TRAIN;
        let [hg, hc] = EMBEDDED_SCENES_HELD_OUT;
        for (a, b) in [(&g, &hg), (&g, &hc), (&c, &hg), (&c, &hc)] {
            assert!(a.end <= b.start || b.end <= a.start, "{a:?} overlaps {b:?}");
        }
        assert!(g.end <= c.start && hg.end <= hc.start);
    }

    #[test]
    fn interleaved_subset_is_class_balanced_and_ordered() {
        // Sorted by class: 0 0 0 1 1 2.
        let set = ImageSet::new(
            "s",
            (1, 1, 1),
            vec![10, 11, 12, 20, 21, 30],
            Some(vec![0, 0, 0, 1, 1, 2]),
            vec!["a".into(), "b".into(), "c".into()],
        )
        .unwrap();
        let h = interleaved_head(&set, 5);
        assert_eq!(h.labels().unwrap(), [0, 1, 2, 0, 1]);
        assert_eq!(&*h.image(3).unwrap(), [11]);
    }
}
