//! SimCLR (Chen et al., ICML 2020): both views through one encoder and projection head in a
//! single forward (BatchNorm statistics over both views, as the reference), NT-Xent between them.
//!
//! As the IRC pair: both views' online features; the memory keeps view-2 embeddings, and an
//! auto-paired positive ([`nt_xent_extra_positives`]) is one more positive of the view-1 row
//! against the usual NT-Xent negatives (the batch minus the row and its own partner).

use super::{check, BuildContext, Method, MethodEnv, MethodSettings, Online, SettingsError};
use crate::step::{PairHooks, StepContext, StepOutput};
use gyre_data::Batch;
use gyre_encoders::{Backbone, ParamStore, ProjectionHead};
use gyre_kernels::{Result, Tensor};
use gyre_losses::{nt_xent, nt_xent_extra_positives};
use serde::{Deserialize, Serialize};

/// `[method] name = "simclr"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimClrSettings {
    /// NT-Xent τ.
    pub temperature: f64,
}

impl Default for SimClrSettings {
    fn default() -> Self {
        Self { temperature: 0.2 }
    }
}

impl MethodSettings for SimClrSettings {
    const NAME: &'static str = "simclr";

    fn check(&self, _env: &MethodEnv) -> std::result::Result<(), SettingsError> {
        check::positive("temperature", self.temperature)
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Method>> {
        let o = Online::new(ctx)?;
        Ok(Box::new(SimClr {
            backbone: o.backbone,
            head: o.head,
            tau: self.temperature,
            params: o.params,
        }))
    }
}

pub struct SimClr {
    backbone: Backbone,
    head: ProjectionHead,
    tau: f64,
    params: ParamStore,
}

impl Method for SimClr {
    fn name(&self) -> &'static str {
        SimClrSettings::NAME
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    fn step(&mut self, views: &[Tensor], _batch: &Batch, _ctx: StepContext) -> Result<StepOutput> {
        let b = views[0].dim(0)?;
        let x = Tensor::cat(&[&views[0], &views[1]], 0)?;
        let f = self.backbone.forward_t(&x, true)?;
        let z = self.head.forward_t(&f, true)?;
        let (za, zb) = (z.narrow(0, 0, b)?, z.narrow(0, b, b)?);
        let loss = nt_xent(&za, &zb, self.tau)?;
        let (qa, qb, tau) = (za.clone(), zb.clone(), self.tau);
        Ok(StepOutput {
            loss,
            logs: Vec::new(),
            embeddings: za,
            pair: Some(PairHooks {
                view1: f.narrow(0, 0, b)?,
                view2: f.narrow(0, b, b)?,
                view2_index: 1,
                base_v2: zb,
                keep_base_scale: false,
                pair_loss: Box::new(move |p| {
                    nt_xent_extra_positives(&qa, &qb, &p.rows, &p.positives, tau)
                }),
                dense: None,
            }),
        })
    }
}
