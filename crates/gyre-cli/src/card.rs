//! The Hugging Face Hub model card of an exported backbone: YAML front matter (library, licence
//! when given, tags, datasets, a `model-index` with the run's kNN top-1 beside its raw-pixel and
//! random-init baselines, the linear probe), how to use it — from gyre, and from PyTorch with a
//! loader that works for every architecture gyre exports — and the recipe without local paths.

use gyre_encoders::hub::PretrainedConfig;
use gyre_train::export::{KnnResults, LinearResult};
use gyre_train::Recipe;

fn dataset_id(kind: &str) -> &str {
    match kind {
        k if k.starts_with("fashion-mnist") => "zalando-datasets/fashion_mnist",
        k if k.starts_with("cifar10") => "uoft-cs/cifar10",
        "cifar100" => "uoft-cs/cifar100",
        _ => "custom",
    }
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
