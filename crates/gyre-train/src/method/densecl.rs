//! DenseCL (Wang et al., CVPR 2021): MoCo v2 plus a dense term. The online backbone's last-stage
//! map feeds the global projector (on its mean) and a dense head (at every cell); the momentum
//! encoder does the same for view 2. Each query cell's positive is the key cell most similar in
//! backbone features ([`gyre_losses::densecl`]); negatives come from a second queue of the keys'
//! pooled dense embeddings. `L = (1 − λ)·L_global + λ·L_dense`, λ = 0.5, τ = 0.2 (the reference).
//!
//! The encoder should be dense (`encoder.output_stride`, e.g. 4 or 8); any map works. Heads follow
//! `[head]` (the reference: no BatchNorm, `Linear–ReLU–Linear` and `1×1–ReLU–1×1`). As the IRC
//! pair it is MoCo v2's (pooled features, the queue's InfoNCE), with both maps for the dense level.

use super::{
    check, info_nce_pair, BuildContext, Method, MethodEnv, MethodSettings, Online, SettingsError,
};
use crate::bank::FifoBank;
use crate::step::{StepContext, StepOutput};
use crate::teacher::MomentumEncoder;
use gyre_data::Batch;
use gyre_encoders::{Backbone, DenseHead, ParamStore, ProjectionHead};
use gyre_kernels::{Result, Tensor};
use gyre_losses::densecl::{backbone_matches, densecl_dense_loss, pooled_keys};
use gyre_losses::{info_nce, l2_normalize};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `[method] name = "densecl"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DenseClSettings {
    /// τ of both InfoNCE terms.
    pub temperature: f64,
    /// K, rows of each queue (a multiple of the batch size).
    pub queue: usize,
    pub momentum: f64,
    pub momentum_final: Option<f64>,
    /// λ, the dense term's weight.
    pub lambda: f64,
}

impl Default for DenseClSettings {
    fn default() -> Self {
        Self {
            temperature: 0.2,
            queue: 4096,
            momentum: 0.99,
            momentum_final: None,
            lambda: 0.5,
        }
    }
}

impl MethodSettings for DenseClSettings {
    const NAME: &'static str = "densecl";
    const DENSE_PAIR: bool = true;

    fn check(&self, env: &MethodEnv) -> std::result::Result<(), SettingsError> {
        check::positive("temperature", self.temperature)?;
        check::momentum(self.momentum, self.momentum_final)?;
        if !(0.0..=1.0).contains(&self.lambda) {
            return Err(SettingsError::new(
                "lambda",
                format!("must be in [0, 1], got {}", self.lambda),
            ));
        }
        check::queue("queue", self.queue, env.batch_size)
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Method>> {
        Ok(Box::new(DenseCl::new(self, ctx)?))
    }
}

pub struct DenseCl {
    backbone: Backbone,
    head: ProjectionHead,
    dense_head: DenseHead,
    teacher: MomentumEncoder,
    /// Field 0: global keys; field 1: pooled dense keys.
    queue: FifoBank,
    pending: Option<(Tensor, Tensor)>,
    tau: f64,
    lambda: f64,
    params: ParamStore,
}

impl DenseCl {
    pub fn new(s: &DenseClSettings, ctx: &BuildContext) -> anyhow::Result<Self> {
        let mut o = Online::new(ctx)?;
        // The dense head has the projector's shape, at every cell (DenseCL's neck).
        let dense_head = o.dense_head(ctx)?;
        let teacher = o.dense_teacher(&dense_head, s.momentum, s.momentum_final, true, ctx)?;
        let d = o.head_cfg.output;
        Ok(Self {
            queue: FifoBank::with_noise(s.queue, &[d, d], ctx.env.seed),
            backbone: o.backbone,
            head: o.head,
            dense_head,
            teacher,
            pending: None,
            tau: s.temperature,
            lambda: s.lambda,
            params: o.params,
        })
    }
}

/// `[B, C, h, w]` as `[B, C, h·w]`.
fn cells(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h * w))
}

impl Method for DenseCl {
    fn name(&self) -> &'static str {
        DenseClSettings::NAME
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    fn step(&mut self, views: &[Tensor], _batch: &Batch, ctx: StepContext) -> Result<StepOutput> {
        self.teacher.update(ctx)?;
        let dev = views[0].device();
        let (queue, queue_dense) = (self.queue.field(0, dev)?, self.queue.field(1, dev)?);
        let map = self.backbone.forward_dense_t(&views[0], true)?;
        let f1 = map.mean((2, 3))?;
        let q = self.head.forward_t(&f1, true)?;
        let q_dense = self.dense_head.forward_t(&map, true)?;
        let t = self.teacher.encode_dense(&views[1], ctx, 1)?;
        let global = info_nce(&q, &t.embeddings, &queue, self.tau)?;
        let matches = backbone_matches(&cells(&map)?, &cells(&t.map)?)?;
        let k_dense = cells(&t.dense)?;
        let dense = densecl_dense_loss(
            &cells(&q_dense)?,
            &k_dense,
            &matches,
            &queue_dense,
            self.tau,
        )?;
        let loss = ((&global * (1.0 - self.lambda))? + (&dense * self.lambda)?)?;
        let logs = vec![
            ("momentum", self.teacher.last_momentum),
            ("loss_global", global.to_scalar::<f32>()? as f64),
            ("loss_dense", dense.to_scalar::<f32>()? as f64),
        ];
        self.pending = Some((l2_normalize(&t.embeddings)?, pooled_keys(&k_dense)?));
        Ok(StepOutput {
            loss,
            logs,
            embeddings: q.clone(),
            pair: Some(crate::step::PairHooks {
                dense: Some(crate::step::DenseHooks {
                    view1_map: map,
                    view2_map: t.map,
                    momentum: self.teacher.last_momentum,
                }),
                ..info_nce_pair(f1, t.features, t.embeddings, q, queue, self.tau)
            }),
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
        if let Some((k, kd)) = self.pending.take() {
            self.queue.push(&[&k, &kd], None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::testing::{batch, ctx, random_views, Fixture};

    /// One step: the loss is (1 − λ)·global + λ·dense of its own logged terms; the queue takes
    /// the keys after the step (both fields), not before.
    #[test]
    fn the_loss_mixes_its_terms_and_the_queue_fills_after_the_step() -> Result<()> {
        let f = Fixture::new(8);
        let s = DenseClSettings {
            queue: 16,
            lambda: 0.3,
            ..DenseClSettings::default()
        };
        let mut m = DenseCl::new(&s, &f.build_context()).unwrap();
        let before = m.queue.field(1, &f.device)?.to_vec2::<f32>()?;
        let out = m.step(&random_views(2, 8, 0)?, &batch(8), ctx(0))?;
        let log = |k: &str| out.logs.iter().find(|l| l.0 == k).unwrap().1;
        let want = 0.7 * log("loss_global") + 0.3 * log("loss_dense");
        let got = out.loss.to_scalar::<f32>()? as f64;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        assert!(log("loss_dense") > 0.0 && log("loss_global") > 0.0);
        assert_eq!(
            m.queue.field(1, &f.device)?.to_vec2::<f32>()?,
            before,
            "no write during the step"
        );
        m.after_step(ctx(0))?;
        let after = m.queue.field(1, &f.device)?.to_vec2::<f32>()?;
        assert_ne!(after, before);
        // The dense field's new rows are unit vectors (pooled, normalised keys).
        let changed: Vec<&Vec<f32>> = after
            .iter()
            .zip(&before)
            .filter(|(a, b)| a != b)
            .map(|p| p.0)
            .collect();
        assert_eq!(changed.len(), 8);
        for r in changed {
            let n: f32 = r.iter().map(|v| v * v).sum();
            assert!((n - 1.0).abs() < 1e-4);
        }
        Ok(())
    }
}
