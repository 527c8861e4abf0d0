//! Methods: an encoder, a head, a loss and the views they need, composed on shared machinery.
//! The trainer drives any `Method` the same way: views in, a scalar loss with autograd out.

pub mod simclr;

use crate::recipe::Recipe;
use gyre_data::Batch;
use gyre_encoders::{ParamStore, ResNet};
use gyre_kernels::{Device, Result, Tensor};

pub use simclr::SimClr;

/// What one step of a method produced.
pub struct StepOutput {
    /// The scalar to minimise.
    pub loss: Tensor,
    /// Extra scalars for the step log (loss terms, plug-in diagnostics).
    pub logs: Vec<(&'static str, f64)>,
}

/// Where in training a step is (schedules inside methods: ramps, momentum).
#[derive(Debug, Clone, Copy)]
pub struct StepContext {
    /// Steps done before this one.
    pub step: u64,
    /// Steps in the whole run.
    pub total_steps: u64,
}

/// A self-supervised method.
pub trait Method {
    fn name(&self) -> &'static str;
    /// Every tensor of the method (backbone under `backbone.`, heads under their names).
    fn params(&self) -> &ParamStore;
    /// The encoder whose features are evaluated and exported.
    fn backbone(&self) -> &ResNet;
    /// The loss of one batch; `views[v]` is `[B, C, H, W]` on the training device.
    fn step(&mut self, views: &[Tensor], batch: &Batch, ctx: StepContext) -> Result<StepOutput>;
    /// Diagnostics accumulated since the last call, logged with each evaluation (IRC: cycle
    /// accuracy and auto-pair precision); `None` when the method has none.
    fn take_eval_stats(&mut self) -> Option<serde_json::Value> {
        None
    }
}

/// Builds the method a recipe names.
pub fn build(
    recipe: &Recipe,
    in_channels: usize,
    device: &Device,
) -> anyhow::Result<Box<dyn Method>> {
    match recipe.method.name.as_str() {
        "simclr" => Ok(Box::new(SimClr::new(recipe, in_channels, device)?)),
        other => anyhow::bail!("unknown method '{other}'"),
    }
}

/// The recipe's backbone, built with the recipe's seed.
pub fn build_backbone(
    recipe: &Recipe,
    in_channels: usize,
    device: &Device,
) -> anyhow::Result<ResNet> {
    let mut cfg = gyre_encoders::ResNetConfig::preset(&recipe.encoder.arch, in_channels)?;
    if let Some(stem) = recipe.encoder.stem {
        cfg = cfg.with_stem(stem);
    }
    Ok(ResNet::new(cfg, recipe.seed, device)?)
}
