//! SimCLR (Chen et al., ICML 2020): both views through one encoder and projection head in a
//! single forward (BatchNorm statistics over both views, as the reference), NT-Xent between them.
//!
//! With `[irc]`: plus `λ_c · L_cyc` of the IRC plug-in, and with auto-pairing, plus
//! `w(step) · auto_pair_weight · L_ap` where `L_ap` is [`nt_xent_extra_positives`]: each kept
//! view-1 embedding's matched memory entry (its base-head embedding, detached) is a positive
//! against the usual NT-Xent negatives (the batch minus the row and its own partner).

use super::{build_backbone, Method, StepContext, StepOutput};
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
        let backbone = build_backbone(recipe, in_channels, device)?;
        let hc = recipe.head.projector(backbone.feature_dim());
        let head = ProjectionHead::new(hc, recipe.seed, "projector", device)?;
        let mut params = ParamStore::new();
        params.extend_prefixed("backbone", backbone.params());
        params.extend_prefixed("projector", head.params());
        let irc = match &recipe.irc {
            Some(cfg) => Some(IrcPlugin::new(
                cfg,
                backbone.feature_dim(),
                recipe.head.output,
                recipe.seed,
                device,
                &mut params,
            )?),
            None => None,
        };
        Ok(Self {
            backbone,
            head,
            tau: recipe.method.temperature.unwrap_or(0.2),
            params,
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
            logs.push(("base_loss", loss.to_scalar::<f32>()? as f64));
            let labels = batch.labels.as_deref();
            let (s, cycle_v2) = irc.step(&f, labels, ctx.step, ctx.total_steps)?;
            loss = (loss + s.loss)?;
            if let Some(p) = s.positives.filter(|p| p.weight > 0.0 && !p.rows.is_empty()) {
                let ap = nt_xent_extra_positives(&za, &zb, &p.rows, &p.positives, self.tau)?;
                logs.push(("irc_pair_loss", ap.to_scalar::<f32>()? as f64));
                loss = (loss + (ap * p.weight)?)?;
            }
            irc.remember(&cycle_v2, &zb, labels)?;
            logs.extend(s.logs);
        }
        Ok(StepOutput { loss, logs })
    }

    fn take_eval_stats(&mut self) -> Option<serde_json::Value> {
        self.irc.as_mut().map(|i| i.take_stats())
    }
}
