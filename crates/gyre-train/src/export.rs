//! A run's backbone as a Hugging Face Hub model folder (`model.safetensors` with torchvision key
//! names, `config.json`, and a `README.md` model card): [`prepare`] gathers what the folder and
//! its card say — the backbone, its config, the run's kNN results beside its baselines, an
//! optional linear probe — and [`write`] writes the folder with a card the caller composes (the
//! `gyre` binary's `export` command writes the Hub card).

use crate::checkpoint;
use crate::recipe::Recipe;
use anyhow::Context;
use gyre_encoders::hub::{save_pretrained, PretrainedConfig};
use gyre_kernels::Device;
use std::path::Path;

/// A linear-probe result for the model card.
#[derive(Debug, Clone, Copy)]
pub struct LinearResult {
    pub top1: f64,
    pub top5: f64,
    pub epochs: usize,
}

/// The run's kNN results for the card: the trained encoder's, and the baselines measured on the
/// same bank and queries before training.
#[derive(Debug, Clone, Copy, Default)]
pub struct KnnResults {
    pub trained: Option<f64>,
    pub raw_pixels: Option<f64>,
    pub random_init: Option<f64>,
}

/// How to export.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Also train the linear probe for this many epochs and report it in the card.
    pub linear_epochs: Option<usize>,
    /// Write into a folder that already holds files (the model files are replaced); without it
    /// such a folder is refused.
    pub overwrite: bool,
}

/// Everything an exported folder and its card hold.
pub struct Exported {
    /// The run's recipe.
    pub recipe: Recipe,
    pub backbone: gyre_encoders::Backbone,
    pub config: PretrainedConfig,
    pub knn: KnnResults,
    pub linear: Option<LinearResult>,
}

/// The run's kNN baselines (raw pixels, random init) and its last kNN top-1, from its metrics log.
fn logged_knn(run_dir: &Path) -> KnnResults {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap_or_default();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let baseline = lines.iter().find(|v| v["kind"] == "baseline");
    KnnResults {
        trained: lines
            .iter()
            .rev()
            .filter(|v| v["kind"] == "knn")
            .find_map(|v| v["knn_top1"].as_f64()),
        raw_pixels: baseline.and_then(|b| b["raw_knn_top1"].as_f64()),
        random_init: baseline.and_then(|b| b["init_knn_top1"].as_f64()),
    }
}

/// Gathers the export of the run in `run_dir`, to go into `out`: refused when `out` is not empty
/// (unless `opts.overwrite`); with `linear_epochs`, also trains the linear probe on the recipe's
/// data (the kNN bank's images, scored on the queries). `device` runs the backbone.
pub fn prepare(
    run_dir: &Path,
    out: &Path,
    opts: &ExportOptions,
    device: &Device,
) -> anyhow::Result<Exported> {
    if let Some(epochs) = opts.linear_epochs {
        let probe = crate::linear::ProbeConfig {
            epochs,
            ..Default::default()
        };
        probe
            .validate()
            .map_err(|(k, p)| anyhow::anyhow!("--linear-{k} {epochs}: {p}"))?;
    }
    let occupied = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    if occupied && !opts.overwrite {
        anyhow::bail!(
            "{}: the folder is not empty: export into a new folder, or pass --overwrite to replace \
             the model files in it",
            out.display()
        );
    }
    let recipe = Recipe::load(&run_dir.join("recipe.toml"), &[])?;
    let wp = checkpoint::weights_path(run_dir);
    // The run's last kNN: from the checkpoint's state, or (checkpoints written before the state
    // was stored in them) from the metrics log; the baselines from the log.
    let tensors = gyre_encoders::weights::read_tensors(&wp, device)?;
    let mut knn = logged_knn(run_dir);
    if let Ok(state) = checkpoint::state_of(&tensors, &wp) {
        knn.trained = state.knn_top1;
    }
    let backbone = checkpoint::backbone_from(&recipe, &tensors, &wp, device)?;
    let size = recipe
        .augment
        .get(&recipe.method.views[0])
        .map(|a| a.size)
        .unwrap_or(0);
    let (mean, std) = crate::data_setup::run_normalisation(&recipe)?;
    let resnet = backbone.resnet().with_context(|| {
        format!(
            "{}: a {} backbone has no Hub layout in gyre yet (ResNets only)",
            run_dir.display(),
            recipe.encoder.arch
        )
    })?;
    let config = PretrainedConfig::new(&recipe.encoder.arch, resnet.config(), &mean, &std, size);
    let linear = match opts.linear_epochs {
        Some(epochs) => {
            let data = crate::data_setup::load(&recipe)?;
            let (bank, queries) = data
                .eval
                .as_ref()
                .context("the run's data has no labelled test split for a linear probe")?;
            let fb = crate::eval::raw_backbone_features(&backbone, bank, &mean, &std, device)?;
            let fq = crate::eval::raw_backbone_features(&backbone, queries, &mean, &std, device)?;
            let labels =
                |s: &gyre_data::ImageSet| s.labels().map(<[u32]>::to_vec).unwrap_or_default();
            let cfg = crate::linear::ProbeConfig {
                epochs,
                seed: recipe.seed,
                ..Default::default()
            };
            let r = crate::linear::linear_probe(
                fb,
                &labels(bank),
                fq,
                &labels(queries),
                backbone.feature_dim(),
                bank.classes.len().max(1),
                cfg,
            )?;
            Some(LinearResult {
                top1: r.top1,
                top5: r.top5,
                epochs,
            })
        }
        None => None,
    };
    Ok(Exported {
        recipe,
        backbone,
        config,
        knn,
        linear,
    })
}

/// Writes the model folder `out`: the backbone, `config.json` and the model card `card`.
pub fn write(exported: &Exported, out: &Path, card: &str) -> anyhow::Result<()> {
    let resnet = exported
        .backbone
        .resnet()
        .context("only a ResNet backbone has a Hub layout")?;
    save_pretrained(out, resnet, &exported.config, card)
        .with_context(|| format!("exporting to {}", out.display()))?;
    Ok(())
}
