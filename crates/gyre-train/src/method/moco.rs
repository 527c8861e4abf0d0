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
//! As the IRC pair: view-1 online features and view-2 features (online when symmetric, the key
//! encoder's otherwise, detached); the memory keeps the view-2 keys, and an auto-paired positive
//! is `InfoNCE(q1[i], m(i), queue)`: the matched entry is the positive, the queue the negatives.
//! For IRC's dense level it also gives view 1's online map and the key encoder's map of view 2.

use super::{
    check, info_nce_pair, BuildContext, Method, MethodEnv, MethodSettings, Online, SettingsError,
};
use crate::bank::FifoBank;
use crate::step::{DenseHooks, StepContext, StepOutput};
use crate::teacher::MomentumEncoder;
use gyre_data::Batch;
use gyre_encoders::{Backbone, ParamStore, ProjectionHead};
use gyre_kernels::{Result, Tensor};
use gyre_losses::{info_nce, l2_normalize};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `[method] name = "mocov2"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MocoSettings {
    /// InfoNCE τ.
    pub temperature: f64,
    /// K, rows of the queue (a multiple of the keys enqueued per step).
    pub queue: usize,
    /// EMA momentum of the key encoder (at the start, when `momentum_final` is set).
    pub momentum: f64,
    /// With it, the momentum follows BYOL's cosine schedule from `momentum` to this.
    pub momentum_final: Option<f64>,
    /// The symmetric loss `(L(q1, k2) + L(q2, k1)) / 2`, both keys enqueued.
    pub symmetric: bool,
}

impl Default for MocoSettings {
    fn default() -> Self {
        Self {
            temperature: 0.1,
            queue: 4096,
            momentum: 0.99,
            momentum_final: None,
            symmetric: false,
        }
    }
}

impl MethodSettings for MocoSettings {
    const NAME: &'static str = "mocov2";
    const DENSE_PAIR: bool = true;

    fn check(&self, env: &MethodEnv) -> std::result::Result<(), SettingsError> {
        check::positive("temperature", self.temperature)?;
        check::momentum(self.momentum, self.momentum_final)?;
        let keys_per_step = env.batch_size * if self.symmetric { 2 } else { 1 };
        check::queue("queue", self.queue, keys_per_step)
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Method>> {
        Ok(Box::new(MocoV2::new(self, ctx)?))
    }
}

pub struct MocoV2 {
    backbone: Backbone,
    head: ProjectionHead,
    teacher: MomentumEncoder,
    queue: FifoBank,
    pending: Option<Tensor>,
    tau: f64,
    symmetric: bool,
    params: ParamStore,
}

impl MocoV2 {
    pub fn new(s: &MocoSettings, ctx: &BuildContext) -> anyhow::Result<Self> {
        let o = Online::new(ctx)?;
        let teacher = o.teacher(s.momentum, s.momentum_final, true, ctx)?;
        Ok(Self {
            queue: FifoBank::with_noise(s.queue, &[o.head_cfg.output], ctx.env.seed),
            backbone: o.backbone,
            head: o.head,
            teacher,
            pending: None,
            tau: s.temperature,
            symmetric: s.symmetric,
            params: o.params,
        })
    }

    fn online(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (_, f, z) = self.online_map(x)?;
        Ok((f, z))
    }

    /// The backbone's map, its mean (the features) and the projector's output.
    fn online_map(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let map = self.backbone.forward_dense_t(x, true)?;
        let f = map.mean((2, 3))?;
        let z = self.head.forward_t(&f, true)?;
        Ok((map, f, z))
    }
}

impl Method for MocoV2 {
    fn name(&self) -> &'static str {
        MocoSettings::NAME
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
        let (map1, f1, q1) = self.online_map(&views[0])?;
        let (t2, map2) = self.teacher.encode_map(&views[1], ctx, 1)?;
        let logs = vec![("momentum", self.teacher.last_momentum)];
        let (loss, f2, keys) = if self.symmetric {
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
        self.pending = Some(l2_normalize(&keys)?);
        let (q, tau) = (q1.clone(), self.tau);
        let mut pair = info_nce_pair(f1, f2, t2.embeddings, q, queue, tau);
        pair.dense = Some(DenseHooks {
            view1_map: map1,
            view2_map: map2,
            momentum: self.teacher.last_momentum,
        });
        Ok(StepOutput {
            loss,
            logs,
            embeddings: q1,
            pair: Some(pair),
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

    fn teacher_map(&self, x: &Tensor, ctx: StepContext) -> Result<Option<Tensor>> {
        // Its own Shuffle-BN stream, apart from the step's key pass.
        Ok(Some(self.teacher.encode_map(x, ctx, 7)?.1))
    }

    fn after_step(&mut self, _ctx: StepContext) -> Result<()> {
        if let Some(k) = self.pending.take() {
            self.queue.push(&[&k], None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::testing::{batch, ctx, random_views, Fixture};

    /// Symmetric MoCo's loss is the mean of its two directions, each computed from the same
    /// encoders, teacher and queue (methods.md §1.2).
    #[test]
    fn symmetric_loss_is_the_mean_of_its_two_terms() -> anyhow::Result<()> {
        let f = Fixture::new(16);
        let s = MocoSettings {
            symmetric: true,
            queue: 64,
            ..Default::default()
        };
        let views = random_views(2, 16, 1)?;
        let c = ctx(0);
        // Term by term, on a second copy (the same seed: the same weights and queue).
        let mut moco = MocoV2::new(&s, &f.build_context())?;
        let mut twin = MocoV2::new(&s, &f.build_context())?;
        twin.teacher.update(c)?;
        let queue = twin.queue.field(0, views[0].device())?;
        let (_, q1) = twin.online(&views[0])?;
        let (_, q2) = twin.online(&views[1])?;
        let k2 = twin.teacher.encode(&views[1], c, 1)?.embeddings;
        let k1 = twin.teacher.encode(&views[0], c, 0)?.embeddings;
        let a = info_nce(&q1, &k2, &queue, 0.1)?.to_scalar::<f32>()?;
        let b = info_nce(&q2, &k1, &queue, 0.1)?.to_scalar::<f32>()?;
        let got = moco.step(&views, &batch(16), c)?.loss.to_scalar::<f32>()?;
        assert!(a != b, "two different terms");
        assert_eq!(got, (a + b) * 0.5);
        Ok(())
    }
}
