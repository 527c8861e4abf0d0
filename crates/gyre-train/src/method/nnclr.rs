//! NNCLR (Dwibedi et al., ICCV 2021): each view's embedding is replaced by its nearest neighbour
//! in a support set of past embeddings, which becomes the positive of the other view's
//! prediction: `L = ½ L(NN(z1), p2) + ½ L(NN(z2), p1)` with [`nnclr_loss`] (solo-learn's NNCLR).
//! The support set is a FIFO queue of view-1 projections (98,304 rows in the paper, 65,536 in
//! solo-learn; 4096 for FMNIST-20k), noise-initialised like MoCo's queue, read before this batch
//! is enqueued (after the step). The predictor is `Linear – BN – ReLU – Linear` of width
//! `predictor_hidden`.
//!
//! The neighbour is an auto-paired positive, so its class precision is logged exactly as IRC's
//! auto-pair precision: `nn_precision` on step lines, its mean since the last evaluation on kNN
//! lines, over support rows with a label (the noise rows have none).
//!
//! As the IRC pair: both views' online features; the memory keeps `z2`, and an auto-paired
//! positive is one more neighbour-style term `L(m, p2[i])` for the matched entry `m`.

use super::{check, BuildContext, Method, MethodEnv, MethodSettings, Online, SettingsError};
use crate::bank::{FifoBank, NO_LABEL};
use crate::step::{PairHooks, StepContext, StepOutput};
use gyre_data::Batch;
use gyre_encoders::{Backbone, ParamStore, ProjectionHead};
use gyre_kernels::{Result, Tensor};
use gyre_losses::{l2_normalize, nearest_neighbours, nnclr_loss};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `[method] name = "nnclr"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NnclrSettings {
    /// τ of the loss (0.1 in the paper).
    pub temperature: f64,
    /// Rows of the support set (a multiple of the batch size).
    pub queue: usize,
    /// Hidden width of the predictor; default `head.hidden`.
    pub predictor_hidden: Option<usize>,
}

impl Default for NnclrSettings {
    fn default() -> Self {
        Self {
            temperature: 0.1,
            queue: 98_304,
            predictor_hidden: None,
        }
    }
}

impl MethodSettings for NnclrSettings {
    const NAME: &'static str = "nnclr";

    fn resolve(&mut self, env: &MethodEnv) {
        self.predictor_hidden.get_or_insert(env.head.hidden);
    }

    fn check(&self, env: &MethodEnv) -> std::result::Result<(), SettingsError> {
        check::positive("temperature", self.temperature)?;
        check::width("predictor_hidden", self.predictor_hidden.unwrap_or(1))?;
        check::queue("queue", self.queue, env.batch_size)
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Method>> {
        let mut o = Online::new(ctx)?;
        let hidden = self.predictor_hidden.unwrap_or(o.head_cfg.hidden);
        let predictor = o.predictor(hidden, ctx)?;
        Ok(Box::new(Nnclr {
            support: FifoBank::with_noise(self.queue, &[o.head_cfg.output], ctx.env.seed),
            backbone: o.backbone,
            projector: o.head,
            predictor,
            pending: None,
            tau: self.temperature,
            tally: (0, 0),
            params: o.params,
        }))
    }
}

pub struct Nnclr {
    backbone: Backbone,
    projector: ProjectionHead,
    predictor: ProjectionHead,
    /// The support set: view-1 projections (normalised) and their labels (diagnostics only).
    support: FifoBank,
    pending: Option<(Tensor, Option<Vec<u32>>)>,
    tau: f64,
    /// (labelled neighbours, of them the same class) since the last evaluation.
    tally: (u64, u64),
    params: ParamStore,
}

impl Nnclr {
    /// The support rows nearest to each row of `z`, and their indices.
    fn neighbours(&self, z: &Tensor, support: &Tensor) -> Result<(Tensor, Vec<u32>)> {
        let idx = nearest_neighbours(z, support)?;
        let at = Tensor::from_slice(&idx, idx.len(), z.device())?;
        Ok((support.index_select(&at, 0)?, idx))
    }
}

impl Method for Nnclr {
    fn name(&self) -> &'static str {
        NnclrSettings::NAME
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    fn step(&mut self, views: &[Tensor], batch: &Batch, _ctx: StepContext) -> Result<StepOutput> {
        let support = self.support.field(0, views[0].device())?;
        let f1 = self.backbone.forward_t(&views[0], true)?;
        let f2 = self.backbone.forward_t(&views[1], true)?;
        let z1 = self.projector.forward_t(&f1, true)?;
        let z2 = self.projector.forward_t(&f2, true)?;
        let p1 = self.predictor.forward_t(&z1, true)?;
        let p2 = self.predictor.forward_t(&z2, true)?;
        let (nn1, idx1) = self.neighbours(&z1, &support)?;
        let (nn2, _) = self.neighbours(&z2, &support)?;
        let loss = ((nnclr_loss(&nn1, &p2, self.tau)? + nnclr_loss(&nn2, &p1, self.tau)?)? * 0.5)?;
        let mut logs = Vec::new();
        // The neighbours' class precision, as IRC's auto-pair precision: labelled rows only.
        if let Some(labels) = &batch.labels {
            let mem = self.support.labels();
            let (mut labelled, mut correct) = (0u64, 0u64);
            for (i, &j) in idx1.iter().enumerate() {
                let l = mem.get(j as usize).copied().unwrap_or(NO_LABEL);
                if l != NO_LABEL {
                    labelled += 1;
                    correct += u64::from(l == labels[i]);
                }
            }
            if labelled > 0 {
                logs.push(("nn_precision", correct as f64 / labelled as f64));
            }
            self.tally.0 += labelled;
            self.tally.1 += correct;
        }
        self.pending = Some((l2_normalize(&z1.detach())?, batch.labels.clone()));
        let (q, tau) = (p2.clone(), self.tau);
        Ok(StepOutput {
            loss,
            logs,
            embeddings: p1,
            pair: Some(PairHooks {
                view1: f1,
                view2: f2,
                view2_index: 1,
                base_v2: z2,
                keep_base_scale: false,
                pair_loss: Box::new(move |p| nnclr_loss(&p.positives, &p.queries(&q)?, tau)),
                dense: None,
            }),
        })
    }

    fn after_step(&mut self, _ctx: StepContext) -> Result<()> {
        if let Some((z, labels)) = self.pending.take() {
            self.support.push(&[&z], labels.as_deref())?;
        }
        Ok(())
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        self.support.state("support")
    }

    fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        self.support.load_state("support", t)
    }

    fn take_eval_stats(&mut self) -> Option<serde_json::Value> {
        let (labelled, correct) = std::mem::take(&mut self.tally);
        Some(serde_json::json!({
            "nn_pairs": labelled,
            "nn_precision": (labelled > 0).then(|| correct as f64 / labelled as f64),
        }))
    }
}
