//! SimCLR (Chen et al., ICML 2020): both views through one encoder and projection head in a
//! single forward (BatchNorm statistics over both views, as the reference), NT-Xent between them.
//!
//! With `[irc]`: plus `λ_c · L_cyc` of the IRC plug-in, and with auto-pairing, plus
//! `w(step) · auto_pair_weight · L_ap` where `L_ap` is [`nt_xent_extra_positives`]: each kept
//! view-1 embedding's matched memory entry (its base-head embedding, detached) is a positive
//! against the usual NT-Xent negatives (the batch minus the row and its own partner).

use super::{Method, Online, StepContext, StepOutput};
use crate::irc::IrcPlugin;
use crate::recipe::Recipe;
use gyre_data::Batch;
use gyre_encoders::{ParamStore, ProjectionHead, ResNet};
use gyre_kernels::{Device, Result, Tensor};
use gyre_losses::{nt_xent, nt_xent_extra_positives};
use std::collections::HashMap;

pub struct SimClr {
    backbone: ResNet,
    head: ProjectionHead,
    tau: f64,
    params: ParamStore,
    irc: Option<IrcPlugin>,
}

impl SimClr {
    pub fn new(recipe: &Recipe, in_channels: usize, device: &Device) -> anyhow::Result<Self> {
        let mut o = Online::new(recipe, in_channels, device)?;
        let irc = o.irc(recipe, device)?;
        Ok(Self {
            backbone: o.backbone,
            head: o.head,
            tau: recipe.method.temperature.unwrap_or(0.2),
            params: o.params,
            irc,
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

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        match &self.irc {
            Some(irc) => irc.state(),
            None => Ok(Vec::new()),
        }
    }

    fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        match self.irc.as_mut() {
            Some(irc) => irc.load_state(t),
            None => Ok(()),
        }
    }

    fn step(&mut self, views: &[Tensor], batch: &Batch, ctx: StepContext) -> Result<StepOutput> {
        let b = views[0].dim(0)?;
        let x = Tensor::cat(&[&views[0], &views[1]], 0)?;
        let f = self.backbone.forward_t(&x, true)?;
        let z = self.head.forward_t(&f, true)?;
        let (za, zb) = (z.narrow(0, 0, b)?, z.narrow(0, b, b)?);
        let mut loss = nt_xent(&za, &zb, self.tau)?;
        let mut logs = Vec::new();
        if let Some(irc) = self.irc.as_mut() {
            let tau = self.tau;
            loss = irc.add_to(loss, &f, &zb, batch, ctx, &mut logs, |p| {
                nt_xent_extra_positives(&za, &zb, &p.rows, &p.positives, tau)
            })?;
        }
        Ok(StepOutput {
            loss,
            logs,
            embeddings: za,
        })
    }

    fn take_eval_stats(&mut self) -> Option<serde_json::Value> {
        self.irc.as_mut().map(|i| i.take_stats())
    }
}
