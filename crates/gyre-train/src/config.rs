//! The plain sections of a recipe — data, encoder, head, optimiser, training, evaluation — with
//! their serde defaults. Methods and the IRC plug-in own their sections (`[method]` keys in each
//! method's file, `[irc]` in `irc.rs`); [`crate::recipe`] composes and validates the whole.

use crate::optim::OptimKind;
use crate::schedule::Decay;
use gyre_encoders::{Backbone, Stem};
use gyre_kernels::Device;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
    /// Moving-object clips rendered from real images (`[data.scenes]`, [`gyre_data::scenes`]):
    /// the training clips' frames, clip by clip, unlabelled (their masks and flow are for the
    /// dense evaluations only; the kNN monitor is off).
    Scenes,
    /// The frames of real videos (`[data.video]`; `cargo xtask data opencv-video`), as clips of
    /// frames a few apart, unlabelled (no kNN monitor).
    Video,
}

impl DataKind {
    /// Image channels, when the kind fixes them.
    pub fn channels(self) -> Option<usize> {
        match self {
            DataKind::FashionMnistEmbedded | DataKind::FashionMnist => Some(1),
            DataKind::Cifar10
            | DataKind::Cifar100
            | DataKind::Cifar10Jpeg
            | DataKind::Scenes
            | DataKind::Video => Some(3),
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
    /// `kind = "scenes"`: where the clips' objects and backgrounds come from, how many, and how
    /// they are drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenes: Option<ScenesConfig>,
    /// `kind = "video"`: which videos, at what size, cut into which clips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoConfig>,
    /// Clip data (`scenes`, `video`) for an image-level method: pair each frame with the frame
    /// this many later in its clip (earlier at the clip's end), which view 1 then shows — the
    /// image-level positive, with no known pixel correspondence (`gyre_data::Sampling::FramePairs`).
    /// Unset: both views show the frame itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair_gap: Option<usize>,
}

/// `[data.video]`: the clips of `kind = "video"` (frame folders under `data.root`, default
/// `data/opencv-video`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
    /// Frame folders under the root, by name (`vtest`, `megamind`, `tree`).
    pub videos: Vec<String>,
    /// Frames are resized (shorter side) and centre-cropped to this square.
    pub size: usize,
    /// Frames per clip.
    pub clip_frames: usize,
    /// Video frames between consecutive frames of a clip (the image-level pairs are frames this
    /// far apart).
    pub frame_gap: usize,
    /// Video frames between the starts of consecutive clips.
    pub clip_stride: usize,
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            videos: gyre_data::video::VIDEOS
                .iter()
                .map(|v| v.name.to_string())
                .collect(),
            size: 64,
            clip_frames: 8,
            frame_gap: 2,
            clip_stride: 8,
        }
    }
}

/// `[data.scenes]`: the training clips of `kind = "scenes"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenesConfig {
    /// `embedded`: the embedded Fashion-MNIST split (garments 0–3999, grey tiles and backgrounds
    /// 4000–7999; held-out clips use 8000–9999); `real`: Fashion-MNIST's training split as
    /// garments, cifar10-jpeg's training split (`data.root`, else searched) as tiles and
    /// backgrounds (held-out clips use the test splits).
    #[serde(default)]
    pub sources: ScenesSources,
    /// Training clips (frames in all: `clips × clip.frames`).
    #[serde(default = "d_clips")]
    pub clips: usize,
    /// The seed the clips are drawn with (not the run's seed: every seed of a row trains on the
    /// same clips).
    #[serde(default)]
    pub seed: u64,
    /// How each clip is drawn: frame size, frames, objects, motion ([`gyre_data::scenes::SceneConfig`]).
    #[serde(default)]
    pub clip: gyre_data::scenes::SceneConfig,
}

impl Default for ScenesConfig {
    fn default() -> Self {
        Self {
            sources: ScenesSources::default(),
            clips: d_clips(),
            seed: 0,
            clip: Default::default(),
        }
    }
}

/// `data.scenes.sources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenesSources {
    #[default]
    Embedded,
    Real,
}

fn d_clips() -> usize {
    1000
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
    /// `resnet-mini`, `resnet18`, `resnet34`, `resnet50`, or a ViT: `vit-tiny-16`,
    /// `vit-small-16`, `vit-tiny-4`, `vit-small-4` (patch 4, for 28–32 px images), `vit-micro-4`
    /// (64 wide, 4 blocks: CI-sized runs).
    pub arch: String,
    /// SplitBatchNorm sub-batches in the backbone (MoCo's CIFAR demo uses 8); 1 = plain BN.
    #[serde(default = "d_one")]
    pub bn_splits: usize,
    /// Overrides the preset's stem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stem: Option<Stem>,
    /// Dense encoders: input pixels per feature cell (8 for the dense methods); the stages
    /// after the one that reaches it keep stride 1 (CRW's recipe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_stride: Option<usize>,
    /// Keep only the first N stages (CRW drops ResNet-18's layer4: `stages = 3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<usize>,
    /// A ViT: the side of the images its position embeddings are laid out for (the global
    /// crops'; other sizes, e.g. local crops, resample them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
    /// A ViT: the stochastic-depth rate of its last block (0 when absent), drawn in training
    /// from the step key the trainer arms (`ViT::arm_drop_path`), so that a resumed run drops
    /// the same branches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_path_rate: Option<f64>,
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
    /// Between the layers: `"relu"`, or `"gelu"` (DINO's head).
    #[serde(default)]
    pub activation: gyre_encoders::Activation,
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
            activation: self.activation,
        }
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
    /// The weight decay at the end of training, reached on a cosine from `weight_decay` (DINO's
    /// 0.04 → 0.4); none: constant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay_final: Option<f64>,
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

impl OptimConfig {
    /// The weight decay at `step` of `total`: `weight_decay`, or its cosine to
    /// `weight_decay_final`.
    pub fn weight_decay_at(&self, step: u64, total: u64) -> f64 {
        match self.weight_decay_final {
            None => self.weight_decay,
            Some(end) => {
                let t = step as f64 / total.max(1) as f64;
                end - (end - self.weight_decay) * ((std::f64::consts::PI * t).cos() + 1.0) / 2.0
            }
        }
    }

    /// The optimiser's settings (the learning rate comes from the schedule).
    pub fn settings(&self) -> crate::optim::OptimSettings {
        crate::optim::OptimSettings {
            kind: self.name,
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            exclude_bn_bias: self.exclude_bn_bias,
            betas: (self.betas[0], self.betas[1]),
            eps: self.eps,
            eta: self.eta,
            clip_lr: self.clip_lr,
        }
    }
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

impl Default for EvalConfig {
    fn default() -> Self {
        d_eval()
    }
}

pub(crate) fn d_eval() -> EvalConfig {
    EvalConfig {
        knn_every: 1,
        knn_k: d_k(),
        knn_t: d_t(),
        baselines: true,
    }
}

impl EncoderConfig {
    /// The backbone this section describes, for images of `in_channels` channels, with initial
    /// weights keyed on `seed`.
    pub fn build(
        &self,
        in_channels: usize,
        seed: u64,
        device: &Device,
    ) -> anyhow::Result<Backbone> {
        Ok(Backbone::new(
            &self.backbone_config(in_channels)?,
            seed,
            device,
        )?)
    }

    /// Whether `arch` names a Vision Transformer.
    pub fn is_vit(&self) -> bool {
        self.arch.starts_with("vit-")
    }

    /// The architecture this section describes: a ResNet ([`Self::resnet_config`]) or a ViT.
    pub fn backbone_config(
        &self,
        in_channels: usize,
    ) -> Result<gyre_encoders::BackboneConfig, gyre_encoders::EncoderError> {
        use gyre_encoders::{BackboneConfig, EncoderError};
        if !self.is_vit() {
            return Ok(BackboneConfig::ResNet(self.resnet_config(in_channels)?));
        }
        let size = self.image_size.ok_or_else(|| {
            EncoderError::Config(
                "a ViT lays its position embeddings out for one input size: set encoder.image_size (the global crops' size)".into(),
            )
        })?;
        let mut cfg = gyre_encoders::VitConfig::preset(&self.arch, size, in_channels)?;
        if let Some(r) = self.drop_path_rate {
            cfg.drop_path_rate = r;
            cfg.check()?;
        }
        Ok(BackboneConfig::ViT(cfg))
    }

    /// The architecture this section describes (the recipe check and [`Self::build`] use it).
    pub fn resnet_config(
        &self,
        in_channels: usize,
    ) -> Result<gyre_encoders::ResNetConfig, gyre_encoders::EncoderError> {
        let mut cfg = gyre_encoders::ResNetConfig::preset(&self.arch, in_channels)?
            .with_bn_splits(self.bn_splits);
        if let Some(stem) = self.stem {
            cfg = cfg.with_stem(stem);
        }
        if let Some(n) = self.stages {
            cfg = cfg.with_stages(n)?;
        }
        if let Some(os) = self.output_stride {
            cfg = cfg.dense(os)?;
        }
        Ok(cfg)
    }
}
