//! SwAV (Caron et al., NeurIPS 2020): online clustering. Each crop's normalised projection is
//! scored against `K` learnable prototypes (unit rows: a weight-normalised linear layer with its
//! norm fixed at 1, as solo-learn); Sinkhorn–Knopp turns each global crop's scores into balanced
//! soft codes ([`sinkhorn_knopp`], ε = 0.05, 3 iterations), and every other crop must predict
//! them ([`swapped_prediction`], τ = 0.1). Multi-crop: two global crops, then any number of
//! local crops of their own size (`views = ["global", "global", "local", …]`); crops of one size
//! share a forward pass (the reference's grouping by resolution).
//!
//! The prototypes get no gradient for the first `freeze_prototypes_epochs` epochs (the
//! references set their gradients to None, so the optimiser leaves them alone). With `queue`
//! rows, each global crop keeps a FIFO of its past normalised projections; from epoch
//! `queue_start_epoch` they are scored by the current prototypes and put before the batch's
//! rows in Sinkhorn (equipartition over more samples than one batch); the queues are written
//! after every step from the start, the batch's rows after they were used (step 5 of §9.9).
//!
//! As the IRC pair: both global crops' features; the memory keeps view 2's codes, and an
//! auto-paired positive is one more swapped-prediction target for view 1's scores.

use super::{
    check, epoch_of, BuildContext, Method, MethodEnv, MethodSettings, Online, SettingsError,
};
use crate::bank::FifoBank;
use crate::step::{PairHooks, StepContext, StepOutput};
use gyre_data::Batch;
use gyre_encoders::{init::Init, Backbone, ParamStore, WeightNormLinear};
use gyre_kernels::{Result, Tensor};
use gyre_losses::swav::{SWAV_EPSILON, SWAV_SINKHORN_ITERATIONS, SWAV_TEMPERATURE};
use gyre_losses::{l2_normalize, sinkhorn_knopp, swapped_prediction};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `[method] name = "swav"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwavSettings {
    /// Prototypes `K` (3000, the paper's and solo-learn's).
    pub prototypes: usize,
    /// The swapped prediction's softmax temperature τ.
    pub temperature: f64,
    /// Sinkhorn's entropy ε.
    pub epsilon: f64,
    /// Sinkhorn iterations.
    pub sinkhorn_iterations: usize,
    /// Rows of each global crop's queue (0: none; solo-learn's CIFAR recipe: 3840).
    pub queue: usize,
    /// The first epoch whose codes use the queue.
    pub queue_start_epoch: usize,
    /// Epochs during which the prototypes get no gradient (the paper: the first epoch).
    pub freeze_prototypes_epochs: usize,
}

impl Default for SwavSettings {
    fn default() -> Self {
        Self {
            prototypes: 3000,
            temperature: SWAV_TEMPERATURE,
            epsilon: SWAV_EPSILON,
            sinkhorn_iterations: SWAV_SINKHORN_ITERATIONS,
            queue: 0,
            queue_start_epoch: 0,
            freeze_prototypes_epochs: 1,
        }
    }
}

impl MethodSettings for SwavSettings {
    const NAME: &'static str = "swav";
    const VIEWS: (usize, &'static str) = (2, "two global crops, then any local crops");
    const MULTI_CROP: bool = true;

    fn check(&self, env: &MethodEnv) -> std::result::Result<(), SettingsError> {
        check::rows("prototypes", self.prototypes)?;
        check::positive("temperature", self.temperature)?;
        check::positive("epsilon", self.epsilon)?;
        if self.sinkhorn_iterations == 0 || self.sinkhorn_iterations > 1000 {
            return Err(SettingsError::new(
                "sinkhorn_iterations",
                format!("must be in 1..=1000, got {}", self.sinkhorn_iterations),
            ));
        }
        if self.queue > 0 {
            check::queue("queue", self.queue, env.batch_size)?;
        }
        Ok(())
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Method>> {
        let mut online = Online::new(ctx)?;
        let d = online.head_cfg.output;
        let mut store = ParamStore::new();
        let init = Init::new(ctx.env.seed, ctx.device);
        let prototypes =
            WeightNormLinear::new(&mut store, &init, "prototypes", d, self.prototypes, false)?;
        online
            .params
            .extend_prefixed("prototypes", &strip(&store, "prototypes"));
        let queues = (self.queue > 0).then(|| [0, 1].map(|_| FifoBank::new(self.queue, &[d])));
        Ok(Box::new(Swav {
            online,
            prototypes,
            queues,
            pending: None,
            s: self.clone(),
        }))
    }
}

/// `store`'s entries with `prefix.` taken off their names.
pub(crate) fn strip(store: &ParamStore, prefix: &str) -> ParamStore {
    let mut out = ParamStore::new();
    let cut = format!("{prefix}.");
    for p in store.all() {
        out.push_renamed(p, p.name.strip_prefix(&cut).unwrap_or(&p.name));
    }
    out
}

pub struct Swav {
    online: Online,
    prototypes: WeightNormLinear,
    /// Each global crop's past normalised projections.
    queues: Option<[FifoBank; 2]>,
    /// This step's global-crop projections, for the queues after the optimiser step.
    pending: Option<[Tensor; 2]>,
    s: SwavSettings,
}

impl Swav {
    /// The codes of global crop `i` from its detached scores, with its queue's rows before them
    /// from `queue_start_epoch` on.
    fn codes(&self, i: usize, scores: &Tensor, epoch: usize) -> Result<Tensor> {
        let b = scores.dim(0)?;
        let s = scores.detach();
        let all = match &self.queues {
            Some(q) if epoch >= self.s.queue_start_epoch && !q[i].is_empty() => {
                let past = q[i].field(0, s.device())?;
                let past = self.prototypes.forward(&past, true)?;
                Tensor::cat(&[past, s], 0)?
            }
            _ => s,
        };
        sinkhorn_knopp(&all, self.s.epsilon, self.s.sinkhorn_iterations, b)
    }
}

impl Method for Swav {
    fn name(&self) -> &'static str {
        SwavSettings::NAME
    }

    fn params(&self) -> &ParamStore {
        &self.online.params
    }

    fn backbone(&self) -> &Backbone {
        &self.online.backbone
    }

    fn pair_base_dim(&self) -> Option<usize> {
        Some(self.s.prototypes)
    }

    fn step(&mut self, views: &[Tensor], _batch: &Batch, ctx: StepContext) -> Result<StepOutput> {
        let epoch = epoch_of(ctx);
        let frozen = epoch < self.s.freeze_prototypes_epochs;
        let (f, z) = self.online.crops(views)?;
        let z: Vec<Tensor> = z.iter().map(l2_normalize).collect::<Result<_>>()?;
        let scores: Vec<Tensor> = z
            .iter()
            .map(|z| self.prototypes.forward(z, frozen))
            .collect::<Result<_>>()?;
        let codes = [
            self.codes(0, &scores[0], epoch)?,
            self.codes(1, &scores[1], epoch)?,
        ];
        let loss = swapped_prediction(&scores, &codes, self.s.temperature)?;
        self.pending = Some([z[0].detach(), z[1].detach()]);
        let log_p1 = gyre_kernels::nn::ops::log_softmax(&(&scores[0] / self.s.temperature)?, 1)?;
        let [_, q2] = codes;
        Ok(StepOutput {
            loss,
            logs: Vec::new(),
            embeddings: z[0].clone(),
            pair: Some(PairHooks {
                view1: f[0].clone(),
                view2: f[1].clone(),
                view2_index: 1,
                base_v2: q2,
                keep_base_scale: true,
                pair_loss: Box::new(move |p| {
                    (&p.positives * p.queries(&log_p1)?)?
                        .sum(1)?
                        .mean_all()?
                        .neg()
                }),
                dense: None,
            }),
        })
    }

    fn after_step(&mut self, _ctx: StepContext) -> Result<()> {
        if let (Some(q), Some(z)) = (&mut self.queues, self.pending.take()) {
            q[0].push(&[&z[0]], None)?;
            q[1].push(&[&z[1]], None)?;
        }
        Ok(())
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        if let Some(q) = &self.queues {
            out.extend(q[0].state("queue0")?);
            out.extend(q[1].state("queue1")?);
        }
        Ok(out)
    }

    fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        if let Some(q) = &mut self.queues {
            q[0].load_state("queue0", t)?;
            q[1].load_state("queue1", t)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::testing::{batch, ctx, random_views, step_and_own_pair_loss, Fixture};

    fn small() -> SwavSettings {
        SwavSettings {
            prototypes: 10,
            queue: 16,
            queue_start_epoch: 1,
            ..SwavSettings::default()
        }
    }

    /// Every row paired with its own view-2 codes: the pair loss is view 1's half of the
    /// swapped prediction between the two global crops (the loss itself with two crops, less
    /// view 2's half).
    #[test]
    fn pairs_on_their_own_partners_give_view_1s_prediction_of_view_2() -> anyhow::Result<()> {
        let (out, got) = step_and_own_pair_loss(&small(), &Fixture::new(8), 3)?;
        let loss = out.loss.to_scalar::<f32>()? as f64;
        assert!(got > 0.0 && got.is_finite());
        // Both halves are cross-entropies against codes on 10 prototypes: within ln 10 + a bit.
        assert!(loss > 0.0 && loss < 2.0 * 10f64.ln(), "{loss}");
        Ok(())
    }

    /// The prototypes get a gradient from the second epoch only; the backbone always.
    #[test]
    fn prototypes_are_frozen_for_the_first_epoch() -> anyhow::Result<()> {
        let f = Fixture::new(8);
        let mut m = small().build(&f.build_context())?;
        let v = random_views(3, 8, 1)?;
        let proto = m
            .params()
            .get("prototypes.weight_v")
            .expect("registered")
            .clone();
        let conv = m.params().all()[0].clone();
        for (step, wants) in [(0u64, false), (4, true)] {
            let out = m.step(&v, &batch(8), ctx(step))?;
            let g = out.loss.backward()?;
            assert_eq!(g.get(proto.var.as_tensor()).is_some(), wants, "step {step}");
            assert!(g.get(conv.var.as_tensor()).is_some());
            m.after_step(ctx(step))?;
        }
        Ok(())
    }

    /// The queue is written after each step, and read from `queue_start_epoch` on: the same
    /// batch's loss changes once the queue takes part in the codes.
    #[test]
    fn the_queue_changes_the_codes_from_its_start_epoch() -> anyhow::Result<()> {
        let f = Fixture::new(8);
        let mut m = small().build(&f.build_context())?;
        let fresh = |step| -> anyhow::Result<f32> {
            let mut m = small().build(&f.build_context())?;
            Ok(m.step(&random_views(2, 8, 2)?, &batch(8), ctx(step))?
                .loss
                .to_scalar::<f32>()?)
        };
        // Two other batches fill the queue (16 rows).
        for step in [0, 1] {
            m.step(&random_views(2, 8, 10 + step)?, &batch(8), ctx(step))?;
            m.after_step(ctx(step))?;
        }
        let state = m.state()?;
        assert!(state.iter().any(|(k, _)| k.starts_with("queue0")));
        let v = random_views(2, 8, 2)?;
        // Still epoch 0 (4 steps an epoch): the queue is not read yet.
        let l2 = m.step(&v, &batch(8), ctx(2))?.loss.to_scalar::<f32>()?;
        assert_eq!(l2, fresh(2)?);
        // Epoch 1: the codes balance over the queue's rows too.
        let l4 = m.step(&v, &batch(8), ctx(4))?.loss.to_scalar::<f32>()?;
        assert_ne!(l4, fresh(4)?);
        Ok(())
    }

    #[test]
    fn a_queue_that_is_not_a_multiple_of_the_batch_is_refused() {
        let f = Fixture::new(8);
        let s = SwavSettings {
            queue: 12,
            ..small()
        };
        let e = s.check(&f.env()).unwrap_err();
        assert_eq!(e.key, "queue");
    }
}
