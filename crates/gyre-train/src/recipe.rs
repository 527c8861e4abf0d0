//! Training recipes in TOML: parsed with `deny_unknown_fields`, overridden with `--set a.b=v`, and
//! validated field by field before anything is allocated. The resolved recipe is saved in the run.

use crate::optim::OptimKind;
use crate::schedule::Decay;
use gyre_data::AugmentConfig;
use gyre_encoders::Stem;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The recipe `gyre train` uses when none is given: SimCLR on the embedded Fashion-MNIST split.
pub const DEFAULT_RECIPE: &str = include_str!("../../../recipes/default.toml");
/// How `DEFAULT_RECIPE` is named in messages.
pub const DEFAULT_RECIPE_NAME: &str = "<embedded>/recipes/default.toml";

/// A recipe that cannot be used; the message names the file, the field and the problem.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {problem}")]
    Parse { file: String, problem: String },
    #[error("{file}: {field}: {problem}")]
    Invalid {
        file: String,
        field: String,
        problem: String,
    },
    #[error("--set {arg}: {problem}")]
    Override { arg: String, problem: String },
}

/// Which dataset to pretrain on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataKind {
    /// Fashion-MNIST's 10k test split, embedded in the binary: 8000 for pretraining (and the kNN
    /// bank), 2000 as kNN queries.
    FashionMnistEmbedded,
    /// The full Fashion-MNIST split on disk.
    FashionMnist,
}

/// What the kNN monitor uses as its labelled bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KnnBank {
    /// The images the run pretrains on (after `subset`).
    Pretrain,
    /// The dataset's whole training split.
    Train,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub kind: DataKind,
    /// Folder of the dataset; default: searched (see `gyre_data::fashion_mnist::locate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// Pretrain on the first `subset` training images only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<usize>,
    /// Per-channel normalisation, in [0, 1] units.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    #[serde(default = "d_bank")]
    pub knn_bank: KnnBank,
    /// Batches built ahead of the training step.
    #[serde(default = "d_prefetch")]
    pub prefetch: usize,
}
fn d_bank() -> KnnBank {
    KnnBank::Pretrain
}
fn d_prefetch() -> usize {
    2
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    /// `resnet-mini`, `resnet18`, `resnet34` or `resnet50`.
    pub arch: String,
    /// Overrides the preset's stem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stem: Option<Stem>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadConfig {
    pub hidden: usize,
    pub output: usize,
}

/// The method and its loss settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    /// `simclr`.
    pub name: String,
    /// Loss temperature τ.
    pub temperature: f64,
    /// The `[augment.*]` pipeline of each view, in order.
    pub views: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    pub name: OptimKind,
    /// Base learning rate (per 256 images when `scale_lr_with_batch`).
    pub lr: f64,
    #[serde(default)]
    pub momentum: f64,
    #[serde(default)]
    pub nesterov: bool,
    #[serde(default)]
    pub weight_decay: f64,
    /// Exempt BatchNorm parameters and biases from weight decay.
    #[serde(default)]
    pub exclude_bn_bias: bool,
    /// `lr · batch_size / 256` (Goyal et al.).
    #[serde(default)]
    pub scale_lr_with_batch: bool,
    #[serde(default)]
    pub warmup_epochs: f64,
    #[serde(default = "d_decay")]
    pub decay: Decay,
    #[serde(default)]
    pub final_lr: f64,
    #[serde(default = "d_betas")]
    pub betas: [f64; 2],
    #[serde(default = "d_eps")]
    pub eps: f64,
}
fn d_decay() -> Decay {
    Decay::Cosine
}
fn d_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn d_eps() -> f64 {
    1e-8
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Compute threads; 0 = one per core.
    #[serde(default)]
    pub threads: usize,
    /// `cpu`, `cuda`, `cuda:N`, `metal` or `auto`.
    #[serde(default = "d_device")]
    pub device: String,
    /// Log a step line to metrics.jsonl every this many steps.
    #[serde(default = "d_log")]
    pub log_every: usize,
    /// Where run folders go.
    #[serde(default = "d_out")]
    pub out_dir: PathBuf,
    /// Write a checkpoint every this many epochs (and always at the end).
    #[serde(default = "d_one")]
    pub checkpoint_every: usize,
}
fn d_device() -> String {
    "cpu".into()
}
fn d_log() -> usize {
    10
}
fn d_out() -> PathBuf {
    PathBuf::from("runs")
}
fn d_one() -> usize {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Run the kNN monitor every this many epochs (0: only at the end).
    #[serde(default = "d_one")]
    pub knn_every: usize,
    #[serde(default = "d_k")]
    pub knn_k: usize,
    #[serde(default = "d_t")]
    pub knn_t: f64,
    /// Also measure raw pixels and the random-init encoder once, for reference.
    #[serde(default = "d_true")]
    pub baselines: bool,
}
fn d_k() -> usize {
    200
}
fn d_t() -> f64 {
    0.1
}
fn d_true() -> bool {
    true
}

/// The IRC plug-in (`[irc]`): an instance-level circulation view 1 → memory → view 2 closed by
/// the identity (two views of one image are the Task S pair), with its own projection head, and
/// optionally auto-paired extra positives for the base loss. See docs/methods.md.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrcConfig {
    /// λ_c, the weight of the circulation loss.
    #[serde(default = "d_irc_weight")]
    pub weight: f64,
    /// τ_c of both hops of the walk.
    #[serde(default = "d_irc_tau")]
    pub temperature: f64,
    /// K, rows of the memory the walk crosses (the middle group).
    #[serde(default = "d_irc_memory")]
    pub memory: usize,
    /// The cycle's own projection head (kept apart from the base head, as the IRC code's
    /// `final_cycle`).
    #[serde(default = "d_irc_hidden")]
    pub head_hidden: usize,
    #[serde(default = "d_irc_out")]
    pub head_output: usize,
    /// Add auto-paired positives to the base loss.
    #[serde(default)]
    pub auto_pair: bool,
    /// Weight of the auto-paired term (before the ramp).
    #[serde(default = "d_irc_weight")]
    pub auto_pair_weight: f64,
    /// ρ: fraction of each batch's rows (most confident matches) that get an auto-paired positive.
    #[serde(default = "d_irc_keep")]
    pub keep_fraction: f64,
    /// Fraction of training over which the auto-pair weight ramps from 0 to 1.
    #[serde(default = "d_irc_ramp")]
    pub ramp: f64,
    /// Memory entries averaged per match (1: top-1).
    #[serde(default = "d_irc_top_n")]
    pub top_n: usize,
}
fn d_irc_weight() -> f64 {
    1.0
}
fn d_irc_tau() -> f64 {
    0.1
}
fn d_irc_memory() -> usize {
    4096
}
fn d_irc_hidden() -> usize {
    512
}
fn d_irc_out() -> usize {
    128
}
fn d_irc_keep() -> f64 {
    0.2
}
fn d_irc_ramp() -> f64 {
    0.1
}
fn d_irc_top_n() -> usize {
    1
}

/// A whole training recipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    pub method: MethodConfig,
    pub data: DataConfig,
    pub encoder: EncoderConfig,
    pub head: HeadConfig,
    pub augment: BTreeMap<String, AugmentConfig>,
    pub optim: OptimConfig,
    pub train: TrainConfig,
    #[serde(default = "d_eval")]
    pub eval: EvalConfig,
    /// The IRC plug-in; absent = off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irc: Option<IrcConfig>,
}
fn d_eval() -> EvalConfig {
    EvalConfig {
        knn_every: 1,
        knn_k: d_k(),
        knn_t: d_t(),
        baselines: true,
    }
}

/// Sets `path` (dotted) in a TOML table to `value`, creating tables on the way.
fn set_path(root: &mut toml::Table, arg: &str) -> Result<(), RecipeError> {
    let err = |problem: String| RecipeError::Override {
        arg: arg.to_string(),
        problem,
    };
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| err("expected section.key=value".into()))?;
    let key = key.trim();
    let raw = raw.trim();
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("parsed key"),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(err(format!("'{key}' is not a dotted key")));
    }
    let mut table = root;
    for p in &parts[..parts.len() - 1] {
        let entry = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| err(format!("'{p}' is not a section")))?;
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// Names the `[section]` a byte offset of `text` falls in, for error messages.
fn section_at(text: &str, offset: usize) -> Option<String> {
    text[..offset.min(text.len())]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').to_string())
}

impl Recipe {
    /// Parses TOML text (`file` names it in errors), applies `overrides`, and validates.
    pub fn parse(text: &str, file: &str, overrides: &[String]) -> Result<Recipe, RecipeError> {
        let perr = |problem: String| RecipeError::Parse {
            file: file.to_string(),
            problem,
        };
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| perr(e.message().to_string()))?;
        for o in overrides {
            set_path(&mut table, o)?;
        }
        let merged = toml::to_string(&table).map_err(|e| perr(e.to_string()))?;
        let recipe: Recipe = toml::from_str(&merged).map_err(|e| {
            let section = e.span().and_then(|s| section_at(&merged, s.start));
            match section {
                Some(s) => perr(format!("[{s}] {}", e.message())),
                None => perr(e.message().to_string()),
            }
        })?;
        recipe.validate(file)?;
        Ok(recipe)
    }

    /// Reads and parses a recipe file.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Recipe, RecipeError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Io {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, &file, overrides)
    }

    /// The embedded default recipe.
    pub fn default_recipe(overrides: &[String]) -> Result<Recipe, RecipeError> {
        Self::parse(DEFAULT_RECIPE, DEFAULT_RECIPE_NAME, overrides)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a recipe always serialises")
    }

    /// Checks every value; the error names the field.
    pub fn validate(&self, file: &str) -> Result<(), RecipeError> {
        let bad = |field: &str, problem: String| {
            Err(RecipeError::Invalid {
                file: file.to_string(),
                field: field.to_string(),
                problem,
            })
        };
        let positive = |field: &str, v: f64| -> Result<(), RecipeError> {
            if !(v > 0.0 && v.is_finite()) {
                return bad(field, format!("must be a positive number, got {v}"));
            }
            Ok(())
        };
        if self.name.trim().is_empty() || self.name.contains(['/', '\\']) {
            return bad(
                "name",
                format!(
                    "must be a non-empty name without slashes, got '{}'",
                    self.name
                ),
            );
        }
        if self.method.name != "simclr" {
            return bad(
                "method.name",
                format!("unknown method '{}': expected simclr", self.method.name),
            );
        }
        positive("method.temperature", self.method.temperature)?;
        if self.method.views.len() != 2 {
            return bad(
                "method.views",
                format!(
                    "simclr needs exactly 2 views, got {}",
                    self.method.views.len()
                ),
            );
        }
        for v in &self.method.views {
            if !self.augment.contains_key(v) {
                return bad("method.views", format!("no [augment.{v}] section"));
            }
        }
        for (name, a) in &self.augment {
            if let Err(e) = a.validate() {
                return bad(&format!("augment.{name}"), e.to_string());
            }
        }
        let channels = 1; // Fashion-MNIST
        if self.data.mean.len() != channels || self.data.std.len() != channels {
            return bad(
                "data.mean",
                format!(
                    "needs {channels} value(s) per field (mean and std), got {} and {}",
                    self.data.mean.len(),
                    self.data.std.len()
                ),
            );
        }
        if let Some(s) = self.data.std.iter().find(|s| s.is_nan() || **s <= 0.0) {
            return bad("data.std", format!("must be positive, got {s}"));
        }
        if self.data.subset == Some(0) {
            return bad("data.subset", "must be positive".into());
        }
        if self.data.kind == DataKind::FashionMnistEmbedded && self.data.root.is_some() {
            return bad(
                "data.root",
                "the embedded dataset has no root; use kind = \"fashion-mnist\"".into(),
            );
        }
        if let Err(e) = gyre_encoders::ResNetConfig::preset(&self.encoder.arch, channels) {
            return bad("encoder.arch", e.to_string());
        }
        if self.head.hidden == 0 || self.head.output == 0 {
            return bad("head", "hidden and output must be positive".into());
        }
        if let Some(irc) = &self.irc {
            positive("irc.temperature", irc.temperature)?;
            if !(irc.weight >= 0.0 && irc.weight.is_finite()) {
                return bad("irc.weight", format!("must be ≥ 0, got {}", irc.weight));
            }
            if !(irc.auto_pair_weight >= 0.0 && irc.auto_pair_weight.is_finite()) {
                return bad(
                    "irc.auto_pair_weight",
                    format!("must be ≥ 0, got {}", irc.auto_pair_weight),
                );
            }
            if irc.memory < self.train.batch_size {
                return bad(
                    "irc.memory",
                    format!(
                        "must hold at least one batch ({}), got {}",
                        self.train.batch_size, irc.memory
                    ),
                );
            }
            if irc.head_hidden == 0 || irc.head_output == 0 {
                return bad("irc", "head_hidden and head_output must be positive".into());
            }
            if !(irc.keep_fraction > 0.0 && irc.keep_fraction <= 1.0) {
                return bad(
                    "irc.keep_fraction",
                    format!("must be in (0, 1], got {}", irc.keep_fraction),
                );
            }
            if !(0.0..=1.0).contains(&irc.ramp) {
                return bad("irc.ramp", format!("must be in [0, 1], got {}", irc.ramp));
            }
            if irc.top_n == 0 || irc.top_n > irc.memory {
                return bad(
                    "irc.top_n",
                    format!("must be in 1..=memory, got {}", irc.top_n),
                );
            }
        }
        positive("optim.lr", self.optim.lr)?;
        if !(0.0..1.0).contains(&self.optim.momentum) {
            return bad(
                "optim.momentum",
                format!("must be in [0, 1), got {}", self.optim.momentum),
            );
        }
        if self.optim.nesterov && self.optim.momentum == 0.0 {
            return bad("optim.nesterov", "needs momentum > 0".into());
        }
        if !(self.optim.weight_decay >= 0.0 && self.optim.weight_decay.is_finite()) {
            return bad(
                "optim.weight_decay",
                format!("must be ≥ 0, got {}", self.optim.weight_decay),
            );
        }
        if !(self.optim.final_lr >= 0.0 && self.optim.final_lr <= self.optim.lr) {
            return bad(
                "optim.final_lr",
                format!("must be in [0, lr], got {}", self.optim.final_lr),
            );
        }
        if !(self.optim.warmup_epochs >= 0.0
            && self.optim.warmup_epochs <= self.train.epochs as f64)
        {
            return bad(
                "optim.warmup_epochs",
                format!(
                    "must be in [0, train.epochs], got {}",
                    self.optim.warmup_epochs
                ),
            );
        }
        for (i, b) in self.optim.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                return bad(
                    &format!("optim.betas[{i}]"),
                    format!("must be in [0, 1), got {b}"),
                );
            }
        }
        positive("optim.eps", self.optim.eps)?;
        if self.train.epochs == 0 {
            return bad("train.epochs", "must be positive".into());
        }
        if self.train.batch_size < 2 {
            return bad(
                "train.batch_size",
                format!("must be at least 2, got {}", self.train.batch_size),
            );
        }
        if self.train.log_every == 0 || self.train.checkpoint_every == 0 {
            return bad(
                "train.log_every",
                "log_every and checkpoint_every must be positive".into(),
            );
        }
        if let Err(e) = gyre_kernels::select_device(&self.train.device) {
            if matches!(e, gyre_kernels::DeviceError::Unknown(_)) {
                return bad("train.device", e.to_string());
            }
        }
        if self.eval.knn_k == 0 {
            return bad("eval.knn_k", "must be positive".into());
        }
        positive("eval.knn_t", self.eval.knn_t)?;
        Ok(())
    }

    /// Base learning rate after the batch-size rule.
    pub fn effective_lr(&self) -> f64 {
        if self.optim.scale_lr_with_batch {
            self.optim.lr * self.train.batch_size as f64 / 256.0
        } else {
            self.optim.lr
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_recipe_parses_and_round_trips() {
        let r = Recipe::default_recipe(&[]).unwrap();
        assert_eq!(r.method.name, "simclr");
        let again = Recipe::parse(&r.to_toml(), "resolved", &[]).unwrap();
        assert_eq!(again.to_toml(), r.to_toml());
    }

    #[test]
    fn overrides_apply_and_are_validated() {
        let r = Recipe::default_recipe(&[
            "train.epochs=3".into(),
            "optim.lr = 0.5".into(),
            "name=x".into(),
        ])
        .unwrap();
        assert_eq!(r.train.epochs, 3);
        assert_eq!(r.optim.lr, 0.5);
        assert_eq!(r.name, "x");
        let e = Recipe::default_recipe(&["optim.lr=-0.1".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "<embedded>/recipes/default.toml: optim.lr: must be a positive number, got -0.1"
        );
        let e = Recipe::default_recipe(&["optim.lr2=1".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[optim] unknown field `lr2`"), "{e}");
        let e = Recipe::default_recipe(&["train".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected section.key=value"), "{e}");
    }

    #[test]
    fn unknown_key_in_a_file_names_file_and_section() {
        let text = DEFAULT_RECIPE.replace("[train]", "[train]\nepochz = 3");
        let e = Recipe::parse(&text, "my.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("my.toml: [train] unknown field `epochz`"),
            "{e}"
        );
        assert!(!e.contains('\n'), "one line: {e}");
    }
}
