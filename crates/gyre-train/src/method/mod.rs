//! Methods: an encoder, a head, a loss and the views they need, composed on shared machinery
//! (EMA teachers in [`crate::teacher`], queues and banks in [`crate::bank`], the IRC plug-in in
//! [`crate::irc`]). The trainer drives any `Method` the same way.
//!
//! The update order of one step (`methods.md` §9.9), the same for every method:
//! 1. EMA update of the teacher — first thing in [`Method::step`];
//! 2. teacher (key) forward passes, Shuffle-BN — in `step`;
//! 3. losses — `step` returns them; queues are read here, before this batch is added;
//! 4. backward and optimiser step — the trainer;
//! 5. enqueue keys, write banks, relabel — [`Method::after_step`];
//! 6. periodic refreshes (InterCLR's centroids) — `after_step`.

pub mod byol;
pub mod interclr;
pub mod moco;
pub mod reco;
pub mod ressl;
pub mod simclr;
pub mod simsiam;

use crate::ema::MomentumSchedule;
use crate::irc::IrcPlugin;
use crate::recipe::{MethodName, Recipe};
use crate::teacher::MomentumEncoder;
use gyre_data::Batch;
use gyre_encoders::{ParamStore, ProjectionHead, ProjectionHeadConfig, ResNet};
use gyre_kernels::{Device, Result, Tensor};
use std::collections::HashMap;

pub use byol::Byol;
pub use interclr::InterClr;
pub use moco::MocoV2;
pub use reco::Reco;
pub use ressl::Ressl;
pub use simclr::SimClr;
pub use simsiam::SimSiam;

/// What one step of a method produced.
pub struct StepOutput {
    /// The scalar to minimise.
    pub loss: Tensor,
    /// Extra scalars for the step log (loss terms, plug-in diagnostics).
    pub logs: Vec<(&'static str, f64)>,
    /// The online embeddings `[B, D]` of one view, whose spread the trainer logs on each step line
    /// as `embed_std` ([`crate::metrics::embedding_std`]).
    pub embeddings: Tensor,
}

/// Where in training a step is (schedules inside methods: ramps, momentum, warm-ups).
#[derive(Debug, Clone, Copy)]
pub struct StepContext {
    /// Steps done before this one.
    pub step: u64,
    /// Steps in the whole run.
    pub total_steps: u64,
    /// Steps per epoch.
    pub steps_per_epoch: u64,
}

impl StepContext {
    /// Epochs done before this step, fractional.
    pub fn epoch_progress(&self) -> f64 {
        self.step as f64 / self.steps_per_epoch.max(1) as f64
    }
}

/// A self-supervised method.
pub trait Method {
    fn name(&self) -> &'static str;
    /// The trained tensors of the method (backbone under `backbone.`, heads under their names);
    /// teachers and queues are not in it.
    fn params(&self) -> &ParamStore;
    /// The encoder whose features are evaluated and exported.
    fn backbone(&self) -> &ResNet;
    /// Steps 1–3: the loss of one batch; `views[v]` is `[B, C, H, W]` on the training device.
    fn step(&mut self, views: &[Tensor], batch: &Batch, ctx: StepContext) -> Result<StepOutput>;
    /// Steps 5–6, after the optimiser step: queue and bank writes, periodic refreshes.
    fn after_step(&mut self, _ctx: StepContext) -> Result<()> {
        Ok(())
    }
    /// Everything else a resumed run needs, as named tensors: teachers, queues, banks, plug-in
    /// memories (the trained parameters are in [`Self::params`]).
    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }
    /// Restores what [`Self::state`] wrote.
    fn load_state(&mut self, _t: &HashMap<String, Tensor>) -> Result<()> {
        Ok(())
    }
    /// Diagnostics accumulated since the last call, logged with each evaluation (IRC: cycle
    /// accuracy and auto-pair precision); `None` when the method has none.
    fn take_eval_stats(&mut self) -> Option<serde_json::Value> {
        None
    }
}

/// Builds the method a recipe names, for images of `in_channels` channels and a pretraining set
/// of `dataset_len` images (InterCLR's memory bank has a row per image).
pub fn build(
    recipe: &Recipe,
    in_channels: usize,
    dataset_len: usize,
    device: &Device,
) -> anyhow::Result<Box<dyn Method>> {
    Ok(match recipe.method.kind() {
        MethodName::Simclr => Box::new(SimClr::new(recipe, in_channels, device)?),
        MethodName::Mocov2 => Box::new(MocoV2::new(recipe, in_channels, device)?),
        MethodName::Byol => Box::new(Byol::new(recipe, in_channels, device)?),
        MethodName::Simsiam => Box::new(SimSiam::new(recipe, in_channels, device)?),
        MethodName::Ressl => Box::new(Ressl::new(recipe, in_channels, device)?),
        MethodName::Reco => Box::new(Reco::new(recipe, in_channels, device)?),
        MethodName::Interclr => Box::new(InterClr::new(recipe, in_channels, dataset_len, device)?),
    })
}

/// The online side every method starts from: the recipe's backbone and projector (`[head]`),
/// registered in a fresh store under `backbone.` and `projector.`; heads added later go into the
/// same store.
pub(crate) struct Online {
    pub backbone: ResNet,
    pub head: ProjectionHead,
    pub head_cfg: ProjectionHeadConfig,
    pub params: ParamStore,
}

impl Online {
    pub fn new(recipe: &Recipe, in_channels: usize, device: &Device) -> anyhow::Result<Self> {
        let backbone = build_backbone(recipe, in_channels, device)?;
        let head_cfg = recipe.head.projector(backbone.feature_dim());
        let head = ProjectionHead::new(head_cfg, recipe.seed, "projector", device)?;
        let mut params = ParamStore::new();
        params.extend_prefixed("backbone", backbone.params());
        params.extend_prefixed("projector", head.params());
        Ok(Self {
            backbone,
            head,
            head_cfg,
            params,
        })
    }

    /// The EMA teacher of this backbone and projector: momentum `method.momentum` (default
    /// 0.99), cosine to `method.momentum_final` when set (default `final_default`), with
    /// Shuffle-BN when `shuffle`.
    pub fn teacher(
        &self,
        recipe: &Recipe,
        final_default: Option<f64>,
        shuffle: bool,
        device: &Device,
    ) -> anyhow::Result<MomentumEncoder> {
        let m = &recipe.method;
        let schedule = MomentumSchedule::new(
            m.momentum.unwrap_or(0.99),
            m.momentum_final.or(final_default),
        );
        MomentumEncoder::new(
            &self.backbone,
            &self.head,
            self.head_cfg,
            schedule,
            recipe.seed,
            shuffle,
            device,
        )
    }

    /// The IRC plug-in when the recipe has `[irc]` (its head joins the store).
    pub fn irc(&mut self, recipe: &Recipe, device: &Device) -> Result<Option<IrcPlugin>> {
        recipe
            .irc
            .as_ref()
            .map(|cfg| {
                IrcPlugin::new(
                    cfg,
                    self.backbone.feature_dim(),
                    self.head_cfg.output,
                    recipe.seed,
                    device,
                    &mut self.params,
                )
            })
            .transpose()
    }

    /// A predictor `output → hidden → output` (BN on the hidden layer) under `predictor.`.
    pub fn predictor(
        &mut self,
        hidden: usize,
        seed: u64,
        device: &Device,
    ) -> Result<ProjectionHead> {
        let out = self.head_cfg.output;
        let p = ProjectionHead::new(
            ProjectionHeadConfig::new(out, hidden, out),
            seed,
            "predictor",
            device,
        )?;
        self.params.extend_prefixed("predictor", p.params());
        Ok(p)
    }
}

/// The recipe's backbone, built with the recipe's seed.
pub fn build_backbone(
    recipe: &Recipe,
    in_channels: usize,
    device: &Device,
) -> anyhow::Result<ResNet> {
    let mut cfg = gyre_encoders::ResNetConfig::preset(&recipe.encoder.arch, in_channels)?
        .with_bn_splits(recipe.encoder.bn_splits);
    if let Some(stem) = recipe.encoder.stem {
        cfg = cfg.with_stem(stem);
    }
    Ok(ResNet::new(cfg, recipe.seed, device)?)
}
