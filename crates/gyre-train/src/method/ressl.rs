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
//! As the IRC pair: the student's (strong view) features and the teacher's weak-view features
//! (detached); the memory keeps the teacher's embeddings. An auto-paired positive is
//! `InfoNCE(z_s[i], m(i), queue)` at `nce_temperature`: the relational loss has no positives to
//! add to, so the matched memory entry becomes the positive of an InfoNCE term over the queue.

use super::{
    check, info_nce_pair, BuildContext, Method, MethodEnv, MethodSettings, Online, SettingsError,
};
use crate::bank::FifoBank;
use crate::step::{StepContext, StepOutput};
use crate::teacher::MomentumEncoder;
use gyre_data::Batch;
use gyre_encoders::{Backbone, ParamStore, ProjectionHead};
use gyre_kernels::{Result, Tensor};
use gyre_losses::{info_nce, l2_normalize, ressl_loss};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `[method] name = "ressl"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResslSettings {
    /// τ_s, the student's temperature.
    pub temperature: f64,
    /// τ_t, the teacher's (sharper) temperature.
    pub teacher_temperature: f64,
    /// K, rows of the queue of teacher embeddings.
    pub queue: usize,
    pub momentum: f64,
    pub momentum_final: Option<f64>,
    /// The TPAMI student predictor [P].
    pub predictor: bool,
    /// Its hidden width; default `head.hidden`.
    pub predictor_hidden: Option<usize>,
    /// Epochs over which InfoNCE cross-fades linearly into the relational loss [P].
    pub nce_warmup_epochs: f64,
    /// τ of that InfoNCE (and of IRC's auto-paired positives).
    pub nce_temperature: f64,
}

impl Default for ResslSettings {
    fn default() -> Self {
        Self {
            temperature: 0.1,
            teacher_temperature: 0.04,
            queue: 4096,
            momentum: 0.99,
            momentum_final: None,
            predictor: false,
            predictor_hidden: None,
            nce_warmup_epochs: 0.0,
            nce_temperature: 0.2,
        }
    }
}

impl MethodSettings for ResslSettings {
    const NAME: &'static str = "ressl";
    const VIEWS: (usize, &'static str) =
        (2, "the student's strong view, then the teacher's weak view");

    fn resolve(&mut self, env: &MethodEnv) {
        self.predictor_hidden.get_or_insert(env.head.hidden);
    }

    fn check(&self, env: &MethodEnv) -> std::result::Result<(), SettingsError> {
        for (k, v) in [
            ("temperature", self.temperature),
            ("teacher_temperature", self.teacher_temperature),
            ("nce_temperature", self.nce_temperature),
        ] {
            check::positive(k, v)?;
        }
        check::non_negative("nce_warmup_epochs", self.nce_warmup_epochs)?;
        check::momentum(self.momentum, self.momentum_final)?;
        check::width("predictor_hidden", self.predictor_hidden.unwrap_or(1))?;
        check::queue("queue", self.queue, env.batch_size)
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Method>> {
        let mut o = Online::new(ctx)?;
        let teacher = o.teacher(self.momentum, self.momentum_final, true, ctx)?;
        let predictor = if self.predictor {
            let hidden = self.predictor_hidden.unwrap_or(o.head_cfg.hidden);
            Some(o.predictor(hidden, ctx)?)
        } else {
            None
        };
        Ok(Box::new(Ressl {
            queue: FifoBank::with_noise(self.queue, &[o.head_cfg.output], ctx.env.seed),
            backbone: o.backbone,
            projector: o.head,
            predictor,
            teacher,
            pending: None,
            tau_s: self.temperature,
            tau_t: self.teacher_temperature,
            nce_warmup_epochs: self.nce_warmup_epochs,
            nce_tau: self.nce_temperature,
            params: o.params,
        }))
    }
}

pub struct Ressl {
    backbone: Backbone,
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
}

impl Method for Ressl {
    fn name(&self) -> &'static str {
        ResslSettings::NAME
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    fn step(&mut self, views: &[Tensor], _batch: &Batch, ctx: StepContext) -> Result<StepOutput> {
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
        let loss = if alpha < 1.0 {
            let nce = info_nce(&z_s, &z_t, &queue, self.nce_tau)?;
            logs.push(("relation_loss", rel.to_scalar::<f32>()? as f64));
            logs.push(("nce_loss", nce.to_scalar::<f32>()? as f64));
            logs.push(("relation_alpha", alpha));
            ((nce * (1.0 - alpha))? + (rel * alpha)?)?
        } else {
            rel
        };
        self.pending = Some(l2_normalize(&z_t)?);
        let (q, tau) = (z_s.clone(), self.nce_tau);
        Ok(StepOutput {
            loss,
            logs,
            embeddings: z_s,
            pair: Some(info_nce_pair(f_s, teacher.features, z_t, q, queue, tau)),
        })
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut v = self.teacher.state();
        v.extend(self.queue.state("queue")?);
        Ok(v)
    }

    fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        self.teacher.load_state(t)?;
        self.queue.load_state("queue", t)
    }

    fn after_step(&mut self, _ctx: StepContext) -> Result<()> {
        if let Some(k) = self.pending.take() {
            self.queue.push(&[&k], None)?;
        }
        Ok(())
    }
}
