//! BYOL (Grill et al., NeurIPS 2020): the online network's prediction of one view regresses the
//! momentum target's projection of the other; no negatives. `L = L(p1, z2') + L(p2, z1')` with
//! [`byol_loss`] (solo-learn's sum of both directions), target momentum on BYOL's cosine schedule
//! (`momentum` → `momentum_final`, 0.99 → 1.0 in solo-learn's CIFAR recipe). Each view is its own
//! forward pass (BatchNorm statistics per view, as solo-learn); the target runs without
//! Shuffle-BN, as the reference.

use super::{Method, Online, StepContext, StepOutput};
use crate::recipe::Recipe;
use crate::teacher::MomentumEncoder;
use gyre_data::Batch;
use gyre_encoders::{ParamStore, ProjectionHead, ResNet};
use gyre_kernels::{Device, Result, Tensor};
use gyre_losses::byol_loss;
use std::collections::HashMap;

pub struct Byol {
    backbone: ResNet,
    projector: ProjectionHead,
    predictor: ProjectionHead,
    teacher: MomentumEncoder,
    params: ParamStore,
}

impl Byol {
    pub fn new(recipe: &Recipe, in_channels: usize, device: &Device) -> anyhow::Result<Self> {
        let mut o = Online::new(recipe, in_channels, device)?;
        let hidden = recipe.method.predictor_hidden.unwrap_or(o.head_cfg.hidden);
        let predictor = o.predictor(hidden, recipe.seed, device)?;
        let teacher = o.teacher(recipe, Some(1.0), false, device)?;
        Ok(Self {
            backbone: o.backbone,
            projector: o.head,
            predictor,
            teacher,
            params: o.params,
        })
    }

    fn predict(&self, x: &Tensor) -> Result<Tensor> {
        let z = self
            .projector
            .forward_t(&self.backbone.forward_t(x, true)?, true)?;
        self.predictor.forward_t(&z, true)
    }
}

impl Method for Byol {
    fn name(&self) -> &'static str {
        "byol"
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn backbone(&self) -> &ResNet {
        &self.backbone
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self.teacher.state())
    }

    fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        self.teacher.load_state(t)
    }

    fn step(&mut self, views: &[Tensor], _batch: &Batch, ctx: StepContext) -> Result<StepOutput> {
        self.teacher.update(ctx)?;
        let t1 = self.teacher.encode(&views[0], ctx, 0)?.embeddings;
        let t2 = self.teacher.encode(&views[1], ctx, 1)?.embeddings;
        let p1 = self.predict(&views[0])?;
        let p2 = self.predict(&views[1])?;
        let loss = (byol_loss(&p1, &t2)? + byol_loss(&p2, &t1)?)?;
        Ok(StepOutput {
            loss,
            logs: vec![("momentum", self.teacher.last_momentum)],
        })
    }
}
