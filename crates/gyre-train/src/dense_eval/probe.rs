//! The pixel linear probe: a linear classifier (a 1×1 convolution) on frozen dense features,
//! trained on the cells of training clips against their class masks (each cell's majority
//! class), scored on held-out clips at pixel resolution (the cell logits bilinearly up-sampled,
//! argmax per pixel): per-class IoU, mean IoU, pixel accuracy. The scene protocol runs it twice on
//! the same features: over the scene classes (background + every garment and tile class), and
//! over the object kinds (background, garment, tile: is a feature an object's, and which kind).

use super::protocol::FeatureSource;
use super::{resample, FeatureMap};
use crate::linear::{fit_linear, ProbeConfig};
use gyre_data::scenes::{generate, SceneConfig, SceneSources, HELD_OUT_SPLIT, TRAIN_SPLIT};
use gyre_kernels::{Device, Tensor};
use serde::Serialize;

/// The probe's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PixelProbe {
    /// Training clips whose frames train the classifier (drawn from the training sources).
    pub train_clips: usize,
    /// The classifier's training: SGD with momentum on cosine, over every training cell.
    #[serde(skip)]
    pub fit: ProbeConfig,
}

impl Default for PixelProbe {
    /// 100 training clips (800 frames); 40 epochs of batch 1024 at lr 4 (features are unit rows
    /// already; on DenseCL's Scenes-64 features lr 0.5 for 20 epochs stopped at a training loss
    /// of 0.89, this at 0.76).
    fn default() -> Self {
        Self {
            train_clips: 100,
            fit: ProbeConfig {
                epochs: 40,
                lr: 4.0,
                batch: 1024,
                momentum: 0.9,
                weight_decay: 0.0,
                normalize: false,
                seed: 0,
            },
        }
    }
}

/// What the probe scored.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// Mean IoU over the classes present in the held-out masks or predictions.
    pub miou: f64,
    /// Each class's IoU (`None`: neither in the truth nor predicted).
    pub per_class: Vec<(String, Option<f64>)>,
    pub pixel_accuracy: f64,
    pub train_cells: usize,
    pub test_pixels: usize,
    pub final_train_loss: f64,
}

/// Each cell's majority class (ties to the lower class) in a `size × size` class mask over an
/// `h × w` grid of equal cells.
pub fn cell_labels(mask: &[u8], size: usize, (h, w): (usize, usize), classes: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(h * w);
    let mut counts = vec![0u32; classes];
    for r in 0..h {
        for c in 0..w {
            counts.iter_mut().for_each(|x| *x = 0);
            for y in r * size / h..(r + 1) * size / h {
                for x in c * size / w..(c + 1) * size / w {
                    counts[(mask[y * size + x] as usize).min(classes - 1)] += 1;
                }
            }
            let best = (0..classes).max_by_key(|&k| (counts[k], std::cmp::Reverse(k)));
            out.push(best.unwrap_or(0) as u32);
        }
    }
    out
}

/// Trains on `train` (maps with their `size × size` class masks) and scores `test` at pixel
/// resolution, for `class_names.len()` classes.
pub fn probe_maps(
    train: &[(&FeatureMap, &[u8])],
    test: &[(&FeatureMap, &[u8])],
    size: usize,
    class_names: &[String],
    fit: ProbeConfig,
) -> anyhow::Result<ProbeReport> {
    let k = class_names.len();
    let Some((first, _)) = train.first() else {
        anyhow::bail!("pixel probe: no training frames");
    };
    let c = first.c;
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for (map, mask) in train {
        xs.extend_from_slice(&map.data);
        ys.extend(cell_labels(mask, size, (map.h, map.w), k));
    }
    let train_cells = ys.len();
    let fc = fit_linear(xs, &ys, c, k, fit)?;
    let mut confusion = vec![0u64; k * k]; // [truth][prediction]
    for (map, mask) in test {
        let x = Tensor::from_slice(&map.data, (map.h * map.w, c), &Device::Cpu)?;
        let logits = fc.logits(&x)?.flatten_all()?.to_vec1::<f32>()?;
        let up = resample(&logits, (map.h, map.w), k, (size, size));
        for (p, &truth) in up.chunks(k).zip(mask.iter()) {
            let pred = p
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                )
                .0;
            confusion[(truth as usize).min(k - 1) * k + pred] += 1;
        }
    }
    let total: u64 = confusion.iter().sum();
    let correct: u64 = (0..k).map(|i| confusion[i * k + i]).sum();
    let per_class: Vec<(String, Option<f64>)> = (0..k)
        .map(|i| {
            let tp = confusion[i * k + i];
            let truth: u64 = (0..k).map(|j| confusion[i * k + j]).sum();
            let pred: u64 = (0..k).map(|j| confusion[j * k + i]).sum();
            let union = truth + pred - tp;
            let iou = (union > 0).then(|| tp as f64 / union as f64);
            (class_names[i].clone(), iou)
        })
        .collect();
    let scored: Vec<f64> = per_class.iter().filter_map(|c| c.1).collect();
    Ok(ProbeReport {
        miou: scored.iter().sum::<f64>() / scored.len().max(1) as f64,
        per_class,
        pixel_accuracy: correct as f64 / total.max(1) as f64,
        train_cells,
        test_pixels: total as usize,
        final_train_loss: fc.final_train_loss,
    })
}

/// Both probes of the scene protocol.
#[derive(Debug, Clone, Serialize)]
pub struct SceneProbeReport {
    /// Over the scene classes.
    pub classes: ProbeReport,
    /// Over background and the object sources' kinds.
    pub kinds: ProbeReport,
}

/// Each scene class's kind: 0 for the background, `1 + i` for object source `i`'s classes; and
/// the kinds' names.
pub fn class_kinds(sources: &SceneSources) -> (Vec<u8>, Vec<String>) {
    let mut kinds = vec![0u8; sources.classes.len()];
    let mut names = vec!["background".to_string()];
    for (i, o) in sources.objects.iter().enumerate() {
        let end = sources
            .objects
            .get(i + 1)
            .map_or(sources.classes.len(), |n| n.first_class as usize);
        for k in &mut kinds[o.first_class as usize..end] {
            *k = (i + 1) as u8;
        }
        names.push(format!("{:?}", o.kind).to_lowercase());
    }
    (kinds, names)
}

/// The probes on scene clips: `probe.train_clips` training clips of `train_sources`, scored on
/// `test_clips` held-out clips of `test_sources` (the correspondence protocol's clips), drawn
/// with `scene` and `seed`. Both source sets must name the same classes.
pub fn evaluate_probe(
    probe: &PixelProbe,
    scene: &SceneConfig,
    seed: u64,
    train_sources: &SceneSources,
    test_sources: &SceneSources,
    test_clips: usize,
    source: &FeatureSource,
) -> anyhow::Result<SceneProbeReport> {
    if train_sources.classes.len() != test_sources.classes.len() {
        anyhow::bail!(
            "pixel probe: training scenes have {} classes, held-out scenes {}",
            train_sources.classes.len(),
            test_sources.classes.len()
        );
    }
    let s = scene.size;
    let clip_maps = |sources: &SceneSources, split: u64, n: usize| -> anyhow::Result<_> {
        let clips = generate(scene, sources, seed, split, 0..n as u64)?;
        let mut out = Vec::with_capacity(clips.len());
        for clip in clips {
            let maps = source.features(&clip.pixels, (s, s))?;
            out.push((clip, maps));
        }
        Ok(out)
    };
    let train = clip_maps(train_sources, TRAIN_SPLIT, probe.train_clips)?;
    let test = clip_maps(test_sources, HELD_OUT_SPLIT, test_clips)?;
    let pairs = |v: &[(gyre_data::scenes::Clip, Vec<FeatureMap>)]| -> Vec<(usize, usize)> {
        v.iter()
            .enumerate()
            .flat_map(|(i, (clip, _))| (0..clip.frames).map(move |t| (i, t)))
            .collect()
    };
    let tr: Vec<(&FeatureMap, &[u8])> = pairs(&train)
        .into_iter()
        .map(|(i, t)| (&train[i].1[t], train[i].0.class_mask(t)))
        .collect();
    let te: Vec<(&FeatureMap, &[u8])> = pairs(&test)
        .into_iter()
        .map(|(i, t)| (&test[i].1[t], test[i].0.class_mask(t)))
        .collect();
    let classes = probe_maps(&tr, &te, s, &test_sources.classes, probe.fit)?;
    let (kind_of, kind_names) = class_kinds(test_sources);
    let remap = |v: &[(&FeatureMap, &[u8])]| -> Vec<Vec<u8>> {
        v.iter()
            .map(|(_, m)| m.iter().map(|&c| kind_of[c as usize]).collect())
            .collect()
    };
    let (trk, tek) = (remap(&tr), remap(&te));
    let tr_kinds: Vec<(&FeatureMap, &[u8])> = tr
        .iter()
        .zip(&trk)
        .map(|((f, _), m)| (*f, m.as_slice()))
        .collect();
    let te_kinds: Vec<(&FeatureMap, &[u8])> = te
        .iter()
        .zip(&tek)
        .map(|((f, _), m)| (*f, m.as_slice()))
        .collect();
    let kinds = probe_maps(&tr_kinds, &te_kinds, s, &kind_names, probe.fit)?;
    Ok(SceneProbeReport { classes, kinds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_labels_take_each_cells_majority() {
        // 4×4 mask, 2×2 cells: class 1 fills the top-left cell, 3 of 4 pixels of the top-right,
        // the bottom row of cells is split 2/2 between 2 and 0 (tie: the lower class, 0).
        #[rustfmt::skip]
        let mask = [
            1, 1, 1, 1,
            1, 1, 0, 1,
            2, 0, 2, 0,
            2, 0, 2, 0,
        ];
        assert_eq!(cell_labels(&mask, 4, (2, 2), 3), [1, 1, 0, 0]);
    }

    /// Features that are each cell's class as a one-hot vector are learned exactly: mIoU 1 and
    /// every pixel right when the masks follow the cells; constant features can do no better
    /// than the majority class.
    #[test]
    fn separable_cells_give_miou_one_and_constant_features_do_not() -> anyhow::Result<()> {
        let (size, h, k) = (8usize, 4usize, 3usize);
        let names: Vec<String> = ["background", "a", "b"].map(String::from).to_vec();
        let mut frames = Vec::new();
        for f in 0..12u32 {
            // Cell (r, c) has class (r + c + f) mod 3; its 2×2 pixels carry it.
            let labels: Vec<u8> = (0..h * h)
                .map(|i| ((i / h + i % h + f as usize) % k) as u8)
                .collect();
            let mut mask = vec![0u8; size * size];
            for y in 0..size {
                for x in 0..size {
                    mask[y * size + x] = labels[(y / 2) * h + x / 2];
                }
            }
            let mut data = vec![0f32; h * h * k];
            for (i, &l) in labels.iter().enumerate() {
                data[i * k + l as usize] = 1.0;
            }
            let map = FeatureMap {
                h,
                w: h,
                c: k,
                stride: 2.0,
                data,
            };
            frames.push((map, mask));
        }
        // A moderate rate keeps the logits' margins alike across classes, so the up-sampled
        // blend at cell borders keeps each pixel's own cell (a huge rate overfits the margins).
        let fit = ProbeConfig {
            epochs: 50,
            batch: 16,
            lr: 0.5,
            ..PixelProbe::default().fit
        };
        let all: Vec<(&FeatureMap, &[u8])> =
            frames.iter().map(|(m, k)| (m, k.as_slice())).collect();
        let r = probe_maps(&all[..8], &all[8..], size, &names, fit)?;
        // Up-sampled logits blend neighbouring cells near cell borders, but one-hot logits with
        // a margin keep the argmax of the cell the pixel is in.
        assert_eq!(r.pixel_accuracy, 1.0, "{r:?}");
        assert_eq!(r.miou, 1.0);
        assert_eq!((r.train_cells, r.test_pixels), (8 * 16, 4 * 64));
        let constant: Vec<(FeatureMap, Vec<u8>)> = frames
            .iter()
            .map(|(m, mask)| {
                let data = vec![1.0 / (k as f32).sqrt(); m.data.len()];
                (FeatureMap { data, ..m.clone() }, mask.clone())
            })
            .collect();
        let all: Vec<(&FeatureMap, &[u8])> =
            constant.iter().map(|(m, k)| (m, k.as_slice())).collect();
        let r = probe_maps(&all[..8], &all[8..], size, &names, fit)?;
        assert!(r.miou < 0.2 && r.pixel_accuracy < 0.4, "{r:?}");
        Ok(())
    }
}
