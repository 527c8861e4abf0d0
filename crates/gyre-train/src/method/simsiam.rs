//! SimSiam (Chen & He, CVPR 2021): one encoder, a predictor on one branch and a stop-gradient on
//! the other; no negatives, no momentum encoder. `L = ½ D(p1, z2) + ½ D(p2, z1)` with
//! [`simsiam_loss`]. The reference projector is three layers ending in a BatchNorm without affine
//! parameters (`[head] layers = 3, output_bn = true`); the predictor is a bottleneck
//! `Linear – BN – ReLU – Linear` of width `predictor_hidden`. Each view is its own forward pass.
//!
//! With `[irc]`: the walk runs view-1 features → the plug-in's memory → view-2 features; the
//! memory's base entries are the view-2 projections `z2` (detached, as SimSiam's targets), and an
//! auto-paired positive is one more target `D(p1, z_matched)`.

use super::{Method, Online, StepContext, StepOutput};
use crate::irc::IrcPlugin;
use crate::recipe::Recipe;
use gyre_data::Batch;
use gyre_encoders::{ParamStore, ProjectionHead, ResNet};
use gyre_kernels::{Device, Result, Tensor};
use gyre_losses::simsiam_loss;
use std::collections::HashMap;

pub struct SimSiam {
    backbone: ResNet,
    projector: ProjectionHead,
    predictor: ProjectionHead,
    irc: Option<IrcPlugin>,
    params: ParamStore,
}

impl SimSiam {
    pub fn new(recipe: &Recipe, in_channels: usize, device: &Device) -> anyhow::Result<Self> {
        let mut o = Online::new(recipe, in_channels, device)?;
        let hidden = recipe
            .method
            .predictor_hidden
            .unwrap_or((o.head_cfg.output / 4).max(1));
        let predictor = o.predictor(hidden, recipe.seed, device)?;
        let irc = o.irc(recipe, device)?;
        Ok(Self {
            backbone: o.backbone,
            projector: o.head,
            predictor,
            irc,
            params: o.params,
        })
    }
}

impl Method for SimSiam {
    fn name(&self) -> &'static str {
        "simsiam"
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn backbone(&self) -> &ResNet {
        &self.backbone
    }

    fn step(&mut self, views: &[Tensor], batch: &Batch, ctx: StepContext) -> Result<StepOutput> {
        let f1 = self.backbone.forward_t(&views[0], true)?;
        let f2 = self.backbone.forward_t(&views[1], true)?;
        let z1 = self.projector.forward_t(&f1, true)?;
        let z2 = self.projector.forward_t(&f2, true)?;
        let p1 = self.predictor.forward_t(&z1, true)?;
        let p2 = self.predictor.forward_t(&z2, true)?;
        let mut loss = ((simsiam_loss(&p1, &z2)? + simsiam_loss(&p2, &z1)?)? * 0.5)?;
        let mut logs = vec![];
        if let Some(irc) = self.irc.as_mut() {
            let f = Tensor::cat(&[&f1, &f2], 0)?;
            loss = irc.add_to(loss, &f, &z2, batch, ctx, &mut logs, |p| {
                simsiam_loss(&p.queries(&p1)?, &p.positives)
            })?;
        }
        Ok(StepOutput {
            loss,
            logs,
            // The predictor's output, not z1: the projector ends in a BatchNorm without affine,
            // so the batch spread of n(z1) stays at 1/√D whatever the network does.
            embeddings: p1,
        })
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        match &self.irc {
            Some(irc) => irc.state(),
            None => Ok(vec![]),
        }
    }

    fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        match self.irc.as_mut() {
            Some(irc) => irc.load_state(t),
            None => Ok(()),
        }
    }

    fn take_eval_stats(&mut self) -> Option<serde_json::Value> {
        self.irc.as_mut().map(|i| i.take_stats())
    }
}
