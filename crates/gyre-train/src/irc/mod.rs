//! The IRC plug-in (`[irc]`): an implicit relation circulation added to any two-view method by
//! one wrapper, [`Irc`], around the method — at instance level (this module: images walk through
//! a memory of past images) or at pixel level (`level = "dense"`, [`dense`]: the cells of one
//! frame walk through the cells of an image-level partner frame). Every method exposes its Task S
//! pair ([`PairHooks`]: both views' backbone features, the view-2 embeddings to remember, and
//! its own loss for extra positives); no method holds IRC state, checkpoint or statistics code.
//!
//! Task C (no known pairing): view-1 embeddings → a memory of past embeddings → view-2 embeddings.
//! Task S (easy pairing): view 1 and view 2 of one image, so the walk is closed by π = identity.
//! The cycle runs on its own projection head (`cycle_projector`, as the IRC code's `final_cycle`
//! head kept apart from the main one). The memory (the walk's middle group) is a FIFO that stores,
//! per past image, its cycle embedding, its base-head embedding (for auto-paired positives) and
//! its label (for the auto-pair precision diagnostic only). Its cycle rows come from
//! - `memory = "online"`: the online cycle embeddings of view 2 (detached), or
//! - `memory = "ema"`: an EMA copy of the backbone and the cycle head (momentum
//!   `memory_momentum`, 0.999 as the released IRC code's memory encoder), updated before its
//!   forward pass of view 2's images each step.
//!
//! Per step, with `f` the backbone features of both views (`[2B, F]`):
//! 1. `c = n(cycle_head(f))`; `G_0 = c[..B]`, `G_2 = c[B..]`, `G_1` = the memory's cycle rows
//!    (detached: the memory is never differentiated).
//! 2. `L_cyc = circulation(G_0, G_1, G_2; π = id, τ_c)`; the loss gains `λ_c · L_cyc`.
//! 3. Auto-pairing: each view-1 row's best memory entry under `A_0` (the walk's first hop), kept
//!    for the top ρ of the batch by similarity, weight ramped in. Always scored against the labels
//!    (auto-pair precision, a diagnostic); with `auto_pair = true` the method's pair loss turns
//!    the entries' base embeddings into extra positives.
//! 4. After the optimiser step (with the method's own queue writes): the batch enters the memory.
//!
//! The walk starts once the memory holds one batch; until then the cycle loss is 0.

pub mod dense;
pub mod language;

use crate::bank::{FifoBank, NO_LABEL};
use crate::ema::EmaTeacher;
use crate::method::Method;
use crate::step::{AutoPositives, StepContext, StepOutput};
use gyre_data::Batch;
use gyre_encoders::{Backbone, ParamStore, ProjectionHead, ProjectionHeadConfig};
use gyre_kernels::{Device, Result, Tensor};
use gyre_losses::{auto_pair, circulation_loss, l2_normalize, AutoPairOptions, CirculationOptions};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Where the memory's cycle rows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryKind {
    /// The online cycle embeddings of view 2, detached.
    Online,
    /// An EMA copy of the backbone and cycle head, run on view 2's images.
    Ema,
}

/// `irc.memory`: `"online"`, `"ema"`, or a number — shorthand for an online memory of that many
/// rows (`irc.memory_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryChoice {
    Rows(usize),
    Kind(MemoryKind),
}

impl Serialize for MemoryChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            MemoryChoice::Rows(n) => s.serialize_u64(*n as u64),
            MemoryChoice::Kind(k) => k.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for MemoryChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = MemoryChoice;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"online\", \"ema\", or a number of rows")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
                usize::try_from(v)
                    .map(MemoryChoice::Rows)
                    .map_err(|_| E::custom(format!("{v} rows is too many")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Self::Value, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("expected a number of rows, got {v}")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<Self::Value, E> {
                match v {
                    "online" => Ok(MemoryChoice::Kind(MemoryKind::Online)),
                    "ema" => Ok(MemoryChoice::Kind(MemoryKind::Ema)),
                    _ => Err(E::custom(format!(
                        "expected \"online\", \"ema\" or a number of rows, got \"{v}\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// What the walk's groups are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IrcLevel {
    /// Images: view 1 → a memory of past images → view 2 (this module).
    #[default]
    Instance,
    /// Pixels: the cells of view a of a frame → the cells of its image-level partner → the cells
    /// of view a′ of the frame ([`dense`]); needs frame pairs (`data.pair_gap`).
    Dense,
    /// Images and unpaired texts: view 1 → texts of a corpus → view 2 ([`language`]); needs a
    /// `[text]` section.
    Language,
}

/// The `[irc]` section; absent = off. See docs/methods.md.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrcConfig {
    /// Instance (default) or dense.
    #[serde(default)]
    pub level: IrcLevel,
    /// λ_c, the weight of the circulation loss.
    #[serde(default = "d_irc_weight")]
    pub weight: f64,
    /// τ_c of both hops of the walk.
    #[serde(default = "d_irc_tau")]
    pub temperature: f64,
    /// The middle group's source: `"online"` or `"ema"` (see the module doc; default online at
    /// instance level, ema at dense level); a number is the older shorthand for an online memory
    /// of that many rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryChoice>,
    /// K, rows of the memory the walk crosses; default 4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_size: Option<usize>,
    /// Momentum of the EMA memory encoder (`memory = "ema"`).
    #[serde(default = "d_irc_memory_momentum")]
    pub memory_momentum: f64,
    /// The cycle's own projection head (kept apart from the base head, as the IRC code's
    /// `final_cycle`).
    #[serde(default = "d_irc_hidden")]
    pub head_hidden: usize,
    #[serde(default = "d_irc_out")]
    pub head_output: usize,
    /// Add auto-paired positives to the base loss.
    #[serde(default)]
    pub auto_pair: bool,
    /// Weight of the auto-paired term (before the ramp).
    #[serde(default = "d_irc_weight")]
    pub auto_pair_weight: f64,
    /// ρ: fraction of each batch's rows (most confident matches) that get an auto-paired positive.
    #[serde(default = "d_irc_keep")]
    pub keep_fraction: f64,
    /// Fraction of training over which the auto-pair weight ramps from 0 to 1.
    #[serde(default = "d_irc_ramp")]
    pub ramp: f64,
    /// Memory entries averaged per match (1: top-1).
    #[serde(default = "d_irc_top_n")]
    pub top_n: usize,
    /// Auto-pairs from Sinkhorn-balanced similarities (SwAV's equipartition, ε 0.05, 3
    /// iterations; [`gyre_losses::Balance`]) instead of each row's raw top-1, so that no memory
    /// entry or text takes every query (instance and language levels).
    #[serde(default)]
    pub balance: bool,
    /// Dense level: τ of the auto-paired dense InfoNCE (default 0.2, DenseCL's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair_temperature: Option<f64>,
    /// Dense level: rows of its queue of pooled dense keys, the InfoNCE's negatives (default
    /// 4096; a multiple of the batch size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair_queue: Option<usize>,
    /// Dense level: hops of the walk — 2 (`a → x⁺ → a′`, default) or 3 (`a → x⁺ → x⁺⁺ → a′`
    /// through two partner frames, the second `data.pair_gap` beyond the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hops: Option<usize>,
    /// Language level: M, the corpus texts the walk crosses each step (default 4096; the whole
    /// corpus when it is smaller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_sample: Option<usize>,
}
fn d_irc_weight() -> f64 {
    1.0
}
fn d_irc_tau() -> f64 {
    0.1
}
fn d_irc_memory_momentum() -> f64 {
    0.999
}
fn d_irc_hidden() -> usize {
    512
}
fn d_irc_out() -> usize {
    128
}
fn d_irc_keep() -> f64 {
    0.2
}
fn d_irc_ramp() -> f64 {
    0.1
}
fn d_irc_top_n() -> usize {
    1
}

/// Rows of the memory when neither `memory` (a number) nor `memory_size` says.
pub const DEFAULT_MEMORY_ROWS: usize = 4096;

impl IrcConfig {
    pub fn memory_kind(&self) -> MemoryKind {
        match self.memory {
            Some(MemoryChoice::Rows(_)) => MemoryKind::Online,
            Some(MemoryChoice::Kind(k)) => k,
            None if self.level == IrcLevel::Dense => MemoryKind::Ema,
            None => MemoryKind::Online,
        }
    }

    /// K, the memory's rows.
    pub fn memory_rows(&self) -> usize {
        match self.memory {
            Some(MemoryChoice::Rows(n)) => n,
            _ => self.memory_size.unwrap_or(DEFAULT_MEMORY_ROWS),
        }
    }

    /// The key that sets the memory's rows, for messages.
    fn rows_key(&self) -> &'static str {
        match self.memory {
            Some(MemoryChoice::Rows(_)) => "irc.memory",
            _ => "irc.memory_size",
        }
    }

    /// τ of the dense level's auto-paired InfoNCE (default 0.2, DenseCL's) or of the language
    /// level's image–text InfoNCE (default 0.1).
    pub fn pair_tau(&self) -> f64 {
        let default = if self.level == IrcLevel::Language {
            0.1
        } else {
            0.2
        };
        self.pair_temperature.unwrap_or(default)
    }

    /// M, the language level's texts per step.
    pub fn texts_per_step(&self) -> usize {
        self.text_sample.unwrap_or(DEFAULT_MEMORY_ROWS)
    }

    /// Rows of the dense level's queue.
    pub fn pair_queue_rows(&self) -> usize {
        self.pair_queue.unwrap_or(DEFAULT_MEMORY_ROWS)
    }

    /// Hops of the dense level's walk.
    pub fn dense_hops(&self) -> usize {
        self.hops.unwrap_or(2)
    }

    /// Partner frames the data must link to each frame: 1, or 2 for a three-hop dense walk.
    pub fn partner_links(&self) -> usize {
        match self.level {
            IrcLevel::Dense => self.dense_hops().saturating_sub(1).max(1),
            IrcLevel::Instance | IrcLevel::Language => 1,
        }
    }

    /// Views the plug-in adds to the base method's: a′ at dense level, and the second partner
    /// for three hops.
    pub fn extra_views(&self) -> usize {
        match self.level {
            IrcLevel::Dense => self.partner_links(),
            IrcLevel::Instance | IrcLevel::Language => 0,
        }
    }

    /// The resolved form: `memory` names the source; at instance level `memory_size` the rows,
    /// at dense level `pair_temperature` and `pair_queue` their values.
    pub fn resolved(&self) -> Self {
        let memory = Some(MemoryChoice::Kind(self.memory_kind()));
        match self.level {
            IrcLevel::Instance => Self {
                memory,
                memory_size: Some(self.memory_rows()),
                ..self.clone()
            },
            IrcLevel::Dense => Self {
                memory,
                pair_temperature: Some(self.pair_tau()),
                pair_queue: Some(self.pair_queue_rows()),
                hops: Some(self.dense_hops()),
                ..self.clone()
            },
            IrcLevel::Language => Self {
                pair_temperature: Some(self.pair_tau()),
                text_sample: Some(self.texts_per_step()),
                ..self.clone()
            },
        }
    }

    /// Checks every value for batches of `batch_size`; `Err((field, problem))`.
    pub fn check(&self, batch_size: usize) -> std::result::Result<(), (String, String)> {
        let bad = |f: &str, p: String| Err((f.to_string(), p));
        if self.level != IrcLevel::Language && self.text_sample.is_some() {
            return bad(
                "irc.text_sample",
                "only level = \"language\" reads it".into(),
            );
        }
        match self.level {
            IrcLevel::Language => {
                for (key, set) in [
                    ("irc.memory", self.memory.is_some()),
                    ("irc.memory_size", self.memory_size.is_some()),
                    ("irc.hops", self.hops.is_some()),
                    ("irc.pair_queue", self.pair_queue.is_some()),
                ] {
                    if set {
                        return bad(
                            key,
                            "the language level walks through corpus texts (irc.text_sample), not a memory of images".into(),
                        );
                    }
                }
                if self.top_n != 1 {
                    return bad(
                        "irc.top_n",
                        "the language level pairs each image with its top-1 text".into(),
                    );
                }
                let m = self.texts_per_step();
                if m == 0 || m > crate::config::MAX_ROWS {
                    return bad(
                        "irc.text_sample",
                        format!("must be in 1..={}, got {m}", crate::config::MAX_ROWS),
                    );
                }
                if let Some(t) = self
                    .pair_temperature
                    .filter(|t| !(*t > 0.0 && t.is_finite()))
                {
                    return bad(
                        "irc.pair_temperature",
                        format!("must be a positive number, got {t}"),
                    );
                }
            }
            IrcLevel::Dense => {
                if let Some(MemoryChoice::Rows(_)) = self.memory {
                    return bad(
                        "irc.memory",
                        "the dense level walks through the partner frame's cells, not a memory of rows: say \"ema\" or \"online\"".into(),
                    );
                }
                if self.memory_size.is_some() {
                    return bad(
                        "irc.memory_size",
                        "only the instance level has a memory of past images".into(),
                    );
                }
                if self.top_n != 1 {
                    return bad(
                        "irc.top_n",
                        "the dense level pairs each cell with its top-1 partner cell".into(),
                    );
                }
                if self.balance {
                    return bad(
                        "irc.balance",
                        "the dense level matches cells within each image pair; balanced matches are for the instance and language levels".into(),
                    );
                }
                if !(2..=3).contains(&self.dense_hops()) {
                    return bad(
                        "irc.hops",
                        format!("must be 2 or 3, got {}", self.dense_hops()),
                    );
                }
                if let Some(t) = self
                    .pair_temperature
                    .filter(|t| !(*t > 0.0 && t.is_finite()))
                {
                    return bad(
                        "irc.pair_temperature",
                        format!("must be a positive number, got {t}"),
                    );
                }
                let q = self.pair_queue_rows();
                if q == 0 || q > crate::config::MAX_ROWS || !q.is_multiple_of(batch_size.max(1)) {
                    return bad(
                        "irc.pair_queue",
                        format!(
                            "must be a positive multiple of the batch size ({batch_size}) up to {}, got {q}",
                            crate::config::MAX_ROWS
                        ),
                    );
                }
            }
            IrcLevel::Instance => {
                for (key, set) in [
                    ("irc.pair_temperature", self.pair_temperature.is_some()),
                    ("irc.pair_queue", self.pair_queue.is_some()),
                    ("irc.hops", self.hops.is_some()),
                ] {
                    if set {
                        return bad(key, "only level = \"dense\" reads it".into());
                    }
                }
            }
        }
        if let (Some(MemoryChoice::Rows(_)), Some(_)) = (self.memory, self.memory_size) {
            return bad(
                "irc.memory",
                "a number is the online memory's size; with irc.memory_size set, say memory = \"online\" or \"ema\"".into(),
            );
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad(
                "irc.temperature",
                format!("must be a positive number, got {}", self.temperature),
            );
        }
        for (f, v) in [
            ("irc.weight", self.weight),
            ("irc.auto_pair_weight", self.auto_pair_weight),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(f, format!("must be ≥ 0, got {v}"));
            }
        }
        if !(0.0..1.0).contains(&self.memory_momentum) {
            return bad(
                "irc.memory_momentum",
                format!("must be in [0, 1), got {}", self.memory_momentum),
            );
        }
        // The language level has no memory of images (its texts are checked above).
        let rows = (self.level != IrcLevel::Language).then(|| self.memory_rows());
        if let Some(rows) = rows {
            if rows > crate::config::MAX_ROWS {
                return bad(
                    self.rows_key(),
                    format!("must be at most {}, got {rows}", crate::config::MAX_ROWS),
                );
            }
            if rows < batch_size {
                return bad(
                    self.rows_key(),
                    format!("must hold at least one batch ({batch_size}), got {rows}"),
                );
            }
        }
        for (f, v) in [
            ("irc.head_hidden", self.head_hidden),
            ("irc.head_output", self.head_output),
        ] {
            if v == 0 || v > crate::config::MAX_WIDTH {
                return bad(
                    f,
                    format!("must be in 1..={}, got {v}", crate::config::MAX_WIDTH),
                );
            }
        }
        if !(self.keep_fraction > 0.0 && self.keep_fraction <= 1.0) {
            return bad(
                "irc.keep_fraction",
                format!("must be in (0, 1], got {}", self.keep_fraction),
            );
        }
        if !(0.0..=1.0).contains(&self.ramp) {
            return bad("irc.ramp", format!("must be in [0, 1], got {}", self.ramp));
        }
        if self.top_n == 0 || rows.is_some_and(|r| self.top_n > r) {
            return bad(
                "irc.top_n",
                format!("must be in 1..=memory, got {}", self.top_n),
            );
        }
        Ok(())
    }
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

/// The EMA copy of the backbone and cycle head that fills the memory (`memory = "ema"`).
struct MemoryEncoder {
    backbone: Backbone,
    head: ProjectionHead,
    store: ParamStore,
    ema: EmaTeacher,
    momentum: f64,
}

impl MemoryEncoder {
    fn new(
        online: &Backbone,
        cycle_head: &ProjectionHead,
        head_cfg: ProjectionHeadConfig,
        momentum: f64,
        seed: u64,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let backbone = online.fresh(seed, device)?;
        let head = ProjectionHead::new(head_cfg, seed, "cycle_projector", device)?;
        let pair = |b: &Backbone, h: &ProjectionHead| {
            let mut s = ParamStore::new();
            s.extend_prefixed("backbone", b.params());
            s.extend_prefixed("cycle_projector", h.params());
            s
        };
        let store = pair(&backbone, &head);
        let ema = EmaTeacher::new(&pair(online, cycle_head), &store)?;
        Ok(Self {
            backbone,
            head,
            store,
            ema,
            momentum,
        })
    }

    /// `n(head(backbone(x)))`, train-mode BatchNorm (as every momentum encoder), detached.
    fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let f = self.backbone.forward_t(x, true)?.detach();
        l2_normalize(&self.head.forward_t(&f, true)?.detach())
    }
}

/// One batch waiting to enter the memory (after the optimiser step).
struct Pending {
    cycle: Tensor,
    base: Tensor,
    labels: Option<Vec<u32>>,
}

/// The plug-in's state: its head, its memory and its diagnostics.
pub struct IrcPlugin {
    cfg: IrcConfig,
    head: ProjectionHead,
    bank: FifoBank,
    tally: Tally,
    encoder: Option<MemoryEncoder>,
    pending: Option<Pending>,
}

impl IrcPlugin {
    /// A plug-in over the features of `backbone`, for base embeddings of width `base_dim`;
    /// registers its head under `cycle_projector.` in `params`. An EMA memory copies `backbone`
    /// and the new head.
    pub fn new(
        cfg: &IrcConfig,
        backbone: &Backbone,
        base_dim: usize,
        seed: u64,
        device: &Device,
        params: &mut ParamStore,
    ) -> anyhow::Result<Self> {
        let head_cfg =
            ProjectionHeadConfig::new(backbone.feature_dim(), cfg.head_hidden, cfg.head_output);
        let head = ProjectionHead::new(head_cfg, seed, "cycle_projector", device)?;
        params.extend_prefixed("cycle_projector", head.params());
        let encoder = match cfg.memory_kind() {
            MemoryKind::Online => None,
            MemoryKind::Ema => Some(MemoryEncoder::new(
                backbone,
                &head,
                head_cfg,
                cfg.memory_momentum,
                seed,
                device,
            )?),
        };
        Ok(Self {
            bank: FifoBank::new(cfg.memory_rows(), &[cfg.head_output, base_dim]),
            cfg: cfg.clone(),
            head,
            tally: Tally::default(),
            encoder,
            pending: None,
        })
    }

    /// The memory's rows so far: its cycle field and its base field (for tests and diagnostics).
    pub fn memory(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        Ok((self.bank.field(0, device)?, self.bank.field(1, device)?))
    }

    /// The cycle loss, auto-paired positives and diagnostics of one step, added to `out` (the
    /// method's step). `views` are the step's images (an EMA memory encodes view 2's).
    fn add_to(
        &mut self,
        out: &mut StepOutput,
        views: &[Tensor],
        batch: &Batch,
        ctx: StepContext,
    ) -> Result<()> {
        let Some(pair) = out.pair.take() else {
            gyre_kernels::candle::bail!("irc: this method exposes no pair of views");
        };
        if let Some(enc) = &self.encoder {
            // Before its forward pass, as every momentum encoder.
            enc.ema.update(enc.momentum)?;
        }
        let base = out.loss.clone();
        out.logs
            .push(("base_loss", base.to_scalar::<f32>()? as f64));
        let features = Tensor::cat(&[&pair.view1, &pair.view2], 0)?;
        let b = pair.view1.dim(0)?;
        let c = l2_normalize(&self.head.forward_t(&features, true)?)?;
        let (g0, g2) = (c.narrow(0, 0, b)?, c.narrow(0, b, b)?);
        let labels = batch.labels.as_deref();
        if self.bank.len() >= b {
            let memory = self.bank.field(0, features.device())?;
            let opts = CirculationOptions {
                tau: self.cfg.temperature,
                ..CirculationOptions::default()
            };
            let circ = circulation_loss(&[&g0, &memory, &g2], None, opts)?;
            let cyc = circ.loss.to_scalar::<f32>()? as f64;
            out.logs.extend([
                ("irc_cycle_loss", cyc),
                ("irc_cycle_acc", circ.cycle_accuracy),
                ("irc_return_prob", circ.return_probability),
            ]);
            self.tally.steps += 1;
            self.tally.cycle_acc += circ.cycle_accuracy;
            self.tally.return_prob += circ.return_probability;
            // Auto-pairs are always found and scored (the precision diagnostic); they enter the
            // loss only with `auto_pair = true`.
            let pairs = auto_pair(
                &g0,
                &memory,
                ctx.step,
                ctx.total_steps,
                AutoPairOptions {
                    keep_fraction: self.cfg.keep_fraction,
                    ramp: self.cfg.ramp,
                    top_n: self.cfg.top_n,
                    balance: self.cfg.balance.then(gyre_losses::Balance::default),
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
            let mut loss = (base + (circ.loss * self.cfg.weight)?)?;
            if self.cfg.auto_pair {
                out.logs.push(("irc_pair_weight", pairs.weight));
                let positives = AutoPositives {
                    positives: pairs.matched_features(&self.bank.field(1, features.device())?)?,
                    rows: pairs.query,
                    weight: pairs.weight * self.cfg.auto_pair_weight,
                };
                if positives.weight > 0.0 && !positives.rows.is_empty() {
                    let ap = (pair.pair_loss)(&positives)?;
                    out.logs
                        .push(("irc_pair_loss", ap.to_scalar::<f32>()? as f64));
                    loss = (loss + (ap * positives.weight)?)?;
                }
            }
            if labelled > 0 {
                out.logs
                    .push(("irc_pair_precision", correct as f64 / labelled as f64));
            }
            out.loss = loss;
        } else {
            // While the memory fills: a zero cycle loss, still in the graph.
            out.loss = (base + features.sum_all()?.affine(0.0, 0.0)?)?;
        }
        let cycle = match &self.encoder {
            Some(enc) => enc.encode(&views[pair.view2_index])?,
            None => g2.detach(),
        };
        self.pending = Some(Pending {
            cycle,
            base: if pair.keep_base_scale {
                pair.base_v2.detach()
            } else {
                l2_normalize(&pair.base_v2.detach())?
            },
            labels: labels.map(<[u32]>::to_vec),
        });
        Ok(())
    }

    /// Writes the step's batch into the memory (after the optimiser step).
    fn remember(&mut self) -> Result<()> {
        if let Some(p) = self.pending.take() {
            self.bank.push(&[&p.cycle, &p.base], p.labels.as_deref())?;
        }
        Ok(())
    }

    /// The plug-in's memory (under `irc.memory`) and EMA encoder (under `irc.memory_encoder`) as
    /// named tensors; its head is in the params.
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut v = self.bank.state("irc.memory")?;
        if let Some(enc) = &self.encoder {
            v.extend(crate::ema::copy_state(&enc.store, "irc.memory_encoder"));
        }
        Ok(v)
    }

    pub fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        self.bank.load_state("irc.memory", t)?;
        match &self.encoder {
            Some(enc) => crate::ema::load_copy_state(&enc.store, "irc.memory_encoder", t),
            None => Ok(()),
        }
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

/// The plug-in at its level.
enum Plugin {
    Instance(IrcPlugin),
    Dense(dense::DensePlugin),
    Language(language::LanguagePlugin),
}

/// Any method with the IRC plug-in: the method's step, then the cycle (and auto-pairs) on the
/// pair it exposes; the method's state and the plug-in's in one checkpoint; both diagnostics.
pub struct Irc {
    inner: Box<dyn Method>,
    plugin: Plugin,
    params: ParamStore,
}

impl Irc {
    /// Wraps `inner`, whose base embeddings are `base_dim` wide and whose step takes `views`
    /// views (the dense level's `a′` is the next one).
    pub fn new(
        inner: Box<dyn Method>,
        cfg: &IrcConfig,
        base_dim: usize,
        views: usize,
        seed: u64,
        device: &Device,
    ) -> anyhow::Result<Self> {
        Self::with_text(inner, cfg, base_dim, views, seed, device, None)
    }

    /// [`Irc::new`] with the text side the language level walks through.
    pub fn with_text(
        inner: Box<dyn Method>,
        cfg: &IrcConfig,
        base_dim: usize,
        views: usize,
        seed: u64,
        device: &Device,
        text: Option<std::sync::Arc<language::TextSide>>,
    ) -> anyhow::Result<Self> {
        let mut params = ParamStore::new();
        for p in inner.params().all() {
            params.push_renamed(p, &p.name);
        }
        let plugin = match cfg.level {
            IrcLevel::Instance => Plugin::Instance(IrcPlugin::new(
                cfg,
                inner.backbone(),
                base_dim,
                seed,
                device,
                &mut params,
            )?),
            IrcLevel::Dense => Plugin::Dense(dense::DensePlugin::new(
                cfg,
                inner.backbone(),
                views,
                seed,
                device,
                &mut params,
            )?),
            IrcLevel::Language => {
                let text = text.ok_or_else(|| {
                    anyhow::anyhow!("irc.level = \"language\" needs a [text] section")
                })?;
                Plugin::Language(language::LanguagePlugin::new(
                    cfg,
                    inner.backbone(),
                    text,
                    seed,
                    device,
                    &mut params,
                )?)
            }
        };
        Ok(Self {
            inner,
            plugin,
            params,
        })
    }

    /// The instance-level plug-in (`None` at the other levels).
    pub fn plugin(&self) -> Option<&IrcPlugin> {
        match &self.plugin {
            Plugin::Instance(p) => Some(p),
            _ => None,
        }
    }

    /// The language-level plug-in (`None` at the other levels).
    pub fn language(&self) -> Option<&language::LanguagePlugin> {
        match &self.plugin {
            Plugin::Language(p) => Some(p),
            _ => None,
        }
    }
}

impl Method for Irc {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn backbone(&self) -> &Backbone {
        self.inner.backbone()
    }

    fn step(&mut self, views: &[Tensor], batch: &Batch, ctx: StepContext) -> Result<StepOutput> {
        let mut out = self.inner.step(views, batch, ctx)?;
        match &mut self.plugin {
            Plugin::Instance(p) => p.add_to(&mut out, views, batch, ctx)?,
            Plugin::Dense(p) => {
                // A three-hop walk's second partner, through the base's teacher (EMA middle).
                let far = match p.teacher_view() {
                    Some(v) => self.inner.teacher_map(&views[v], ctx)?,
                    None => None,
                };
                p.add_to(&mut out, self.inner.backbone(), views, batch, ctx, far)?
            }
            Plugin::Language(p) => p.add_to(&mut out, ctx)?,
        }
        Ok(out)
    }

    fn after_step(&mut self, ctx: StepContext) -> Result<()> {
        self.inner.after_step(ctx)?;
        match &mut self.plugin {
            Plugin::Instance(p) => p.remember(),
            Plugin::Dense(p) => p.remember(),
            Plugin::Language(_) => Ok(()),
        }
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut v = self.inner.state()?;
        v.extend(match &self.plugin {
            Plugin::Instance(p) => p.state()?,
            Plugin::Dense(p) => p.state()?,
            Plugin::Language(p) => p.state()?,
        });
        Ok(v)
    }

    fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        self.inner.load_state(t)?;
        match &mut self.plugin {
            Plugin::Instance(p) => p.load_state(t),
            Plugin::Dense(p) => p.load_state(t),
            Plugin::Language(p) => p.load_state(t),
        }
    }

    fn attach_truth(&mut self, truth: std::sync::Arc<gyre_data::scenes::SceneTruth>) {
        if let Plugin::Dense(p) = &mut self.plugin {
            p.attach_truth(truth);
        }
    }

    fn take_eval_stats(&mut self) -> Option<serde_json::Value> {
        let mut v = self
            .inner
            .take_eval_stats()
            .unwrap_or_else(|| serde_json::json!({}));
        let stats = match &mut self.plugin {
            Plugin::Instance(p) => p.take_stats(),
            Plugin::Dense(p) => p.take_stats(),
            Plugin::Language(p) => p.take_stats(),
        };
        if let (Some(o), serde_json::Value::Object(irc)) = (v.as_object_mut(), stats) {
            o.extend(irc);
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::testing::{batch, ctx, random_views, Fixture};
    use gyre_encoders::ProjectionHeadConfig;

    fn ema_config() -> IrcConfig {
        let mut cfg: IrcConfig = toml::from_str(
            "memory = \"ema\"\nmemory_size = 32\nmemory_momentum = 0.9\nhead_hidden = 16\nhead_output = 8",
        )
        .unwrap();
        cfg = cfg.resolved();
        cfg
    }

    /// `memory = "ema"`: the rows a step adds to the memory are `n(head(backbone(view 2)))` of an
    /// EMA copy of the backbone and cycle head, `θ_e ← m·θ_e + (1 − m)·θ` with the online weights
    /// before the step, updated before its forward pass — recomputed here from the online
    /// weights alone, on a separate network.
    #[test]
    fn an_ema_memory_holds_the_ema_encoders_outputs() -> anyhow::Result<()> {
        let f = Fixture::new(8);
        let entry = crate::method::lookup("simclr").unwrap();
        let settings = entry.resolve(&toml::Table::new(), &f.env()).unwrap();
        let inner = entry.build(&settings, &f.build_context())?;
        let cfg = ema_config();
        assert_eq!(cfg.memory_kind(), MemoryKind::Ema);
        let mut irc = Irc::new(inner, &cfg, f.head.output, 2, 0, &f.device)?;
        // The independent copy: same architecture, its own tensors.
        let net = irc.backbone().fresh(99, &f.device)?;
        let head_cfg = ProjectionHeadConfig::new(net.feature_dim(), 16, 8);
        let head = ProjectionHead::new(head_cfg, 99, "cycle_projector", &f.device)?;
        let mut copy = ParamStore::new();
        copy.extend_prefixed("backbone", net.params());
        copy.extend_prefixed("cycle_projector", head.params());
        let online: Vec<_> = copy
            .all()
            .iter()
            .map(|p| irc.params().get(&p.name).expect("online twin").clone())
            .collect();
        // θ_e starts as the online weights.
        let mut theta: Vec<Tensor> = online
            .iter()
            .map(|p| p.var.as_tensor().copy().unwrap())
            .collect();
        for s in 0..3u64 {
            let views = random_views(2, 8, 10 + s)?;
            for ((p, o), t) in copy.all().iter().zip(&online).zip(theta.iter_mut()) {
                if p.kind.trains() {
                    *t = ((&*t * 0.9)? + (o.var.as_tensor() * 0.1)?)?;
                }
                p.var.set(t)?;
            }
            let want = l2_normalize(&head.forward_t(&net.forward_t(&views[1], true)?, true)?)?;
            let out = irc.step(&views, &batch(8), ctx(s))?;
            // An optimiser step, so that the online weights move between steps.
            let grads = out.loss.backward()?;
            for p in irc.params().trainable() {
                if let Some(g) = grads.get(p.var.as_tensor()) {
                    p.var.set(&(p.var.as_tensor() - (g * 0.1)?)?)?;
                }
            }
            irc.after_step(ctx(s))?;
            let (rows, _) = irc.plugin().expect("instance level").memory(&f.device)?;
            let got = rows.narrow(0, 8 * s as usize, 8)?;
            let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                diff < 1e-5,
                "step {s}: memory rows differ from the EMA encoder's by {diff}"
            );
        }
        // The EMA encoder is in the checkpoint state.
        let state = irc.state()?;
        assert!(state
            .iter()
            .any(|(k, _)| k == "irc.memory_encoder.backbone.conv1.weight"));
        Ok(())
    }

    /// The memory source and size parse from either form, and bad values are refused by name.
    #[test]
    fn memory_settings_parse_resolve_and_check() {
        let parse = |t: &str| toml::from_str::<IrcConfig>(t);
        let old = parse("memory = 256").unwrap();
        assert_eq!(
            (old.memory_kind(), old.memory_rows()),
            (MemoryKind::Online, 256)
        );
        let r = old.resolved();
        assert_eq!(
            (r.memory, r.memory_size),
            (Some(MemoryChoice::Kind(MemoryKind::Online)), Some(256))
        );
        let ema = parse("memory = \"ema\"").unwrap();
        assert_eq!(
            (ema.memory_kind(), ema.memory_rows()),
            (MemoryKind::Ema, 4096)
        );
        let e = parse("memory = \"fifo\"").unwrap_err().to_string();
        assert!(
            e.contains("expected \"online\", \"ema\" or a number of rows"),
            "{e}"
        );
        let both = parse("memory = 256\nmemory_size = 512").unwrap();
        assert_eq!(both.check(64).unwrap_err().0, "irc.memory");
        let small = parse("memory = \"online\"\nmemory_size = 8").unwrap();
        let (field, problem) = small.check(64).unwrap_err();
        assert_eq!(field, "irc.memory_size");
        assert!(problem.contains("must hold at least one batch (64), got 8"));
        assert_eq!(
            parse("memory_momentum = 1.0")
                .unwrap()
                .check(1)
                .unwrap_err()
                .0,
            "irc.memory_momentum"
        );
    }
}
