//! BYOL (Grill et al., NeurIPS 2020): the online network's prediction of one view regresses the
//! momentum target's projection of the other; no negatives. `L = L(p1, z2') + L(p2, z1')` with
//! [`byol_loss`] (solo-learn's sum of both directions), target momentum on BYOL's cosine schedule
//! (`momentum` → `momentum_final`, 0.99 → 1.0 in solo-learn's CIFAR recipe). Each view is its own
//! forward pass (BatchNorm statistics per view, as solo-learn); the target runs without
//! Shuffle-BN, as the reference.
//!
//! With `[irc]`: the walk runs online view-1 features → the plug-in's memory → online view-2
//! features; the memory's base entries are the target's view-2 projections, and an auto-paired
//! positive is one more BYOL regression target for the query's prediction `p1`.

use super::{Method, Online, StepContext, StepOutput};
use crate::irc::IrcPlugin;
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
    irc: Option<IrcPlugin>,
    params: ParamStore,
}

impl Byol {
    pub fn new(recipe: &Recipe, in_channels: usize, device: &Device) -> anyhow::Result<Self> {
        let mut o = Online::new(recipe, in_channels, device)?;
        let hidden = recipe.method.predictor_hidden.unwrap_or(o.head_cfg.hidden);
        let predictor = o.predictor(hidden, recipe.seed, device)?;
        let teacher = o.teacher(recipe, Some(1.0), false, device)?;
        let irc = o.irc(recipe, device)?;
        Ok(Self {
            backbone: o.backbone,
            projector: o.head,
            predictor,
            teacher,
            irc,
            params: o.params,
        })
    }

    /// Backbone features and the prediction of one view.
    fn predict(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let f = self.backbone.forward_t(x, true)?;
        let z = self.projector.forward_t(&f, true)?;
        Ok((f, self.predictor.forward_t(&z, true)?))
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
        let mut v = self.teacher.state();
        if let Some(irc) = &self.irc {
            v.extend(irc.state()?);
        }
        Ok(v)
    }

    fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        self.teacher.load_state(t)?;
        match self.irc.as_mut() {
            Some(irc) => irc.load_state(t),
            None => Ok(()),
        }
    }

    fn take_eval_stats(&mut self) -> Option<serde_json::Value> {
        self.irc.as_mut().map(|i| i.take_stats())
    }

    fn step(&mut self, views: &[Tensor], batch: &Batch, ctx: StepContext) -> Result<StepOutput> {
        self.teacher.update(ctx)?;
        let t1 = self.teacher.encode(&views[0], ctx, 0)?.embeddings;
        let t2 = self.teacher.encode(&views[1], ctx, 1)?.embeddings;
        let (f1, p1) = self.predict(&views[0])?;
        let (f2, p2) = self.predict(&views[1])?;
        let mut loss = (byol_loss(&p1, &t2)? + byol_loss(&p2, &t1)?)?;
        let mut logs = vec![("momentum", self.teacher.last_momentum)];
        if let Some(irc) = self.irc.as_mut() {
            let f = Tensor::cat(&[&f1, &f2], 0)?;
            loss = irc.add_to(loss, &f, &t2, batch, ctx, &mut logs, |p| {
                byol_loss(&p.queries(&p1)?, &p.positives)
            })?;
        }
        Ok(StepOutput {
            loss,
            logs,
            embeddings: p1,
        })
    }
}
