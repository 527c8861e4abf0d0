//! `gyre export`: a run's backbone as a Hugging Face Hub model folder (`model.safetensors` with
//! torchvision key names, `config.json`, and a `README.md` model card with YAML front matter:
//! library, tags, datasets, a `model-index` with the run's kNN top-1, and the recipe).

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

/// The model card of an exported backbone.
pub fn model_card(
    recipe: &Recipe,
    config: &PretrainedConfig,
    knn: Option<f64>,
    linear: Option<LinearResult>,
) -> String {
    let data = serde_json::to_value(recipe.data.kind)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let method = recipe.method.kind().as_str();
    let mut s = String::new();
    s.push_str("---\nlibrary_name: gyre\npipeline_tag: image-feature-extraction\nlicense: mit\n");
    s.push_str(&format!(
        "tags:\n- self-supervised-learning\n- gyre\n- {method}\n- {}\n",
        config.architecture
    ));
    s.push_str(&format!("datasets:\n- {}\n", dataset_id(&data)));
    if knn.is_some() || linear.is_some() {
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
        if let Some(k) = knn {
            let task = format!(
                "kNN (k = {}, t = {}) on frozen backbone features",
                recipe.eval.knn_k, recipe.eval.knn_t
            );
            result(&task, &[("kNN top-1", k)]);
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
    if let Some(k) = knn {
        s.push_str(&format!(
            "kNN top-1 (k = {}, t = {}): **{:.2}%**.\n\n",
            recipe.eval.knn_k,
            recipe.eval.knn_t,
            100.0 * k
        ));
    }
    s.push_str(&format!(
        "Inputs: images of {0}×{0} pixels in [0, 1], normalised with mean {1:?} and std {2:?}.\n\n",
        config.image_size, config.mean, config.std
    ));
    s.push_str(
        "## Use it\n\nIn gyre: `gyre_encoders::from_pretrained(\"<org>/<name>\", &Device::Cpu)`.\n\n\
         In PyTorch: `model.safetensors` holds a torchvision `ResNet` state dict without `fc`; with \
         the CIFAR stem, replace `conv1` by a 3×3 stride-1 convolution and `maxpool` by \
         `nn.Identity()`, then `model.load_state_dict(safetensors.torch.load_file(\"model.safetensors\"), strict=False)`.\n\n",
    );
    s.push_str("## The recipe that produced it\n\n```toml\n");
    s.push_str(&recipe.to_toml());
    s.push_str("```\n");
    s
}

fn last_knn(run_dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "knn")
        .find_map(|v| v["knn_top1"].as_f64())
}

/// Exports the backbone of the run in `run_dir` into `out`; with `linear_epochs`, also trains the
/// linear probe on the recipe's data (the kNN bank's images, scored on the queries) and puts its
/// result in the card. `device` runs the backbone for the probe's features.
pub fn export(
    run_dir: &Path,
    out: &Path,
    linear_epochs: Option<usize>,
    device: &Device,
) -> anyhow::Result<()> {
    let recipe = Recipe::load(&run_dir.join("recipe.toml"), &[])?;
    let device = device.clone();
    let wp = checkpoint::weights_path(run_dir);
    // The run's last kNN: from the checkpoint's state, or (checkpoints written before the state
    // was stored in them) from the metrics log.
    let tensors = gyre_encoders::weights::read_tensors(&wp, &device)?;
    let knn = match checkpoint::state_of(&tensors, &wp) {
        Ok(state) => state.knn_top1,
        Err(_) => last_knn(run_dir),
    };
    let backbone = checkpoint::backbone_from(&recipe, &tensors, &wp, &device)?;
    let size = recipe
        .augment
        .get(&recipe.method.views[0])
        .map(|a| a.size)
        .unwrap_or(0);
    let (mean, std) = crate::data_setup::run_normalisation(&recipe)?;
    let config = PretrainedConfig::new(&recipe.encoder.arch, backbone.config(), &mean, &std, size);
    let linear = match linear_epochs {
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
    let card = model_card(&recipe, &config, knn, linear);
    save_pretrained(out, &backbone, &config, &card)
        .with_context(|| format!("exporting to {}", out.display()))?;
    Ok(())
}
