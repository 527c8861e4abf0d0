//! SimSiam (Chen & He, CVPR 2021): one encoder, a predictor on one branch and a stop-gradient on
//! the other; no negatives, no momentum encoder. `L = ½ D(p1, z2) + ½ D(p2, z1)` with
//! [`simsiam_loss`]. The reference projector is three layers ending in a BatchNorm without affine
//! parameters (`[head] layers = 3, output_bn = true`); the predictor is a bottleneck
//! `Linear – BN – ReLU – Linear` of width `predictor_hidden`. Each view is its own forward pass.
//!
//! As the IRC pair: both views' features; the memory keeps the view-2 projections `z2` (detached,
//! as SimSiam's targets), and an auto-paired positive is one more target `D(p1, z_matched)`.

use super::{check, BuildContext, Method, MethodEnv, MethodSettings, Online, SettingsError};
use crate::step::{PairHooks, StepContext, StepOutput};
use gyre_data::Batch;
use gyre_encoders::{Backbone, ParamStore, ProjectionHead};
use gyre_kernels::{Result, Tensor};
use gyre_losses::simsiam_loss;
use serde::{Deserialize, Serialize};

/// `[method] name = "simsiam"`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimSiamSettings {
    /// Bottleneck width of the predictor; default `head.output / 4`.
    pub predictor_hidden: Option<usize>,
}

impl MethodSettings for SimSiamSettings {
    const NAME: &'static str = "simsiam";

    fn resolve(&mut self, env: &MethodEnv) {
        self.predictor_hidden
            .get_or_insert((env.head.output / 4).max(1));
    }

    fn check(&self, _env: &MethodEnv) -> std::result::Result<(), SettingsError> {
        check::width("predictor_hidden", self.predictor_hidden.unwrap_or(1))
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Method>> {
        let mut online = Online::new(ctx)?;
        let hidden = self
            .predictor_hidden
            .unwrap_or((online.head_cfg.output / 4).max(1));
        let predictor = online.predictor(hidden, ctx)?;
        Ok(Box::new(SimSiam { online, predictor }))
    }
}

pub struct SimSiam {
    /// The backbone and projector (the predictor's parameters are in its store too).
    online: Online,
    predictor: ProjectionHead,
}

impl Method for SimSiam {
    fn name(&self) -> &'static str {
        SimSiamSettings::NAME
    }

    fn params(&self) -> &ParamStore {
        &self.online.params
    }

    fn backbone(&self) -> &Backbone {
        &self.online.backbone
    }

    fn step(&mut self, views: &[Tensor], _batch: &Batch, _ctx: StepContext) -> Result<StepOutput> {
        let ([f1, f2], [z1, z2]) = self.online.each_view(views)?;
        let p1 = self.predictor.forward_t(&z1, true)?;
        let p2 = self.predictor.forward_t(&z2, true)?;
        let loss = ((simsiam_loss(&p1, &z2)? + simsiam_loss(&p2, &z1)?)? * 0.5)?;
        let q = p1.clone();
        Ok(StepOutput {
            loss,
            logs: Vec::new(),
            // The predictor's output, not z1: the projector ends in a BatchNorm without affine,
            // so the batch spread of n(z1) stays at 1/√D whatever the network does.
            embeddings: p1,
            pair: Some(PairHooks {
                view1: f1,
                view2: f2,
                view2_index: 1,
                base_v2: z2,
                keep_base_scale: false,
                pair_loss: Box::new(move |p| simsiam_loss(&p.queries(&q)?, &p.positives)),
                dense: None,
            }),
        })
    }
}
