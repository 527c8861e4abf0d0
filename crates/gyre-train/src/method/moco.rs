//! MoCo v2 (He et al., CVPR 2020; Chen et al., arXiv 2003.04297): queries from the online
//! encoder, keys from its momentum copy (Shuffle-BN), negatives from a FIFO queue of past keys,
//! InfoNCE ([`info_nce`]). The MoCo CIFAR demo's recipe: SplitBatchNorm in the backbone
//! (`encoder.bn_splits`), an MLP head without BatchNorm, K = 4096, m = 0.99, τ = 0.1.
//!
//! Asymmetric (the reference default): `L = L(q1, k2)`, one online and one key pass per step.
//! Symmetric (`symmetric = true`, the demo's `--symmetric`, solo-learn's MoCo V2+):
//! `L = (L(q1, k2) + L(q2, k1)) / 2` — the demo sums the two terms; gyre averages them, as
//! `methods.md` §1.2 — and both keys are enqueued, so K must be a multiple of 2B.
//!
//! With `[irc]`: the walk runs view-1 online features → the plug-in's memory → view-2 features
//! (online when symmetric, the key encoder's otherwise, detached). With auto-pairing, each kept
//! query gets `w · auto_pair_weight · InfoNCE(q1[i], m(i), queue)`: the matched memory entry's
//! base embedding is its positive, the queue its negatives.

use super::{Method, Online, StepContext, StepOutput};
use crate::bank::FifoBank;
use crate::irc::IrcPlugin;
use crate::recipe::Recipe;
use crate::teacher::MomentumEncoder;
use gyre_data::Batch;
use gyre_encoders::{ParamStore, ProjectionHead, ResNet};
use gyre_kernels::{Device, Result, Tensor};
use gyre_losses::{info_nce, l2_normalize};
use std::collections::HashMap;

pub struct MocoV2 {
    backbone: ResNet,
    head: ProjectionHead,
    teacher: MomentumEncoder,
    queue: FifoBank,
    pending: Option<Tensor>,
    tau: f64,
    symmetric: bool,
    params: ParamStore,
    irc: Option<IrcPlugin>,
}

impl MocoV2 {
    pub fn new(recipe: &Recipe, in_channels: usize, device: &Device) -> anyhow::Result<Self> {
        let m = &recipe.method;
        let mut o = Online::new(recipe, in_channels, device)?;
        let teacher = o.teacher(recipe, None, true, device)?;
        let irc = o.irc(recipe, device)?;
        Ok(Self {
            queue: FifoBank::with_noise(m.queue.unwrap_or(4096), &[o.head_cfg.output], recipe.seed),
            backbone: o.backbone,
            head: o.head,
            teacher,
            pending: None,
            tau: m.temperature.unwrap_or(0.1),
            symmetric: m.symmetric.unwrap_or(false),
            params: o.params,
            irc,
        })
    }

    fn online(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let f = self.backbone.forward_t(x, true)?;
        let z = self.head.forward_t(&f, true)?;
        Ok((f, z))
    }
}

impl Method for MocoV2 {
    fn name(&self) -> &'static str {
        "mocov2"
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
        let (f1, q1) = self.online(&views[0])?;
        let t2 = self.teacher.encode(&views[1], ctx, 1)?;
        let mut logs = vec![("momentum", self.teacher.last_momentum)];
        let (mut loss, f2, keys) = if self.symmetric {
            let (f2, q2) = self.online(&views[1])?;
            let t1 = self.teacher.encode(&views[0], ctx, 0)?;
            let l = ((info_nce(&q1, &t2.embeddings, &queue, self.tau)?
                + info_nce(&q2, &t1.embeddings, &queue, self.tau)?)?
                * 0.5)?;
            let keys = Tensor::cat(&[&t1.embeddings, &t2.embeddings], 0)?;
            (l, f2, keys)
        } else {
            let l = info_nce(&q1, &t2.embeddings, &queue, self.tau)?;
            (l, t2.features.clone(), t2.embeddings.clone())
        };
        if let Some(irc) = self.irc.as_mut() {
            let f = Tensor::cat(&[&f1, &f2], 0)?;
            let tau = self.tau;
            loss = irc.add_to(loss, &f, &t2.embeddings, batch, ctx, &mut logs, |p| {
                info_nce(&p.queries(&q1)?, &p.positives, &queue, tau)
            })?;
        }
        self.pending = Some(l2_normalize(&keys)?);
        Ok(StepOutput {
            loss,
            logs,
            embeddings: q1,
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
        if let Some(irc) = self.irc.as_mut() {
            irc.load_state(t)?;
        }
        Ok(())
    }

    fn after_step(&mut self, _ctx: StepContext) -> Result<()> {
        if let Some(k) = self.pending.take() {
            self.queue.push(&[&k], None)?;
        }
        Ok(())
    }

    fn take_eval_stats(&mut self) -> Option<serde_json::Value> {
        self.irc.as_mut().map(|i| i.take_stats())
    }
}
