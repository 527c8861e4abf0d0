//! `gyre eval --dense`: the dense protocols (held-out scene clips: correspondence PCK and label
//! propagation J; with `--dense-gt`, Middlebury and Graffiti PCK) for a run's backbone or a
//! baseline (raw pixel patches, a random-init encoder); one JSON line per table row.

use anyhow::Context;
use gyre_data::scenes::SceneSources;
use gyre_data::{cifar, dense_gt};
use gyre_train::dense_eval::probe::{evaluate_probe, PixelProbe};
use gyre_train::dense_eval::protocol::{
    evaluate_homography, evaluate_scenes, evaluate_stereo, FeatureSource, SceneProtocol,
};
use std::path::{Path, PathBuf};

/// `gyre eval`'s dense flags: what `--dense` scores and on what.
#[derive(Debug, clap::Args)]
pub struct DenseArgs {
    /// The dense evaluations instead: held-out scene clips (nearest-neighbour correspondence
    /// PCK against the true flow, CRW label propagation J), and with `--dense-gt` the
    /// Middlebury and Graffiti PCK; of the checkpoint, or of `--baseline`.
    #[arg(long)]
    pub dense: bool,
    /// With --dense, a baseline instead of a checkpoint: `raw-pixels` (8×8 RGB patches at
    /// stride 8) or `random-init` (`--arch` at `--output-stride`, seed 0).
    #[arg(long, requires = "dense", conflicts_with_all = ["checkpoint", "pretrained"])]
    pub baseline: Option<String>,
    /// The random-init baseline's architecture.
    #[arg(long, default_value = "resnet-mini")]
    pub arch: String,
    /// The random-init baseline's output stride.
    #[arg(long, default_value_t = 8)]
    pub output_stride: usize,
    /// With --dense: the held-out clips' sources: `embedded` (images 8000–9999 of the embedded
    /// Fashion-MNIST split; the probe's training clips use 0–7999) or a cifar10-jpeg folder (its
    /// test images as tiles and backgrounds, Fashion-MNIST's test split as garments; the probe
    /// trains on the training splits).
    #[arg(long, default_value = "embedded")]
    pub scenes_from: String,
    /// With --dense: held-out clips scored.
    #[arg(long, default_value_t = 100)]
    pub clips: usize,
    /// With --dense: the scene frames' side in pixels (default: the run's `data.scenes.clip.size`
    /// for a scenes run, else 64).
    #[arg(long)]
    pub scene_size: Option<usize>,
    /// With --dense: training clips of the pixel linear probe (a 1×1-convolution classifier on
    /// the frozen features against the training clips' class masks, scored by mIoU on the
    /// held-out clips); 0 skips it.
    #[arg(long, default_value_t = 100)]
    pub probe_clips: usize,
    /// With --dense: the pixel probe's learning rate (SGD, momentum 0.9, cosine).
    #[arg(long, default_value_t = PixelProbe::default().fit.lr)]
    pub probe_lr: f64,
    /// With --dense: the pixel probe's epochs over the training cells.
    #[arg(long, default_value_t = PixelProbe::default().fit.epochs)]
    pub probe_epochs: usize,
    /// With --dense: the real pairs' working width in pixels (PCK is in working pixels).
    #[arg(long, default_value_t = 256)]
    pub pair_width: usize,
    /// With --dense: also score the real ground truth in this folder (`cargo xtask data
    /// dense-gt`).
    #[arg(long)]
    pub dense_gt: Option<PathBuf>,
}

/// The held-out (`held_out`) or training clips' sources, disjoint from each other (`embedded`:
/// other images of the embedded split; a cifar10-jpeg folder: its test or training split).
fn scene_sources(from: &str, held_out: bool) -> anyhow::Result<(SceneSources, String)> {
    use gyre_train::recipe::ScenesSources;
    if from == "embedded" {
        return gyre_train::data_setup::scene_sources(ScenesSources::Embedded, None, held_out);
    }
    gyre_train::data_setup::scene_sources(ScenesSources::Real, Some(Path::new(from)), held_out)
        .with_context(|| format!("--scenes-from {from}: a cifar10-jpeg folder or `embedded`"))
}

pub fn run(
    checkpoint: Option<&Path>,
    a: &DenseArgs,
    device: &Option<String>,
) -> anyhow::Result<()> {
    let device = crate::open_device(device, "cpu")?;
    // Held-out clips are drawn as a scenes run's own training clips were (its motion, objects and
    // frame size), else with the generator's defaults.
    let mut scene = gyre_data::scenes::SceneConfig::default();
    let (backbone, mean, std, model) = match (checkpoint, a.baseline.as_deref()) {
        (Some(run), _) => {
            let r = gyre_train::Recipe::load(&run.join("recipe.toml"), &[])?;
            if let Some(sc) = &r.data.scenes {
                scene = sc.clip.clone();
            }
            let net = gyre_train::checkpoint::load_backbone(run, &r, &device)?;
            let (m, s) = gyre_train::data_setup::run_normalisation(&r)?;
            (Some(net), m, s, run.display().to_string())
        }
        (None, Some("random-init")) => {
            let enc = gyre_train::config::EncoderConfig {
                arch: a.arch.clone(),
                bn_splits: 1,
                stem: Some(gyre_encoders::Stem::Cifar),
                output_stride: Some(a.output_stride),
                stages: None,
                image_size: None,
                drop_path_rate: None,
            };
            let net = enc.build(3, 0, &device)?;
            (
                Some(net),
                cifar::CIFAR10_MEAN.to_vec(),
                cifar::CIFAR10_STD.to_vec(),
                format!(
                    "random-init {} (output stride {}, seed 0)",
                    a.arch, a.output_stride
                ),
            )
        }
        (None, Some("raw-pixels")) => (
            None,
            vec![],
            vec![],
            "raw-pixels (8×8 RGB patches, stride 8)".into(),
        ),
        (None, Some(other)) => {
            anyhow::bail!("--baseline {other}: expected raw-pixels or random-init")
        }
        (None, None) => anyhow::bail!("eval --dense needs --checkpoint or --baseline"),
    };
    let source = match &backbone {
        Some(net) => FeatureSource::Encoder {
            backbone: net,
            mean,
            std,
            device: device.clone(),
        },
        None => FeatureSource::RawPixels {
            stride: 8,
            patch: 8,
        },
    };
    let (sources, desc) = scene_sources(&a.scenes_from, true)?;
    let mut proto = SceneProtocol {
        clips: a.clips,
        scene,
        ..SceneProtocol::default()
    };
    if let Some(size) = a.scene_size {
        proto.scene.size = size;
    }
    proto.scene.validate()?;
    let t0 = std::time::Instant::now();
    let report = evaluate_scenes(&proto, &sources, &source)?;
    for row in &report.correspondence {
        println!(
            "{}",
            serde_json::json!({"model": model, "eval": "correspondence", "data": row.name, "scenes": desc, "clips": proto.clips, "frame_px": proto.scene.size, "pck_at": row.thresholds, "pck": row.pck, "points": row.points})
        );
    }
    println!(
        "{}",
        serde_json::json!({"model": model, "eval": "label-propagation", "scenes": desc, "clips": proto.clips, "frame_px": proto.scene.size, "j_mean": report.j_mean, "objects": report.objects, "j_first_mask_kept": report.j_static, "j_true_masks_through_the_grid": report.j_ceiling, "protocol": "videowalk: top-k 10, radius 12 cells, 20 context frames + the first, τ 0.05", "seconds": t0.elapsed().as_secs_f64()})
    );
    if a.probe_clips > 0 {
        let t0 = std::time::Instant::now();
        let (train_sources, train_desc) = scene_sources(&a.scenes_from, false)?;
        let mut probe = PixelProbe {
            train_clips: a.probe_clips,
            ..PixelProbe::default()
        };
        probe.fit.lr = a.probe_lr;
        probe.fit.epochs = a.probe_epochs;
        if let Err((key, problem)) = probe.fit.validate() {
            anyhow::bail!("--probe-{}: {problem}", key.replace('_', "-"));
        }
        let r = evaluate_probe(
            &probe,
            &proto.scene,
            proto.seed,
            &train_sources,
            &sources,
            proto.clips,
            &source,
        )?;
        for (what, r) in [("classes", &r.classes), ("kinds", &r.kinds)] {
            // A list, not a map: two object sources may name a class alike (embedded sources).
            let per_class: Vec<serde_json::Value> = r
                .per_class
                .iter()
                .map(|(name, iou)| serde_json::json!([name, iou]))
                .collect();
            println!(
                "{}",
                serde_json::json!({"model": model, "eval": "pixel-probe", "labels": what, "scenes": desc, "train_scenes": train_desc, "train_clips": a.probe_clips, "clips": proto.clips, "frame_px": proto.scene.size, "miou": r.miou, "pixel_accuracy": r.pixel_accuracy, "iou": per_class, "train_cells": r.train_cells, "test_pixels": r.test_pixels, "final_train_loss": r.final_train_loss, "protocol": format!("1×1 linear classifier on frozen cells (majority label per cell), SGD momentum 0.9, lr {} cosine, {} epochs, batch {}; logits bilinearly up-sampled, argmax per pixel", probe.fit.lr, probe.fit.epochs, probe.fit.batch), "seconds": t0.elapsed().as_secs_f64()})
            );
        }
    }
    if let Some(dir) = &a.dense_gt {
        let dir = dense_gt::locate(Some(dir))?;
        // Queries every 4 working pixels.
        let w = a.pair_width;
        if !(32..=4096).contains(&w) {
            anyhow::bail!("--pair-width: {w} must be in 32..=4096");
        }
        for row in [
            evaluate_stereo(&dense_gt::aloe(&dir)?, w, 4, &source)?,
            evaluate_stereo(&dense_gt::motorcycle(&dir)?, w, 4, &source)?,
            evaluate_homography(&dense_gt::graffiti(&dir)?, w, 4, &source)?,
        ] {
            println!(
                "{}",
                serde_json::json!({"model": model, "eval": "correspondence", "data": row.name, "width_px": w, "pck_at": row.thresholds, "pck": row.pck, "points": row.points})
            );
        }
    }
    Ok(())
}
