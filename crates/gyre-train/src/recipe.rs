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
    #[error("{file}: cannot read")]
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

/// The largest width a recipe may give a layer (head and predictor sizes).
pub const MAX_WIDTH: usize = 1 << 16;
/// The largest row count of a queue, memory, pool or cluster set.
pub const MAX_ROWS: usize = 1 << 24;

/// Which dataset to pretrain on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataKind {
    /// Fashion-MNIST's 10k test split, embedded in the binary: 8000 for pretraining (and the kNN
    /// bank), 2000 as kNN queries.
    FashionMnistEmbedded,
    /// The full Fashion-MNIST split on disk.
    FashionMnist,
    /// CIFAR-10 in the official binary layout (`cifar-10-batches-bin`).
    Cifar10,
    /// CIFAR-100 in the official binary layout (`cifar-100-binary`), fine labels.
    Cifar100,
    /// CIFAR-10 as JPEG image folders (`cifar10-jpeg/{train,test}/<class>/*.jpg`).
    Cifar10Jpeg,
    /// Your own images: `root/<class>/<image>` (or `root/train/…` and `root/test/…`), or any
    /// folder of images with `labelled = false`.
    ImageFolder,
}

impl DataKind {
    /// Image channels, when the kind fixes them.
    pub fn channels(self) -> Option<usize> {
        match self {
            DataKind::FashionMnistEmbedded | DataKind::FashionMnist => Some(1),
            DataKind::Cifar10 | DataKind::Cifar100 | DataKind::Cifar10Jpeg => Some(3),
            DataKind::ImageFolder => None,
        }
    }
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
    /// Per-channel normalisation, in [0, 1] units. Default: the dataset's own — the published
    /// values of Fashion-MNIST and CIFAR, or for image folders computed from the pretraining
    /// images ([`crate::data_setup`]); the run's `recipe.toml` records what was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f32>>,
    #[serde(default = "d_bank")]
    pub knn_bank: KnnBank,
    /// Batches built ahead of the training step.
    #[serde(default = "d_prefetch")]
    pub prefetch: usize,
    /// What an unusable sample (corrupt, truncated, not an image, wrong channels or size, an
    /// empty class folder) does: `fail` stops naming the file, `skip` counts and reports it.
    #[serde(default)]
    pub on_bad_sample: gyre_data::OnBadSample,
    /// Image folders: resize (shorter side) and centre-crop every image to this square size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
    /// Image folders: labels from the class folders (`false`: an unlabelled folder, no kNN).
    #[serde(default = "d_true")]
    pub labelled: bool,
    /// Image folders and `cifar10-jpeg`: where decoded images live. `auto`: in memory when the
    /// decoded set fits in `memory_budget_mb`, else decoded again every epoch; `memory`; `disk`
    /// (decode every epoch, memory independent of the dataset's size).
    #[serde(default)]
    pub residency: ResidencyChoice,
    /// The `auto` residency's budget for one split's decoded images, in MB (2^20 bytes).
    #[serde(default = "d_budget")]
    pub memory_budget_mb: u64,
}

/// `data.residency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResidencyChoice {
    #[default]
    Auto,
    Memory,
    Disk,
}

impl DataConfig {
    /// The folder readers' residency for these settings.
    pub fn residency(&self) -> gyre_data::Residency {
        match self.residency {
            ResidencyChoice::Auto => gyre_data::Residency::Auto {
                budget_bytes: self.memory_budget_mb << 20,
            },
            ResidencyChoice::Memory => gyre_data::Residency::Memory,
            ResidencyChoice::Disk => gyre_data::Residency::Disk,
        }
    }
}

fn d_budget() -> u64 {
    4096
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
    /// SplitBatchNorm sub-batches in the backbone (MoCo's CIFAR demo uses 8); 1 = plain BN.
    #[serde(default = "d_one")]
    pub bn_splits: usize,
    /// Overrides the preset's stem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stem: Option<Stem>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadConfig {
    pub hidden: usize,
    pub output: usize,
    /// Linear layers of the projector.
    #[serde(default = "d_two")]
    pub layers: usize,
    /// BatchNorm on the hidden layers (SimCLR, BYOL, SimSiam); MoCo v2 and ReSSL have none.
    #[serde(default = "d_true")]
    pub batch_norm: bool,
    /// A BatchNorm without affine parameters on the output (SimSiam).
    #[serde(default)]
    pub output_bn: bool,
}
fn d_two() -> usize {
    2
}

impl HeadConfig {
    /// The projector over features of width `input`.
    pub fn projector(&self, input: usize) -> gyre_encoders::ProjectionHeadConfig {
        gyre_encoders::ProjectionHeadConfig {
            input,
            hidden: self.hidden,
            output: self.output,
            layers: self.layers,
            hidden_bn: self.batch_norm,
            output_bn: self.output_bn,
        }
    }
}

/// The self-supervised methods gyre implements (docs/methods.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodName {
    Simclr,
    Mocov2,
    Byol,
    Simsiam,
    Ressl,
    Reco,
    Interclr,
}

impl MethodName {
    pub fn as_str(self) -> &'static str {
        match self {
            MethodName::Simclr => "simclr",
            MethodName::Mocov2 => "mocov2",
            MethodName::Byol => "byol",
            MethodName::Simsiam => "simsiam",
            MethodName::Ressl => "ressl",
            MethodName::Reco => "reco",
            MethodName::Interclr => "interclr",
        }
    }

    /// How many views the method's step takes, and what they are (for messages).
    pub fn views(self) -> (usize, &'static str) {
        match self {
            MethodName::Ressl => (2, "the student's strong view, then the teacher's weak view"),
            MethodName::Reco => (3, "query (strong), key (strong), weak key"),
            _ => (2, "two views of each image"),
        }
    }

    /// The `[method]` keys the method reads (besides `name` and `views`).
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            MethodName::Simclr => &["temperature"],
            MethodName::Mocov2 => &[
                "temperature",
                "queue",
                "momentum",
                "momentum_final",
                "symmetric",
            ],
            MethodName::Byol => &["momentum", "momentum_final", "predictor_hidden"],
            MethodName::Simsiam => &["predictor_hidden"],
            MethodName::Ressl => &[
                "temperature",
                "teacher_temperature",
                "queue",
                "momentum",
                "momentum_final",
                "predictor",
                "predictor_hidden",
                "nce_warmup_epochs",
                "nce_temperature",
            ],
            MethodName::Reco => &[
                "temperature",
                "relation_temperature",
                "teacher_temperature",
                "queue",
                "momentum",
                "momentum_final",
                "global_weight",
                "local_weight",
            ],
            MethodName::Interclr => &[
                "temperature",
                "queue",
                "momentum",
                "momentum_final",
                "intra_weight",
                "inter_weight",
                "margin",
                "clusters",
                "min_cluster",
                "centroid_every",
                "pool",
                "negatives",
                "kmeans_warmup_epochs",
            ],
        }
    }
}

/// The method and its loss settings. Which keys a method reads, and their defaults (the
/// published values of `methods.md`), are listed in docs/recipes.md; a key the named method does
/// not read is an error.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    pub name: Option<MethodName>,
    /// The `[augment.*]` pipeline of each view, in order.
    #[serde(default)]
    pub views: Vec<String>,
    /// τ of the contrastive loss (SimCLR, MoCo, ReCo's MoCo part, InterCLR); ReSSL's student τ_s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// τ_t of the teacher's relation distribution (ReSSL, ReCo); 0.04.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_temperature: Option<f64>,
    /// ReCo's student τ_s of the global relation; 0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation_temperature: Option<f64>,
    /// K, rows of the queue (a multiple of the keys enqueued per step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<usize>,
    /// EMA momentum of the teacher (at the start, when `momentum_final` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// With it, the momentum follows BYOL's cosine schedule from `momentum` to this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum_final: Option<f64>,
    /// MoCo: the symmetric loss `(L(q1, k2) + L(q2, k1)) / 2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric: Option<bool>,
    /// ReSSL (TPAMI): an asymmetric predictor on the student [P].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictor: Option<bool>,
    /// Hidden width of the predictor (BYOL, SimSiam, ReSSL's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictor_hidden: Option<usize>,
    /// ReSSL (TPAMI): epochs over which InfoNCE cross-fades linearly into the relational loss [P].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nce_warmup_epochs: Option<f64>,
    /// τ of that InfoNCE warm-up; 0.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nce_temperature: Option<f64>,
    /// ReCo: λ1 (global relation) and λ2 (local interpolation); 1 and 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_weight: Option<f64>,
    /// InterCLR: weights of the intra and inter terms; 0.75 and 0.25.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intra_weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inter_weight: Option<f64>,
    /// InterCLR: cosine margin on the inter positive; −0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    /// InterCLR: online k-means clusters, their minimum size, and the centroid refresh interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cluster: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub centroid_every: Option<usize>,
    /// InterCLR: semi-hard pool size and negatives drawn from it per query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negatives: Option<usize>,
    /// InterCLR: intra-only epochs before the first k-means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kmeans_warmup_epochs: Option<usize>,
}

impl MethodConfig {
    /// The method (validation guarantees it is set).
    pub fn kind(&self) -> MethodName {
        self.name.unwrap_or(MethodName::Simclr)
    }

    /// The keys set in this section, for the "does the method read it" check.
    fn set_keys(&self) -> Vec<&'static str> {
        let mut k = Vec::new();
        macro_rules! chk {
            ($($f:ident),*) => {$( if self.$f.is_some() { k.push(stringify!($f)); } )*};
        }
        chk!(
            temperature,
            teacher_temperature,
            relation_temperature,
            queue,
            momentum,
            momentum_final,
            symmetric,
            predictor,
            predictor_hidden,
            nce_warmup_epochs,
            nce_temperature,
            global_weight,
            local_weight,
            intra_weight,
            inter_weight,
            margin,
            clusters,
            min_cluster,
            centroid_every,
            pool,
            negatives,
            kmeans_warmup_epochs
        );
        k
    }
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
    /// LARS trust coefficient η.
    #[serde(default = "d_eta")]
    pub eta: f64,
    /// LARS: clip the layer-wise rate at the global one (solo-learn's CIFAR setting).
    #[serde(default = "d_true")]
    pub clip_lr: bool,
}
fn d_eta() -> f64 {
    0.02
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
    /// Also every this many steps inside an epoch (0: off).
    #[serde(default)]
    pub checkpoint_every_steps: usize,
    /// Keep the latest N checkpoints (N > 1: copies under `checkpoints/`).
    #[serde(default = "d_one")]
    pub keep_last: usize,
    /// Keep the best checkpoint by kNN top-1 as `checkpoint-best.safetensors`.
    #[serde(default)]
    pub keep_best: bool,
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
    /// The run's name; default `<method>_<encoder.arch>_<data.kind>`.
    #[serde(default)]
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

/// `line:column` (1-based) of a byte offset of `text`.
fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{line}:{col}")
}

/// A TOML parser or deserialiser message on one line.
fn one_line(message: &str) -> String {
    message.trim().replace('\n', ": ")
}

impl Recipe {
    /// Parses TOML text (`file` names it in errors), applies `overrides`, and validates. Errors
    /// name the file and, for invalid TOML, the line and column; for a bad value or key, its
    /// dotted path (`optim.lr`, `augment.strong.size`).
    pub fn parse(text: &str, file: &str, overrides: &[String]) -> Result<Recipe, RecipeError> {
        let perr = |problem: String| RecipeError::Parse {
            file: file.to_string(),
            problem,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => RecipeError::Parse {
                file: format!("{file}:{}", line_col(text, span.start)),
                problem: one_line(e.message()),
            },
            None => perr(one_line(e.message())),
        })?;
        for o in overrides {
            set_path(&mut table, o)?;
        }
        let named = table.contains_key("name");
        let mut recipe: Recipe = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let path = e.path().to_string();
                let problem = one_line(e.inner().message());
                if path == "." {
                    perr(problem)
                } else {
                    perr(format!("{path}: {problem}"))
                }
            })?;
        if !named {
            recipe.name = recipe.default_name();
        }
        recipe.validate(file)?;
        Ok(recipe)
    }

    /// `<method>_<encoder.arch>_<data.kind>`, the name of a recipe that gives none.
    pub fn default_name(&self) -> String {
        let kind = serde_json::to_value(self.data.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let method = self.method.name.map_or("method", MethodName::as_str);
        format!("{method}_{}_{kind}", self.encoder.arch)
    }

    /// Image channels, when the recipe fixes them: the dataset kind's, else `data.mean`'s length
    /// (an image folder's are known once it is read).
    pub fn in_channels(&self) -> Option<usize> {
        self.data
            .kind
            .channels()
            .or(self.data.mean.as_ref().map(Vec::len))
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
        let Some(method) = self.method.name else {
            return bad(
                "method.name",
                "missing: one of simclr, mocov2, byol, simsiam, ressl, reco, interclr".into(),
            );
        };
        for key in self.method.set_keys() {
            if !method.keys().contains(&key) {
                return bad(
                    &format!("method.{key}"),
                    format!(
                        "{} does not use it (it reads: {})",
                        method.as_str(),
                        method.keys().join(", ")
                    ),
                );
            }
        }
        let m = &self.method;
        // Sizes that allocate are bounded: a typo must not ask for more memory than exists.
        let irc = self.irc.as_ref();
        for (field, v, max) in [
            ("head.hidden", Some(self.head.hidden), MAX_WIDTH),
            ("head.output", Some(self.head.output), MAX_WIDTH),
            ("head.layers", Some(self.head.layers), 64),
            ("method.predictor_hidden", m.predictor_hidden, MAX_WIDTH),
            ("method.queue", m.queue, MAX_ROWS),
            ("method.pool", m.pool, MAX_ROWS),
            ("method.negatives", m.negatives, MAX_ROWS),
            ("method.clusters", m.clusters, MAX_ROWS),
            ("irc.memory", irc.map(|i| i.memory), MAX_ROWS),
            ("irc.head_hidden", irc.map(|i| i.head_hidden), MAX_WIDTH),
            ("irc.head_output", irc.map(|i| i.head_output), MAX_WIDTH),
            ("train.batch_size", Some(self.train.batch_size), 1 << 20),
            ("train.threads", Some(self.train.threads), 4096),
            ("data.prefetch", Some(self.data.prefetch), 64),
            ("data.image_size", self.data.image_size, 1 << 14),
            (
                "data.memory_budget_mb",
                usize::try_from(self.data.memory_budget_mb)
                    .ok()
                    .or(Some(usize::MAX)),
                1 << 30,
            ),
        ] {
            if let Some(v) = v.filter(|v| *v > max) {
                return bad(field, format!("must be at most {max}, got {v}"));
            }
        }
        for (key, v) in [
            ("temperature", m.temperature),
            ("teacher_temperature", m.teacher_temperature),
            ("relation_temperature", m.relation_temperature),
            ("nce_temperature", m.nce_temperature),
        ] {
            if let Some(v) = v {
                positive(&format!("method.{key}"), v)?;
            }
        }
        for (key, v) in [
            ("global_weight", m.global_weight),
            ("local_weight", m.local_weight),
            ("intra_weight", m.intra_weight),
            ("inter_weight", m.inter_weight),
            ("nce_warmup_epochs", m.nce_warmup_epochs),
        ] {
            if let Some(v) = v.filter(|v| !(*v >= 0.0 && v.is_finite())) {
                return bad(&format!("method.{key}"), format!("must be ≥ 0, got {v}"));
            }
        }
        if let Some(v) = m.margin.filter(|v| !v.is_finite()) {
            return bad("method.margin", format!("must be finite, got {v}"));
        }
        for (key, v) in [
            ("momentum", m.momentum),
            ("momentum_final", m.momentum_final),
        ] {
            if let Some(v) = v.filter(|v| !(0.0..=1.0).contains(v)) {
                return bad(
                    &format!("method.{key}"),
                    format!("must be in [0, 1], got {v}"),
                );
            }
        }
        for (key, v) in [
            ("predictor_hidden", m.predictor_hidden),
            ("clusters", m.clusters),
            ("centroid_every", m.centroid_every),
            ("pool", m.pool),
            ("negatives", m.negatives),
        ] {
            if v == Some(0) {
                return bad(&format!("method.{key}"), "must be positive".into());
            }
        }
        if let (Some(n), Some(p)) = (m.negatives, m.pool) {
            if n > p {
                return bad(
                    "method.negatives",
                    format!("{n} negatives cannot be drawn from a pool of {p}"),
                );
            }
        }
        if let Some(k) = m.queue {
            // Keys enqueued per step: both views' keys for symmetric MoCo, one batch otherwise.
            let per_step = self.train.batch_size * if m.symmetric == Some(true) { 2 } else { 1 };
            if k == 0 || !k.is_multiple_of(per_step) {
                return bad(
                    "method.queue",
                    format!("must be a positive multiple of the {per_step} keys enqueued per step, got {k}"),
                );
            }
        }
        let (n_views, what) = method.views();
        if self.method.views.len() != n_views {
            return bad(
                "method.views",
                format!(
                    "{} needs {n_views} views ({what}), got {}",
                    method.as_str(),
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
        // Image folders find out at load time; the data loader checks it then.
        match (&self.data.mean, &self.data.std) {
            (Some(mean), Some(std)) => {
                let channels = self.data.kind.channels().unwrap_or(mean.len());
                if mean.len() != channels || std.len() != channels {
                    return bad(
                        "data.mean",
                        format!(
                            "needs {channels} value(s) per field (mean and std), got {} and {}",
                            mean.len(),
                            std.len()
                        ),
                    );
                }
                if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
                    return bad("data.mean", format!("must be finite, got {m}"));
                }
                if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                    return bad("data.std", format!("must be positive, got {s}"));
                }
            }
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => {
                return bad(
                    "data.mean",
                    "set data.mean and data.std together, or neither (the dataset's own)".into(),
                )
            }
        }
        if self.data.kind == DataKind::ImageFolder && self.data.root.is_none() {
            return bad("data.root", "image-folder needs the folder".into());
        }
        if self.data.image_size == Some(0) {
            return bad("data.image_size", "must be positive".into());
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
        if let Err(e) =
            gyre_encoders::ResNetConfig::preset(&self.encoder.arch, self.in_channels().unwrap_or(3))
        {
            return bad("encoder.arch", e.to_string());
        }
        if self.head.hidden == 0 || self.head.output == 0 || self.head.layers == 0 {
            return bad("head", "hidden, output and layers must be positive".into());
        }
        if self.encoder.bn_splits == 0
            || !self.train.batch_size.is_multiple_of(self.encoder.bn_splits)
        {
            return bad(
                "encoder.bn_splits",
                format!(
                    "must divide train.batch_size ({}), got {}",
                    self.train.batch_size, self.encoder.bn_splits
                ),
            );
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
        if self.train.keep_last == 0 {
            return bad("train.keep_last", "must be at least 1".into());
        }
        if self.train.log_every == 0 || self.train.checkpoint_every == 0 {
            return bad(
                "train.log_every",
                "log_every and checkpoint_every must be positive".into(),
            );
        }
        // Only parsed here: whether the device exists is the run's business (and `--device`
        // may override it).
        if let Err(e) = self.train.device.parse::<gyre_kernels::DeviceSpec>() {
            return bad("train.device", e.to_string());
        }
        // The same checks as `gyre eval --k / --t`.
        if let Err(p) = crate::knn::check_k(self.eval.knn_k) {
            return bad("eval.knn_k", p);
        }
        if let Err(p) = crate::knn::check_t(self.eval.knn_t) {
            return bad("eval.knn_t", p);
        }
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
        assert_eq!(r.method.kind(), MethodName::Simclr);
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
        assert!(e.contains("optim.lr2: unknown field `lr2`"), "{e}");
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
            e.starts_with("my.toml: train.epochz: unknown field `epochz`"),
            "{e}"
        );
        assert!(!e.contains('\n'), "one line: {e}");
    }

    /// Issue 19: an unknown section set from the command line is named as itself (it was
    /// reported under `[augment.strong]`), a wrong type names its dotted path, and invalid TOML
    /// names its line and column.
    #[test]
    fn errors_name_the_path_or_the_line_and_column() {
        let e = Recipe::default_recipe(&["bogus.x=3".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("<embedded>/recipes/default.toml: bogus: unknown field `bogus`"),
            "{e}"
        );
        assert!(!e.contains("[augment"), "{e}");
        let e = Recipe::default_recipe(&["augment.strong.size=\"big\"".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("augment.strong.size: invalid type: string \"big\""),
            "{e}"
        );
        let text = DEFAULT_RECIPE.replace("[train]\n", "[train]\nepochs = [1,\n");
        let line = text.lines().position(|l| l == "epochs = [1,").unwrap() + 1;
        let e = Recipe::parse(&text, "r.toml", &[]).unwrap_err().to_string();
        assert!(e.starts_with(&format!("r.toml:{}:", line + 1)), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        let e = Recipe::parse("name = \"a\"", "r.toml", &[])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "r.toml: missing field `method`");
    }

    /// Issue 19: without a name the run is named after what it trains, so changing the data from
    /// the command line renames it; without `data.mean` / `data.std` the dataset's own are used.
    #[test]
    fn names_and_normalisation_default_to_the_data() {
        let r = Recipe::default_recipe(&[]).unwrap();
        assert_eq!(r.name, "simclr_resnet-mini_fashion-mnist-embedded");
        assert_eq!(r.data.mean, None);
        let r = Recipe::default_recipe(&["data.kind=image-folder".into(), "data.root=/x".into()])
            .unwrap();
        assert_eq!(r.name, "simclr_resnet-mini_image-folder");
        let e = Recipe::default_recipe(&["data.mean=[0.5]".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("data.mean: set data.mean and data.std together"),
            "{e}"
        );
        let r = Recipe::default_recipe(&["name=mine".into()]).unwrap();
        assert_eq!(r.name, "mine");
    }

    #[test]
    fn every_recipe_in_the_repo_parses_and_round_trips() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
        let mut seen = std::collections::BTreeSet::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let r = Recipe::load(&p, &[]).unwrap_or_else(|e| panic!("{e}"));
                let again = Recipe::parse(&r.to_toml(), "resolved", &[]).unwrap();
                assert_eq!(again.to_toml(), r.to_toml(), "{}", p.display());
                seen.insert(r.method.kind().as_str());
            }
        }
        // Every method has a recipe.
        for m in [
            "simclr", "mocov2", "byol", "simsiam", "ressl", "reco", "interclr",
        ] {
            assert!(seen.contains(m), "no recipe for {m}");
        }
    }

    /// Issue 19: docs/recipes.md names every key the parser accepts (it had left out six).
    #[test]
    fn docs_recipes_md_names_every_key() {
        let doc = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/recipes.md"),
        )
        .unwrap();
        // The default recipe with every optional key set; its leaf keys, plus every method key.
        let mut r = Recipe::default_recipe(&[]).unwrap();
        r.data.root = Some("x".into());
        r.data.subset = Some(1);
        r.data.image_size = Some(1);
        r.data.mean = Some(vec![0.5]);
        r.data.std = Some(vec![0.5]);
        r.encoder.stem = Some(Stem::Cifar);
        r.irc = Some(toml::from_str("").unwrap());
        fn leaves(v: &toml::Value, out: &mut Vec<String>) {
            if let toml::Value::Table(t) = v {
                for (k, v) in t {
                    if v.is_table() {
                        leaves(v, out);
                    } else {
                        out.push(k.clone());
                    }
                }
            }
        }
        let mut keys = Vec::new();
        leaves(
            &toml::Value::Table(toml::from_str(&r.to_toml()).unwrap()),
            &mut keys,
        );
        for m in [
            MethodName::Simclr,
            MethodName::Mocov2,
            MethodName::Byol,
            MethodName::Simsiam,
            MethodName::Ressl,
            MethodName::Reco,
            MethodName::Interclr,
        ] {
            keys.extend(m.keys().iter().map(|k| k.to_string()));
        }
        let missing: Vec<&String> = keys
            .iter()
            .filter(|k| !doc.contains(&format!("`{k}`")))
            .collect();
        assert!(missing.is_empty(), "docs/recipes.md lacks {missing:?}");
        assert!(keys.len() > 60, "{keys:?}");
    }

    #[test]
    fn method_keys_are_checked_against_the_method() {
        let e = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            Recipe::default_recipe(&sets).unwrap_err().to_string()
        };
        assert_eq!(
            e(&["method.queue=4096"]),
            "<embedded>/recipes/default.toml: method.queue: simclr does not use it (it reads: temperature)"
        );
        let moco = ["method.name=mocov2", "train.batch_size=128"];
        assert!(e(&[&moco[..], &["method.queue=1000"]].concat()).contains(
            "method.queue: must be a positive multiple of the 128 keys enqueued per step"
        ));
        assert!(
            e(&[&moco[..], &["method.queue=128", "method.symmetric=true"]].concat())
                .contains("multiple of the 256 keys")
        );
        assert!(e(&[&moco[..], &["method.momentum=1.5"]].concat())
            .contains("method.momentum: must be in [0, 1], got 1.5"));
        assert!(e(&["method.name=reco"]).contains(
            "method.views: reco needs 3 views (query (strong), key (strong), weak key), got 2"
        ));
        assert!(e(&["method.name=dino"]).contains("unknown variant `dino`"));
        assert!(e(&["encoder.bn_splits=3"]).contains("encoder.bn_splits: must divide"));
        assert!(e(&["method.name=byol", "method.temperature=0.1"])
            .contains("method.temperature: byol does not use it"));
        let ok = Recipe::default_recipe(&[
            "method.name=mocov2".into(),
            "method.queue=512".into(),
            "method.symmetric=true".into(),
        ])
        .unwrap();
        assert_eq!(ok.method.queue, Some(512));
    }
}
