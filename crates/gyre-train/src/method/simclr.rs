//! SimCLR (Chen et al., ICML 2020): both views through one encoder and projection head in a
//! single forward (BatchNorm statistics over both views, as the reference), NT-Xent between them.

use super::{build_backbone, Method, StepOutput};
use crate::recipe::Recipe;
use gyre_data::Batch;
use gyre_encoders::{ParamStore, ProjectionHead, ProjectionHeadConfig, ResNet};
use gyre_kernels::{Device, Result, Tensor};
use gyre_losses::nt_xent;

pub struct SimClr {
    backbone: ResNet,
    head: ProjectionHead,
    tau: f64,
    params: ParamStore,
}

impl SimClr {
    pub fn new(recipe: &Recipe, in_channels: usize, device: &Device) -> anyhow::Result<Self> {
        let backbone = build_backbone(recipe, in_channels, device)?;
        let hc = ProjectionHeadConfig {
            input: backbone.feature_dim(),
            hidden: recipe.head.hidden,
            output: recipe.head.output,
        };
        let head = ProjectionHead::new(hc, recipe.seed, "projector", device)?;
        let mut params = ParamStore::new();
        params.extend_prefixed("backbone", backbone.params());
        params.extend_prefixed("projector", head.params());
        Ok(Self {
            backbone,
            head,
            tau: recipe.method.temperature,
            params,
        })
    }
}

impl Method for SimClr {
    fn name(&self) -> &'static str {
        "simclr"
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn backbone(&self) -> &ResNet {
        &self.backbone
    }

    fn step(&mut self, views: &[Tensor], _batch: &Batch) -> Result<StepOutput> {
        let b = views[0].dim(0)?;
        let x = Tensor::cat(&[&views[0], &views[1]], 0)?;
        let z = self
            .head
            .forward_t(&self.backbone.forward_t(&x, true)?, true)?;
        let loss = nt_xent(&z.narrow(0, 0, b)?, &z.narrow(0, b, b)?, self.tau)?;
        Ok(StepOutput { loss })
    }
}
