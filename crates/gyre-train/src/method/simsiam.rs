//! SimSiam (Chen & He, CVPR 2021): one encoder, a predictor on one branch and a stop-gradient on
//! the other; no negatives, no momentum encoder. `L = ½ D(p1, z2) + ½ D(p2, z1)` with
//! [`simsiam_loss`]. The reference projector is three layers ending in a BatchNorm without affine
//! parameters (`[head] layers = 3, output_bn = true`); the predictor is a bottleneck
//! `Linear – BN – ReLU – Linear` of width `predictor_hidden`. Each view is its own forward pass.

use super::{Method, Online, StepContext, StepOutput};
use crate::recipe::Recipe;
use gyre_data::Batch;
use gyre_encoders::{ParamStore, ProjectionHead, ResNet};
use gyre_kernels::{Device, Result, Tensor};
use gyre_losses::simsiam_loss;

pub struct SimSiam {
    backbone: ResNet,
    projector: ProjectionHead,
    predictor: ProjectionHead,
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
        Ok(Self {
            backbone: o.backbone,
            projector: o.head,
            predictor,
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

    fn step(&mut self, views: &[Tensor], _batch: &Batch, _ctx: StepContext) -> Result<StepOutput> {
        let z1 = self
            .projector
            .forward_t(&self.backbone.forward_t(&views[0], true)?, true)?;
        let z2 = self
            .projector
            .forward_t(&self.backbone.forward_t(&views[1], true)?, true)?;
        let p1 = self.predictor.forward_t(&z1, true)?;
        let p2 = self.predictor.forward_t(&z2, true)?;
        let loss = ((simsiam_loss(&p1, &z2)? + simsiam_loss(&p2, &z1)?)? * 0.5)?;
        Ok(StepOutput { loss, logs: vec![] })
    }
}
