//! Backbones in the Hugging Face Hub layout, loadable by gyre and by PyTorch alike: a model folder
//! holds `model.safetensors` (the backbone only, torchvision key names), `config.json`
//! ([`PretrainedConfig`]: the architecture and the input normalisation) and a `README.md` model
//! card.
//!
//! [`from_pretrained`] takes a local folder, or a Hub id (`org/name`) resolved through the local
//! Hub cache (`$HF_HOME/hub`, the `huggingface_hub` layout, read by the `hf-hub` crate); a file
//! missing from the cache is downloaded only when built with the `download` feature and not
//! offline (`HF_HUB_OFFLINE=1` or [`HubOptions::local_files_only`]). No pickle is ever read.

use crate::error::EncoderError;
use crate::resnet::{Block, ResNet, ResNetConfig, Stem};
use crate::weights::{load_into, read_tensors, save_tensors_atomic};
use gyre_kernels::Device;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The files of a model folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const CARD_FILE: &str = "README.md";

/// A self-contained PyTorch definition of every backbone gyre exports (torchvision's `ResNet`
/// layout and key names for any depths, widths and stem) and `load_gyre_backbone(folder)`, which
/// builds it from `config.json` and loads `model.safetensors` strictly. Model cards embed it; the
/// interoperability test runs it with torch against gyre's own forward pass.
pub const PYTORCH_LOADER: &str = include_str!("python/load_gyre_backbone.py");

/// `config.json` of an exported backbone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainedConfig {
    /// Always "gyre".
    pub library: String,
    /// The preset name (`resnet18`, …) or "custom".
    pub architecture: String,
    pub block: Block,
    pub depths: Vec<usize>,
    pub widths: Vec<usize>,
    pub stem: Stem,
    pub in_channels: usize,
    /// Each stage's first stride when not the usual 1, 2, 2, 2 (dense encoders); absent in
    /// files written before dense encoders.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strides: Vec<usize>,
    pub feature_dim: usize,
    /// Input normalisation, per channel, in [0, 1] units.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// The side of the training images.
    pub image_size: usize,
    /// Key names follow torchvision's `ResNet` (no `fc`).
    pub key_names: String,
}

impl PretrainedConfig {
    pub fn new(
        architecture: &str,
        cfg: &ResNetConfig,
        mean: &[f32],
        std: &[f32],
        image_size: usize,
    ) -> Self {
        Self {
            library: "gyre".into(),
            architecture: architecture.into(),
            block: cfg.block,
            depths: cfg.depths.clone(),
            widths: cfg.widths.clone(),
            stem: cfg.stem,
            in_channels: cfg.in_channels,
            strides: cfg.strides.clone(),
            feature_dim: cfg.feature_dim(),
            mean: mean.to_vec(),
            std: std.to_vec(),
            image_size,
            key_names: "torchvision".into(),
        }
    }

    pub fn resnet_config(&self) -> ResNetConfig {
        ResNetConfig {
            block: self.block,
            depths: self.depths.clone(),
            widths: self.widths.clone(),
            stem: self.stem,
            in_channels: self.in_channels,
            bn_splits: 1,
            strides: self.strides.clone(),
        }
    }
}

/// A loaded backbone and its configuration.
pub struct Pretrained {
    pub backbone: ResNet,
    pub config: PretrainedConfig,
    /// The folder the files came from.
    pub folder: PathBuf,
}

/// How to resolve a Hub id.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// The Hub cache (`…/hub`); `None`: see [`cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Branch or tag (a `refs/<revision>` file in the cache).
    pub revision: String,
    /// Never touch the network.
    pub local_files_only: bool,
}

impl Default for HubOptions {
    fn default() -> Self {
        let offline = std::env::var("HF_HUB_OFFLINE")
            .is_ok_and(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes" | "on"));
        Self {
            cache_dir: None,
            revision: "main".into(),
            local_files_only: offline,
        }
    }
}

fn herr(what: &str, problem: impl Into<String>) -> EncoderError {
    EncoderError::Weights {
        path: what.to_string(),
        problem: problem.into(),
    }
}

/// Writes a model folder: the backbone's tensors, `config.json` and the model card `card`.
pub fn save_pretrained(
    dir: &Path,
    backbone: &ResNet,
    config: &PretrainedConfig,
    card: &str,
) -> Result<(), EncoderError> {
    std::fs::create_dir_all(dir).map_err(|e| herr(&dir.display().to_string(), e.to_string()))?;
    let tensors = crate::weights::named_tensors(backbone.params(), "");
    save_tensors_atomic(&tensors, &dir.join(WEIGHTS_FILE))?;
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| herr(&p.display().to_string(), e.to_string()))
    };
    let json = serde_json::to_string_pretty(config).expect("a config serialises");
    write(CONFIG_FILE, &json)?;
    write(CARD_FILE, card)
}

/// Loads a model folder.
pub fn load_folder(dir: &Path, device: &Device) -> Result<Pretrained, EncoderError> {
    let cp = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&cp)
        .map_err(|e| herr(&cp.display().to_string(), format!("cannot read: {e}")))?;
    let config: PretrainedConfig = serde_json::from_str(&text)
        .map_err(|e| herr(&cp.display().to_string(), format!("not a gyre config: {e}")))?;
    let backbone = ResNet::new(config.resnet_config(), 0, device)?;
    let wp = dir.join(WEIGHTS_FILE);
    let tensors = read_tensors(&wp, device)?;
    load_into(backbone.params(), &tensors, "", &wp)?;
    Ok(Pretrained {
        backbone,
        config,
        folder: dir.to_path_buf(),
    })
}

/// The Hub cache folder: `opts.cache_dir`, else `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub` (what Python's `huggingface_hub` uses).
pub fn cache_dir(opts: &HubOptions) -> PathBuf {
    if let Some(d) = &opts.cache_dir {
        return d.clone();
    }
    match std::env::var_os("HF_HUB_CACHE") {
        Some(d) => PathBuf::from(d),
        None => hf_hub::Cache::from_env().path().clone(),
    }
}

/// Resolves `file` of Hub repo `id` to a local path: the cache first, then (with the `download`
/// feature and not offline) the network.
pub fn hub_file(id: &str, file: &str, opts: &HubOptions) -> Result<PathBuf, EncoderError> {
    let cache = hf_hub::Cache::new(cache_dir(opts));
    let repo =
        hf_hub::Repo::with_revision(id.into(), hf_hub::RepoType::Model, opts.revision.clone());
    if let Some(p) = cache.repo(repo).get(file) {
        return Ok(p);
    }
    download(id, file, opts)
}

#[cfg(feature = "download")]
fn download(id: &str, file: &str, opts: &HubOptions) -> Result<PathBuf, EncoderError> {
    if opts.local_files_only {
        return Err(herr(
            &format!("{id}/{file}"),
            "not in the local Hub cache and offline (HF_HUB_OFFLINE / local_files_only)",
        ));
    }
    let api = hf_hub::api::sync::ApiBuilder::new()
        .with_cache_dir(cache_dir(opts))
        .build()
        .map_err(|e| herr(id, format!("Hub client: {e}")))?;
    let repo =
        hf_hub::Repo::with_revision(id.into(), hf_hub::RepoType::Model, opts.revision.clone());
    api.repo(repo)
        .get(file)
        .map_err(|e| herr(&format!("{id}/{file}"), format!("download failed: {e}")))
}

#[cfg(not(feature = "download"))]
fn download(id: &str, file: &str, opts: &HubOptions) -> Result<PathBuf, EncoderError> {
    Err(herr(
        &format!("{id}/{file}"),
        format!(
            "not in the local Hub cache {} (revision '{}'); this build cannot download \
             (enable gyre-encoders' `download` feature) — or pass a local folder",
            cache_dir(opts).display(),
            opts.revision
        ),
    ))
}

/// A backbone from a local model folder or a Hub id (`org/name`), with default [`HubOptions`].
pub fn from_pretrained(id_or_dir: &str, device: &Device) -> Result<Pretrained, EncoderError> {
    from_pretrained_with(id_or_dir, &HubOptions::default(), device)
}

/// [`from_pretrained`] with explicit options.
pub fn from_pretrained_with(
    id_or_dir: &str,
    opts: &HubOptions,
    device: &Device,
) -> Result<Pretrained, EncoderError> {
    let local = Path::new(id_or_dir);
    if local.is_dir() {
        return load_folder(local, device);
    }
    let config = hub_file(id_or_dir, CONFIG_FILE, opts)?;
    let weights = hub_file(id_or_dir, WEIGHTS_FILE, opts)?;
    let folder = config.parent().map(Path::to_path_buf).unwrap_or_default();
    if weights.parent() != Some(folder.as_path()) {
        return Err(herr(
            id_or_dir,
            "config.json and model.safetensors are in different snapshots",
        ));
    }
    load_folder(&folder, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyre_kernels::Tensor;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gyre-hub-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Lays a model folder out as the Hub cache does: blobs, a snapshot of symlinks, refs/main
    /// without a trailing newline.
    fn into_cache(model: &Path, cache: &Path, id: &str) {
        let repo = cache.join(format!("models--{}", id.replace('/', "--")));
        let rev = "0123456789abcdef0123456789abcdef01234567";
        let snap = repo.join("snapshots").join(rev);
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(&snap).unwrap();
        for (i, f) in [WEIGHTS_FILE, CONFIG_FILE, CARD_FILE].iter().enumerate() {
            let blob = repo.join("blobs").join(format!("blob{i}"));
            std::fs::copy(model.join(f), &blob).unwrap();
            std::os::unix::fs::symlink(format!("../../blobs/blob{i}"), snap.join(f)).unwrap();
        }
        std::fs::write(repo.join("refs/main"), rev).unwrap();
    }

    #[test]
    fn export_then_load_from_a_folder_and_an_offline_hub_cache() -> Result<(), EncoderError> {
        let dev = Device::Cpu;
        let cfg = ResNetConfig::preset("resnet-mini", 1)?;
        let net = ResNet::new(cfg.clone(), 5, &dev)?;
        let pc = PretrainedConfig::new("resnet-mini", &cfg, &[0.286], &[0.353], 28);
        let dir = tmp("model");
        save_pretrained(&dir, &net, &pc, "---\nlibrary_name: gyre\n---\n")?;
        let x = Tensor::randn(0f32, 1.0, (2, 1, 28, 28), &dev)?;
        let want = net.forward_t(&x, false)?.flatten_all()?.to_vec1::<f32>()?;
        let check = |p: Pretrained| -> Result<(), EncoderError> {
            assert_eq!(p.config, pc);
            let got = p
                .backbone
                .forward_t(&x, false)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            assert_eq!(got, want);
            Ok(())
        };
        check(from_pretrained(dir.to_str().unwrap(), &dev)?)?;
        let cache = tmp("cache");
        into_cache(&dir, &cache, "gyre-ssl/resnet-mini-test");
        let opts = HubOptions {
            cache_dir: Some(cache.clone()),
            revision: "main".into(),
            local_files_only: true,
        };
        check(from_pretrained_with(
            "gyre-ssl/resnet-mini-test",
            &opts,
            &dev,
        )?)?;
        // Not cached, offline: a clear error naming the repo and the file, no network call.
        let e = from_pretrained_with("gyre-ssl/absent", &opts, &dev)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("gyre-ssl/absent/config.json"), "{e}");
        // A weights file for another architecture is refused, naming the first mismatch.
        let other = ResNet::new(ResNetConfig::preset("resnet18", 1)?, 0, &dev)?;
        save_pretrained(&dir, &other, &pc, "")?;
        let e = load_folder(&dir, &dev).err().unwrap().to_string();
        assert!(
            e.contains("model.safetensors") && e.contains("conv1.weight"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
        std::fs::remove_dir_all(&cache).ok();
        Ok(())
    }
}
