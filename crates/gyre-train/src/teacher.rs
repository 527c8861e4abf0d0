//! The momentum (EMA) encoder of MoCo, BYOL, ReSSL, ReCo and InterCLR: a copy of the online
//! backbone and projector that is never differentiated, refreshed by [`EmaTeacher`] before its
//! forward pass, and run with Shuffle-BN.
//!
//! Shuffle-BN: the key batch is permuted before the teacher and un-permuted after it, so that the
//! BatchNorm sub-batches of the teacher (SplitBatchNorm, `encoder.bn_splits`) group different
//! images than the student's; without it, MoCo can "cheat" through BatchNorm statistics. The
//! permutation is drawn from the run's seed and the step, so runs repeat exactly.

use crate::ema::{EmaTeacher, MomentumSchedule};
use crate::step::StepContext;
use gyre_encoders::{Backbone, DenseHead, ParamStore, ProjectionHead, ProjectionHeadConfig};
use gyre_kernels::{Device, Result, Tensor};
use rand::seq::SliceRandom;

/// What the teacher produced for one batch (all detached).
pub struct TeacherOutput {
    /// Backbone features `[B, F]`.
    pub features: Tensor,
    /// Projector outputs `[B, D]` (not normalised).
    pub embeddings: Tensor,
}

/// What a dense teacher produced for one batch (all detached).
pub struct DenseTeacherOutput {
    /// The backbone's last-stage map `[B, F, h, w]`.
    pub map: Tensor,
    /// Its mean over the cells `[B, F]`, and the projector's output `[B, D]`.
    pub features: Tensor,
    pub embeddings: Tensor,
    /// The dense head's map `[B, D', h, w]` (not normalised).
    pub dense: Tensor,
}

/// A momentum encoder: backbone + projector (+ a dense head for dense methods), EMA of the
/// online ones.
pub struct MomentumEncoder {
    backbone: Backbone,
    head: ProjectionHead,
    dense_head: Option<DenseHead>,
    store: ParamStore,
    ema: EmaTeacher,
    schedule: MomentumSchedule,
    seed: u64,
    shuffle: bool,
    /// The momentum of the last update (for the step log).
    pub last_momentum: f64,
    /// The step of the last update: a forward pass is refused before this step's update.
    updated_at: Option<u64>,
}

impl MomentumEncoder {
    /// A teacher for `online` (backbone, head), which it copies; `head_cfg` must be the online
    /// head's. With `online_dense` (a dense head and its config: DenseCL) it also copies that,
    /// under `dense_head.`. `shuffle` turns Shuffle-BN on.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        online_backbone: &Backbone,
        online_head: &ProjectionHead,
        head_cfg: ProjectionHeadConfig,
        online_dense: Option<(&DenseHead, ProjectionHeadConfig)>,
        schedule: MomentumSchedule,
        seed: u64,
        shuffle: bool,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let backbone = online_backbone.fresh(seed, device)?;
        let head = ProjectionHead::new(head_cfg, seed, "projector", device)?;
        let mut online = ParamStore::new();
        online.extend_prefixed("backbone", online_backbone.params());
        online.extend_prefixed("projector", online_head.params());
        let mut teacher = ParamStore::new();
        teacher.extend_prefixed("backbone", backbone.params());
        teacher.extend_prefixed("projector", head.params());
        let dense_head = match online_dense {
            Some((od, cfg)) => {
                let d = DenseHead::new(cfg, seed, "dense_head", device)?;
                online.extend_prefixed("dense_head", od.params());
                teacher.extend_prefixed("dense_head", d.params());
                Some(d)
            }
            None => None,
        };
        let ema = EmaTeacher::new(&online, &teacher)?;
        Ok(Self {
            backbone,
            head,
            dense_head,
            store: teacher,
            ema,
            schedule,
            seed,
            shuffle,
            last_momentum: f64::NAN,
            updated_at: None,
        })
    }

    /// Every teacher tensor (parameters and BatchNorm buffers) under `teacher.` (checkpoints).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        crate::ema::copy_state(&self.store, "teacher")
    }

    /// Restores what [`Self::state`] wrote.
    pub fn load_state(&self, t: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        crate::ema::load_copy_state(&self.store, "teacher", t)
    }

    /// Step 1 of every step (methods.md §9.9): the EMA update, before any teacher forward.
    pub fn update(&mut self, ctx: StepContext) -> Result<()> {
        let m = self.schedule.at(ctx.step, ctx.total_steps);
        self.ema.update(m)?;
        self.last_momentum = m;
        self.updated_at = Some(ctx.step);
        Ok(())
    }

    /// The teacher's features and embeddings of `x` (train-mode BatchNorm, as the references),
    /// detached; `stream` separates several teacher passes of one step (distinct shuffles). An
    /// error before this step's [`Self::update`]: the update comes first (methods.md §9.9).
    pub fn encode(&self, x: &Tensor, ctx: StepContext, stream: u64) -> Result<TeacherOutput> {
        let (_, f, z, unperm) = self.forward(x, ctx, stream)?;
        Ok(TeacherOutput {
            features: unshuffle(f, unperm.as_ref())?,
            embeddings: unshuffle(z, unperm.as_ref())?,
        })
    }

    /// [`Self::encode`] and the backbone's last-stage map `[B, F, h, w]` behind the features
    /// (whose mean they are), for a plug-in that walks the cells (IRC's dense level).
    pub fn encode_map(
        &self,
        x: &Tensor,
        ctx: StepContext,
        stream: u64,
    ) -> Result<(TeacherOutput, Tensor)> {
        let (map, f, z, unperm) = self.forward(x, ctx, stream)?;
        let inv = unperm.as_ref();
        Ok((
            TeacherOutput {
                features: unshuffle(f, inv)?,
                embeddings: unshuffle(z, inv)?,
            },
            unshuffle(map, inv)?,
        ))
    }

    /// The detached map, features and embeddings of the shuffled batch, and the inverse
    /// permutation (callers un-shuffle only what they keep).
    fn forward(
        &self,
        x: &Tensor,
        ctx: StepContext,
        stream: u64,
    ) -> Result<(Tensor, Tensor, Tensor, Option<Tensor>)> {
        let (xin, unperm) = self.shuffled(x, ctx, stream)?;
        let map = self.backbone.forward_dense_t(&xin, true)?.detach();
        let f = map.mean((2, 3))?;
        let z = self.head.forward_t(&f, true)?.detach();
        Ok((map, f, z, unperm))
    }

    /// The dense teacher's map, pooled features, embeddings and dense-head map of `x` (same
    /// rules as [`Self::encode`]); an error for a teacher without a dense head.
    pub fn encode_dense(
        &self,
        x: &Tensor,
        ctx: StepContext,
        stream: u64,
    ) -> Result<DenseTeacherOutput> {
        let Some(dense_head) = &self.dense_head else {
            gyre_kernels::candle::bail!("teacher: no dense head (built without `online_dense`)");
        };
        let (map, f, z, unperm) = self.forward(x, ctx, stream)?;
        let d = dense_head.forward_t(&map, true)?.detach();
        let inv = unperm.as_ref();
        Ok(DenseTeacherOutput {
            map: unshuffle(map, inv)?,
            features: unshuffle(f, inv)?,
            embeddings: unshuffle(z, inv)?,
            dense: unshuffle(d, inv)?,
        })
    }

    /// The step's check that the update came first, and Shuffle-BN's permuted batch with the
    /// inverse permutation.
    fn shuffled(
        &self,
        x: &Tensor,
        ctx: StepContext,
        stream: u64,
    ) -> Result<(Tensor, Option<Tensor>)> {
        if self.updated_at != Some(ctx.step) {
            gyre_kernels::candle::bail!(
                "teacher: forward pass at step {} before its EMA update",
                ctx.step
            );
        }
        if !self.shuffle {
            return Ok((x.clone(), None));
        }
        let n = x.dim(0)?;
        let dev = x.device();
        let mut perm: Vec<u32> = (0..n as u32).collect();
        let words = [self.seed, ctx.step, stream, gyre_rng::tag(b"shuffleb")];
        perm.shuffle(&mut gyre_rng::stream(words));
        let mut inv = vec![0u32; n];
        for (i, &p) in perm.iter().enumerate() {
            inv[p as usize] = i as u32;
        }
        let perm = Tensor::from_vec(perm, n, dev)?;
        Ok((
            x.index_select(&perm, 0)?,
            Some(Tensor::from_vec(inv, n, dev)?),
        ))
    }
}

/// Rows of `t` back in the batch's order (`inv`: Shuffle-BN's inverse permutation, if any).
fn unshuffle(t: Tensor, inv: Option<&Tensor>) -> Result<Tensor> {
    match inv {
        Some(inv) => t.index_select(inv, 0),
        None => Ok(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyre_encoders::ResNetConfig;

    #[test]
    fn starts_as_a_copy_and_shuffle_bn_is_unpermuted() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let cfg = ResNetConfig::preset("resnet-mini", 1)?;
        // The online net has a different seed: the teacher must copy it, not its own init.
        let online: Backbone = gyre_encoders::ResNet::new(cfg.clone(), 7, &dev)?.into();
        let hc = ProjectionHeadConfig::new(online.feature_dim(), 16, 8);
        let head = ProjectionHead::new(hc, 7, "projector", &dev)?;
        let sched = MomentumSchedule::Constant(0.99);
        let mut plain = MomentumEncoder::new(&online, &head, hc, None, sched, 0, false, &dev)?;
        let mut shuffled = MomentumEncoder::new(&online, &head, hc, None, sched, 0, true, &dev)?;
        let x = Tensor::randn(0f32, 1.0, (4, 1, 12, 12), &dev)?;
        let ctx = StepContext {
            step: 3,
            total_steps: 10,
            steps_per_epoch: 5,
        };
        let want = head.forward_t(&online.forward_t(&x, true)?, true)?;
        // The update order is enforced: no forward pass before this step's EMA update.
        let e = plain.encode(&x, ctx, 0).err().expect("refused").to_string();
        assert!(e.contains("before its EMA update"), "{e}");
        // A copy updated towards itself stays the copy.
        plain.update(ctx)?;
        shuffled.update(ctx)?;
        let got = plain.encode(&x, ctx, 0)?.embeddings;
        let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "copy differs by {diff}");
        // Plain BatchNorm sees the same batch in any order: shuffling then un-permuting gives the
        // same rows.
        let got = shuffled.encode(&x, ctx, 0)?.embeddings;
        let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "shuffle not undone: {diff}");
        Ok(())
    }
}
