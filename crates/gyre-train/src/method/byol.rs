//! BYOL (Grill et al., NeurIPS 2020): the online network's prediction of one view regresses the
//! momentum target's projection of the other; no negatives. `L = L(p1, z2') + L(p2, z1')` with
//! [`byol_loss`] (solo-learn's sum of both directions), target momentum on BYOL's cosine schedule
//! (`momentum` → `momentum_final`, 0.99 → 1.0 in solo-learn's CIFAR recipe). Each view is its own
//! forward pass (BatchNorm statistics per view, as solo-learn); the target runs without
//! Shuffle-BN, as the reference.
//!
//! As the IRC pair: both views' online features; the memory keeps the target's view-2
//! projections, and an auto-paired positive is one more BYOL regression target for `p1`.

use super::{check, BuildContext, Method, MethodEnv, MethodSettings, Online, SettingsError};
use crate::step::{PairHooks, StepContext, StepOutput};
use crate::teacher::MomentumEncoder;
use gyre_data::Batch;
use gyre_encoders::{Backbone, ParamStore, ProjectionHead};
use gyre_kernels::{Result, Tensor};
use gyre_losses::byol_loss;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `[method] name = "byol"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ByolSettings {
    /// Target momentum at the start of training.
    pub momentum: f64,
    /// Target momentum at the end (cosine schedule); none: constant.
    pub momentum_final: Option<f64>,
    /// Hidden width of the predictor; default `head.hidden`.
    pub predictor_hidden: Option<usize>,
}

impl Default for ByolSettings {
    fn default() -> Self {
        Self {
            momentum: 0.99,
            momentum_final: Some(1.0),
            predictor_hidden: None,
        }
    }
}

impl MethodSettings for ByolSettings {
    const NAME: &'static str = "byol";

    fn resolve(&mut self, env: &MethodEnv) {
        self.predictor_hidden.get_or_insert(env.head.hidden);
    }

    fn check(&self, _env: &MethodEnv) -> std::result::Result<(), SettingsError> {
        check::momentum(self.momentum, self.momentum_final)?;
        check::width("predictor_hidden", self.predictor_hidden.unwrap_or(1))
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Method>> {
        let mut o = Online::new(ctx)?;
        let hidden = self.predictor_hidden.unwrap_or(o.head_cfg.hidden);
        let predictor = o.predictor(hidden, ctx)?;
        let teacher = o.teacher(self.momentum, self.momentum_final, false, ctx)?;
        Ok(Box::new(Byol {
            backbone: o.backbone,
            projector: o.head,
            predictor,
            teacher,
            params: o.params,
        }))
    }
}

pub struct Byol {
    backbone: Backbone,
    projector: ProjectionHead,
    predictor: ProjectionHead,
    teacher: MomentumEncoder,
    params: ParamStore,
}

impl Byol {
    /// Backbone features and the prediction of one view.
    fn predict(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let f = self.backbone.forward_t(x, true)?;
        let z = self.projector.forward_t(&f, true)?;
        Ok((f, self.predictor.forward_t(&z, true)?))
    }
}

impl Method for Byol {
    fn name(&self) -> &'static str {
        ByolSettings::NAME
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn backbone(&self) -> &Backbone {
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
        let (f1, p1) = self.predict(&views[0])?;
        let (f2, p2) = self.predict(&views[1])?;
        let loss = (byol_loss(&p1, &t2)? + byol_loss(&p2, &t1)?)?;
        let q = p1.clone();
        Ok(StepOutput {
            loss,
            logs: vec![("momentum", self.teacher.last_momentum)],
            embeddings: p1,
            pair: Some(PairHooks {
                view1: f1,
                view2: f2,
                view2_index: 1,
                base_v2: t2,
                keep_base_scale: false,
                pair_loss: Box::new(move |p| byol_loss(&p.queries(&q)?, &p.positives)),
                dense: None,
            }),
        })
    }
}
