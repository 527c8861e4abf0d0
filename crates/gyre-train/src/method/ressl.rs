//! ReSSL (Zheng et al., NeurIPS 2021; TPAMI 2024): the student sees a strong view, the momentum
//! teacher (Shuffle-BN) a weak one (crop + flip only); the student's similarity distribution over
//! a queue of past teacher embeddings is trained to match the teacher's sharper one
//! ([`ressl_loss`], τ_s = `temperature` = 0.1, τ_t = `teacher_temperature` = 0.04). The queue is
//! read before this batch's teacher embeddings are enqueued (after the step). Views:
//! `[strong, weak]`. The projector has no BatchNorm (`[head] batch_norm = false`).
//!
//! The TPAMI additions, as switches [P] (their internals are not public; `methods.md` §4.4):
//! - `predictor = true`: a BYOL-style `Linear – BN – ReLU – Linear` on the student only.
//! - `nce_warmup_epochs = E_w`: `L = (1 − α)·InfoNCE + α·L_ReSSL` with α rising linearly from 0
//!   to 1 over the first E_w epochs; the InfoNCE uses the teacher's embedding of the weak view as
//!   the positive and the same queue as negatives, at `nce_temperature` (0.2).
//!
//! With `[irc]`: the walk runs student (strong view) features → the plug-in's memory → the
//! teacher's weak-view features (detached). With auto-pairing, each kept student row gets
//! `w · auto_pair_weight · InfoNCE(z_s[i], m(i), queue)` at `nce_temperature`: the relational loss
//! has no positives to add to, so the matched memory entry becomes the positive of an InfoNCE term
//! over the same queue.

use super::{Method, Online, StepContext, StepOutput};
use crate::bank::FifoBank;
use crate::irc::IrcPlugin;
use crate::recipe::Recipe;
use crate::teacher::MomentumEncoder;
use gyre_data::Batch;
use gyre_encoders::{ParamStore, ProjectionHead, ResNet};
use gyre_kernels::{Device, Result, Tensor};
use gyre_losses::{info_nce, l2_normalize, ressl_loss};
use std::collections::HashMap;

pub struct Ressl {
    backbone: ResNet,
    projector: ProjectionHead,
    predictor: Option<ProjectionHead>,
    teacher: MomentumEncoder,
    queue: FifoBank,
    pending: Option<Tensor>,
    tau_s: f64,
    tau_t: f64,
    nce_warmup_epochs: f64,
    nce_tau: f64,
    params: ParamStore,
    irc: Option<IrcPlugin>,
}

impl Ressl {
    pub fn new(recipe: &Recipe, in_channels: usize, device: &Device) -> anyhow::Result<Self> {
        let m = &recipe.method;
        let mut o = Online::new(recipe, in_channels, device)?;
        let teacher = o.teacher(recipe, None, true, device)?;
        let predictor = if m.predictor.unwrap_or(false) {
            let hidden = m.predictor_hidden.unwrap_or(o.head_cfg.hidden);
            Some(o.predictor(hidden, recipe.seed, device)?)
        } else {
            None
        };
        let irc = o.irc(recipe, device)?;
        Ok(Self {
            queue: FifoBank::with_noise(m.queue.unwrap_or(4096), &[o.head_cfg.output], recipe.seed),
            backbone: o.backbone,
            projector: o.head,
            predictor,
            teacher,
            pending: None,
            tau_s: m.temperature.unwrap_or(0.1),
            tau_t: m.teacher_temperature.unwrap_or(0.04),
            nce_warmup_epochs: m.nce_warmup_epochs.unwrap_or(0.0),
            nce_tau: m.nce_temperature.unwrap_or(0.2),
            params: o.params,
            irc,
        })
    }
}

impl Method for Ressl {
    fn name(&self) -> &'static str {
        "ressl"
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn backbone(&self) -> &ResNet {
        &self.backbone
    }

    fn step(&mut self, views: &[Tensor], batch: &Batch, ctx: StepContext) -> Result<StepOutput> {
        self.teacher.update(ctx)?;
        let queue = self.queue.field(0, views[0].device())?;
        let f_s = self.backbone.forward_t(&views[0], true)?;
        let mut z_s = self.projector.forward_t(&f_s, true)?;
        if let Some(p) = &self.predictor {
            z_s = p.forward_t(&z_s, true)?;
        }
        let teacher = self.teacher.encode(&views[1], ctx, 1)?;
        let z_t = teacher.embeddings;
        let rel = ressl_loss(&z_s, &z_t, &queue, self.tau_s, self.tau_t)?;
        let mut logs = vec![("momentum", self.teacher.last_momentum)];
        let alpha = if self.nce_warmup_epochs > 0.0 {
            (ctx.epoch_progress() / self.nce_warmup_epochs).min(1.0)
        } else {
            1.0
        };
        let mut loss = if alpha < 1.0 {
            let nce = info_nce(&z_s, &z_t, &queue, self.nce_tau)?;
            logs.push(("relation_loss", rel.to_scalar::<f32>()? as f64));
            logs.push(("nce_loss", nce.to_scalar::<f32>()? as f64));
            logs.push(("relation_alpha", alpha));
            ((nce * (1.0 - alpha))? + (rel * alpha)?)?
        } else {
            rel
        };
        if let Some(irc) = self.irc.as_mut() {
            let f = Tensor::cat(&[&f_s, &teacher.features], 0)?;
            let tau = self.nce_tau;
            loss = irc.add_to(loss, &f, &z_t, batch, ctx, &mut logs, |p| {
                info_nce(&p.queries(&z_s)?, &p.positives, &queue, tau)
            })?;
        }
        self.pending = Some(l2_normalize(&z_t)?);
        Ok(StepOutput {
            loss,
            logs,
            embeddings: z_s,
        })
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut v = self.teacher.state();
        v.extend(self.queue.state("queue")?);
        if let Some(irc) = &self.irc {
            v.extend(irc.state()?);
        }
        Ok(v)
    }

    fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        self.teacher.load_state(t)?;
        self.queue.load_state("queue", t)?;
        match self.irc.as_mut() {
            Some(irc) => irc.load_state(t),
            None => Ok(()),
        }
    }

    fn take_eval_stats(&mut self) -> Option<serde_json::Value> {
        self.irc.as_mut().map(|i| i.take_stats())
    }

    fn after_step(&mut self, _ctx: StepContext) -> Result<()> {
        if let Some(k) = self.pending.take() {
            self.queue.push(&[&k], None)?;
        }
        Ok(())
    }
}
