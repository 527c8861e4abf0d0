//! `gyre export`: a run's backbone as a Hugging Face Hub model folder (`model.safetensors` with
//! torchvision key names, `config.json`, and a `README.md` model card with YAML front matter:
//! library, licence when given, tags, datasets, a `model-index` with the run's kNN top-1 beside
//! its raw-pixel and random-init baselines; a PyTorch loader that works for every architecture;
//! and the recipe without local paths).

use crate::checkpoint;
use crate::recipe::Recipe;
use anyhow::Context;
use gyre_encoders::hub::{save_pretrained, PretrainedConfig};
use gyre_kernels::Device;
use std::path::Path;

fn dataset_id(kind: &str) -> &str {
    match kind {
        k if k.starts_with("fashion-mnist") => "zalando-datasets/fashion_mnist",
        k if k.starts_with("cifar10") => "uoft-cs/cifar10",
        "cifar100" => "uoft-cs/cifar100",
        _ => "custom",
    }
}

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
    /// The model card's `license:` (a Hub licence id such as `mit` or `apache-2.0`); none: the
    /// card states none.
    pub license: Option<String>,
    /// Write into a folder that already holds files (the model files are replaced); without it
    /// such a folder is refused.
    pub overwrite: bool,
}

/// The recipe as the card shows it: local paths (`data.root`, `train.out_dir`) removed.
fn shareable_recipe(recipe: &Recipe) -> String {
    let mut r = recipe.clone();
    r.data.root = None;
    r.train.out_dir = std::path::PathBuf::from("runs");
    r.to_toml()
}

/// The model card of an exported backbone.
pub fn model_card(
    recipe: &Recipe,
    config: &PretrainedConfig,
    knn: KnnResults,
    linear: Option<LinearResult>,
    license: Option<&str>,
) -> String {
    let data = serde_json::to_value(recipe.data.kind)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let method = recipe.method.name();
    let mut s = String::new();
    s.push_str("---\nlibrary_name: gyre\npipeline_tag: image-feature-extraction\n");
    if let Some(l) = license {
        s.push_str(&format!("license: {l}\n"));
    }
    s.push_str(&format!(
        "tags:\n- self-supervised-learning\n- gyre\n- {method}\n- {}\n",
        config.architecture
    ));
    s.push_str(&format!("datasets:\n- {}\n", dataset_id(&data)));
    if knn.trained.is_some() || linear.is_some() {
        s.push_str(&format!(
            "model-index:\n- name: {}\n  results:\n",
            recipe.name
        ));
        let mut result = |task: &str, metrics: &[(&str, f64)]| {
            s.push_str(&format!(
                "  - task:\n      type: image-classification\n      name: {task}\n    dataset:\n      type: {}\n      name: {data}\n    metrics:\n",
                dataset_id(&data)
            ));
            for (name, v) in metrics {
                s.push_str(&format!(
                    "    - type: accuracy\n      name: {name}\n      value: {:.2}\n",
                    100.0 * v
                ));
            }
        };
        if let Some(k) = knn.trained {
            let task = format!(
                "kNN (k = {}, t = {}) on frozen backbone features",
                recipe.eval.knn_k, recipe.eval.knn_t
            );
            let mut metrics = vec![("kNN top-1", k)];
            if let Some(r) = knn.raw_pixels {
                metrics.push(("kNN top-1 of raw pixels (baseline)", r));
            }
            if let Some(r) = knn.random_init {
                metrics.push(("kNN top-1 of the random-init encoder (baseline)", r));
            }
            result(&task, &metrics);
        }
        if let Some(l) = linear {
            let task = format!(
                "linear probe on frozen L2-normalised backbone features ({} epochs)",
                l.epochs
            );
            result(&task, &[("top-1", l.top1), ("top-5", l.top5)]);
        }
    }
    s.push_str("---\n\n");
    s.push_str(&format!(
        "# {}\n\nA {} backbone ({} stem, {} input channel(s), {}-d features) pretrained with \
         {method} by [gyre](https://github.com/gyre-ssl/gyre) on {data}.\n\n",
        recipe.name,
        config.architecture,
        serde_json::to_value(config.stem)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        config.in_channels,
        config.feature_dim
    ));
    if let Some(l) = linear {
        s.push_str(&format!(
            "Linear probe (frozen, L2-normalised features, SGD 0.3 cosine, {} epochs): **{:.2}%** top-1, {:.2}% top-5.\n\n",
            l.epochs,
            100.0 * l.top1,
            100.0 * l.top5
        ));
    }
    if let Some(k) = knn.trained {
        s.push_str(&format!(
            "kNN top-1 (k = {}, t = {}): **{:.2}%**",
            recipe.eval.knn_k,
            recipe.eval.knn_t,
            100.0 * k
        ));
        let baselines: Vec<String> = [
            ("raw pixels", knn.raw_pixels),
            ("the random-init encoder", knn.random_init),
        ]
        .iter()
        .filter_map(|(what, v)| v.map(|v| format!("{what} {:.2}%", 100.0 * v)))
        .collect();
        if !baselines.is_empty() {
            s.push_str(&format!(
                "; on the same bank and queries, before training: {}",
                baselines.join(", ")
            ));
        }
        s.push_str(".\n\n");
    }
    s.push_str(&format!(
        "Inputs: images of {0}×{0} pixels in [0, 1], normalised with mean {1:?} and std {2:?}.\n\n",
        config.image_size, config.mean, config.std
    ));
    if license.is_none() {
        s.push_str(
            "Licence: none stated (the exporter sets one with `gyre export --license <id>`).\n\n",
        );
    }
    s.push_str(&format!(
        "## Use it\n\nIn gyre: `gyre_encoders::from_pretrained(\"<org>/<name>\", &Device::Cpu)`.\n\n\
         In PyTorch (torch and safetensors; works for every gyre architecture, the torchvision \
         key names included): the definition below builds the network from `config.json` and \
         loads `model.safetensors` strictly. Inputs are `[N, {c}, {size}, {size}]` images in \
         [0, 1], normalised with `cfg[\"mean\"]` and `cfg[\"std\"]` per channel; the output is the \
         `[N, {dim}]` pooled feature.\n\n```python\n{loader}\n\n\
         model, cfg = load_gyre_backbone(\".\")  # this folder\n\
         mean = torch.tensor(cfg[\"mean\"]).view(1, -1, 1, 1)\n\
         std = torch.tensor(cfg[\"std\"]).view(1, -1, 1, 1)\n\
         features = model((images - mean) / std)\n```\n\n",
        c = config.in_channels,
        size = config.image_size,
        dim = config.feature_dim,
        loader = gyre_encoders::hub::PYTORCH_LOADER.trim_end(),
    ));
    s.push_str(
        "## The recipe that produced it\n\n(`data.root` and `train.out_dir` are left out: they were \
         paths on the training machine.)\n\n```toml\n",
    );
    s.push_str(&shareable_recipe(recipe));
    s.push_str("```\n");
    s
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

/// Exports the backbone of the run in `run_dir` into `out`; with `linear_epochs`, also trains the
/// linear probe on the recipe's data (the kNN bank's images, scored on the queries) and puts its
/// result in the card. `device` runs the backbone for the probe's features. A non-empty `out`
/// is refused unless `opts.overwrite`.
pub fn export(
    run_dir: &Path,
    out: &Path,
    opts: &ExportOptions,
    device: &Device,
) -> anyhow::Result<()> {
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
    let device = device.clone();
    let wp = checkpoint::weights_path(run_dir);
    // The run's last kNN: from the checkpoint's state, or (checkpoints written before the state
    // was stored in them) from the metrics log; the baselines from the log.
    let tensors = gyre_encoders::weights::read_tensors(&wp, &device)?;
    let mut knn = logged_knn(run_dir);
    if let Ok(state) = checkpoint::state_of(&tensors, &wp) {
        knn.trained = state.knn_top1;
    }
    let backbone = checkpoint::backbone_from(&recipe, &tensors, &wp, &device)?;
    let size = recipe
        .augment
        .get(&recipe.method.views[0])
        .map(|a| a.size)
        .unwrap_or(0);
    let (mean, std) = crate::data_setup::run_normalisation(&recipe)?;
    let config = PretrainedConfig::new(&recipe.encoder.arch, backbone.config(), &mean, &std, size);
    let linear = match opts.linear_epochs {
        Some(epochs) => {
            let data = crate::data_setup::load(&recipe)?;
            let (bank, queries) = data
                .eval
                .as_ref()
                .context("the run's data has no labelled test split for a linear probe")?;
            let fb = crate::eval::raw_backbone_features(&backbone, bank, &mean, &std, &device)?;
            let fq = crate::eval::raw_backbone_features(&backbone, queries, &mean, &std, &device)?;
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
    let card = model_card(&recipe, &config, knn, linear, opts.license.as_deref());
    save_pretrained(out, &backbone, &config, &card)
        .with_context(|| format!("exporting to {}", out.display()))?;
    Ok(())
}
