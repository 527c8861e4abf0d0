//! The IRC plug-in: adds an instance-level implicit relation circulation to any two-view method.
//!
//! Task C (no known pairing): view-1 embeddings → a memory of past embeddings → view-2 embeddings.
//! Task S (easy pairing): view 1 and view 2 of one image, so the walk is closed by π = identity.
//! The cycle runs on its own projection head (`cycle_projector`, as the IRC code's `final_cycle`
//! head kept apart from the main one). The memory is a FIFO bank the plug-in keeps (methods with a
//! queue may hand theirs in later); it stores, per past image, its cycle embedding (the walk's
//! middle group), its base-head embedding (for auto-paired positives) and its label (for the
//! auto-pair precision diagnostic only).
//!
//! Per step, with `f` the backbone features of both views (`[2B, F]`):
//! 1. `c = n(cycle_head(f))`; `G_0 = c[..B]`, `G_2 = c[B..]`, `G_1` = the memory's cycle rows
//!    (detached: the memory is never differentiated).
//! 2. `L_cyc = circulation(G_0, G_1, G_2; π = id, τ_c)`; the method adds `λ_c · L_cyc`.
//! 3. Auto-pairing: each view-1 row's best memory entry under `A_0` (the walk's first hop), kept
//!    for the top ρ of the batch by similarity, weight ramped in. Always scored against the labels
//!    (auto-pair precision, a diagnostic); with `auto_pair = true` the method turns the entries'
//!    base embeddings into extra positives (each method documents how).
//! 4. After the loss: the view-2 rows are pushed into the memory.
//!
//! The walk starts once the memory holds one batch; until then the cycle loss is 0.

use crate::bank::{FifoBank, NO_LABEL};
use crate::method::StepContext;
use crate::recipe::IrcConfig;
use gyre_data::Batch;
use gyre_encoders::{ParamStore, ProjectionHead, ProjectionHeadConfig};
use gyre_kernels::{Device, Result, Tensor};
use gyre_losses::{auto_pair, circulation_loss, l2_normalize, AutoPairOptions, CirculationOptions};

/// Auto-paired positives of one step, ready for the base loss.
pub struct AutoPositives {
    /// View-1 rows that get an extra positive.
    pub rows: Vec<u32>,
    /// Their positives: the matched memory entries' base embeddings, `[rows, D]`, detached.
    pub positives: Tensor,
    /// The ramp weight times `auto_pair_weight`.
    pub weight: f64,
}

impl AutoPositives {
    /// The paired rows of `x` (the batch's view-1 embeddings, `[B, D]`), aligned with
    /// `positives`: the queries of a method's pair loss.
    pub fn queries(&self, x: &Tensor) -> Result<Tensor> {
        let rows = Tensor::from_slice(&self.rows, self.rows.len(), x.device())?;
        x.index_select(&rows, 0)
    }
}

/// What the plug-in adds to one step.
pub struct IrcStep {
    /// `λ_c · L_cyc` (a zero scalar while the memory fills).
    pub loss: Tensor,
    /// Auto-paired positives, when on and the memory is ready.
    pub positives: Option<AutoPositives>,
    /// Scalars for the step log (`irc_cycle_loss`, `irc_cycle_acc`, …).
    pub logs: Vec<(&'static str, f64)>,
}

/// Running means since the last `take_stats`.
#[derive(Debug, Default, Clone)]
struct Tally {
    steps: u64,
    cycle_acc: f64,
    return_prob: f64,
    pairs: u64,
    pairs_labelled: u64,
    pairs_correct: u64,
}

/// The plug-in's state: its head, its memory and its diagnostics.
pub struct IrcPlugin {
    cfg: IrcConfig,
    head: ProjectionHead,
    bank: FifoBank,
    tally: Tally,
}

impl IrcPlugin {
    /// A plug-in over backbone features of width `feature_dim`, for a base head of width
    /// `base_dim`; registers its head under `cycle_projector.` in `params`.
    pub fn new(
        cfg: &IrcConfig,
        feature_dim: usize,
        base_dim: usize,
        seed: u64,
        device: &Device,
        params: &mut ParamStore,
    ) -> Result<Self> {
        let head = ProjectionHead::new(
            ProjectionHeadConfig::new(feature_dim, cfg.head_hidden, cfg.head_output),
            seed,
            "cycle_projector",
            device,
        )?;
        params.extend_prefixed("cycle_projector", head.params());
        Ok(Self {
            cfg: cfg.clone(),
            head,
            bank: FifoBank::new(cfg.memory, &[cfg.head_output, base_dim]),
            tally: Tally::default(),
        })
    }

    /// One step: `features` are both views' backbone features (`[2B, F]`, view 1 first, with
    /// gradient); `labels` the batch's labels (diagnostics only); `step` of `total` sets the
    /// ramp. Also returns the view-2 cycle embeddings (detached): hand them to
    /// [`Self::remember`] after the loss is built.
    pub fn step(
        &mut self,
        features: &Tensor,
        labels: Option<&[u32]>,
        step: u64,
        total: u64,
    ) -> Result<(IrcStep, Tensor)> {
        let b = features.dim(0)? / 2;
        let c = l2_normalize(&self.head.forward_t(features, true)?)?;
        let (g0, g2) = (c.narrow(0, 0, b)?, c.narrow(0, b, b)?);
        if self.bank.len() < b {
            return Ok((
                IrcStep {
                    loss: features.sum_all()?.affine(0.0, 0.0)?,
                    positives: None,
                    logs: vec![],
                },
                g2.detach(),
            ));
        }
        let memory = self.bank.field(0, features.device())?;
        let opts = CirculationOptions {
            tau: self.cfg.temperature,
            ..CirculationOptions::default()
        };
        let circ = circulation_loss(&[&g0, &memory, &g2], None, opts)?;
        let cyc = circ.loss.to_scalar::<f32>()? as f64;
        let mut logs = vec![
            ("irc_cycle_loss", cyc),
            ("irc_cycle_acc", circ.cycle_accuracy),
            ("irc_return_prob", circ.return_probability),
        ];
        self.tally.steps += 1;
        self.tally.cycle_acc += circ.cycle_accuracy;
        self.tally.return_prob += circ.return_probability;
        // Auto-pairs are always found and scored (the precision diagnostic); they enter the loss
        // only with `auto_pair = true`.
        let pairs = auto_pair(
            &g0,
            &memory,
            step,
            total,
            AutoPairOptions {
                keep_fraction: self.cfg.keep_fraction,
                ramp: self.cfg.ramp,
                top_n: self.cfg.top_n,
            },
        )?;
        let (mut labelled, mut correct) = (0u64, 0u64);
        if let Some(lab) = labels {
            let mem = self.bank.labels();
            for (q, m) in pairs.query.iter().zip(pairs.top1()) {
                let ml = mem[m as usize];
                if ml != NO_LABEL {
                    labelled += 1;
                    correct += u64::from(ml == lab[*q as usize]);
                }
            }
        }
        self.tally.pairs += pairs.query.len() as u64;
        self.tally.pairs_labelled += labelled;
        self.tally.pairs_correct += correct;
        if labelled > 0 {
            logs.push(("irc_pair_precision", correct as f64 / labelled as f64));
        }
        let positives = if self.cfg.auto_pair {
            logs.push(("irc_pair_weight", pairs.weight));
            let base = self.bank.field(1, features.device())?;
            Some(AutoPositives {
                positives: pairs.matched_features(&base)?,
                rows: pairs.query,
                weight: pairs.weight * self.cfg.auto_pair_weight,
            })
        } else {
            None
        };
        let loss = (circ.loss * self.cfg.weight)?;
        Ok((
            IrcStep {
                loss,
                positives,
                logs,
            },
            g2.detach(),
        ))
    }

    /// The whole plug-in inside a method's step: runs [`Self::step`] on `features` (`[2B, F]`,
    /// view 1 first), adds `λ_c · L_cyc` to `base`, adds `weight · pair_loss(positives)` when
    /// auto-pairs are on and found (each method says what its pair loss is: `rows` index its
    /// view-1 embeddings — [`AutoPositives::queries`] — and `positives` are their matched memory
    /// entries), remembers the batch (`base_v2`: the view-2 base embeddings) and appends the
    /// diagnostics to `logs`.
    #[allow(clippy::too_many_arguments)]
    pub fn add_to(
        &mut self,
        base: Tensor,
        features: &Tensor,
        base_v2: &Tensor,
        batch: &Batch,
        ctx: StepContext,
        logs: &mut Vec<(&'static str, f64)>,
        pair_loss: impl FnOnce(&AutoPositives) -> Result<Tensor>,
    ) -> Result<Tensor> {
        logs.push(("base_loss", base.to_scalar::<f32>()? as f64));
        let labels = batch.labels.as_deref();
        let (s, cycle_v2) = self.step(features, labels, ctx.step, ctx.total_steps)?;
        let mut loss = (base + s.loss)?;
        if let Some(p) = s.positives.filter(|p| p.weight > 0.0 && !p.rows.is_empty()) {
            let ap = pair_loss(&p)?;
            logs.push(("irc_pair_loss", ap.to_scalar::<f32>()? as f64));
            loss = (loss + (ap * p.weight)?)?;
        }
        self.remember(&cycle_v2, base_v2, labels)?;
        logs.extend(s.logs);
        Ok(loss)
    }

    /// Pushes one batch into the memory: its view-2 cycle embeddings (from [`Self::step`]), its
    /// view-2 base embeddings (`[B, base_dim]`, normalised here; the bank checks the width) and
    /// labels.
    pub fn remember(
        &mut self,
        cycle_v2: &Tensor,
        base_v2: &Tensor,
        labels: Option<&[u32]>,
    ) -> Result<()> {
        let base = l2_normalize(&base_v2.detach())?;
        self.bank.push(&[cycle_v2, &base], labels)
    }

    /// The plug-in's memory as named tensors under `irc.memory` (its head is in the params).
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        self.bank.state("irc.memory")
    }

    pub fn load_state(&mut self, t: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        self.bank.load_state("irc.memory", t)
    }

    /// Means since the last call (cycle accuracy, return probability, auto-pair precision), for
    /// the evaluation log; resets them.
    pub fn take_stats(&mut self) -> serde_json::Value {
        let t = std::mem::take(&mut self.tally);
        let mean = |x: f64| {
            if t.steps > 0 {
                Some(x / t.steps as f64)
            } else {
                None
            }
        };
        serde_json::json!({
            "irc_steps": t.steps,
            "irc_cycle_acc": mean(t.cycle_acc),
            "irc_return_prob": mean(t.return_prob),
            "irc_pairs": t.pairs,
            "irc_pair_precision": if t.pairs_labelled > 0 {
                Some(t.pairs_correct as f64 / t.pairs_labelled as f64)
            } else {
                None
            },
        })
    }
}
