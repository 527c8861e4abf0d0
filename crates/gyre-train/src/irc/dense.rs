//! IRC's dense level (`[irc] level = "dense"`): pixel correspondences learned when only the
//! **image-level** pairing is known (Pang et al., TPAMI 2025, application 1; its predecessor
//! CACL, AAAI 2022; `shared/spec/methods.md` §3.2–3.3 item 1).
//!
//! The data pairs each frame `x` with a partner `x⁺`, another frame of its clip
//! (`data.pair_gap`): the base method (MoCo v2, DenseCL — any with a momentum teacher) contrasts
//! view 0 of `x` with view 1, which shows `x⁺` (Task S at image level). The plug-in adds a third
//! view, `a′` (the recipe's last `method.views` entry), another augmentation of `x`. Per pair:
//! - `G_0` = the cycle head's cells of view `a` of `x` (online, with gradient);
//! - `G_1` = the cycle head's cells of `x⁺`: the base's momentum teacher's map through an EMA
//!   copy of the cycle head, detached (`memory = "ema"`, default: the released code's `t′` frame),
//!   or the online backbone and head on `x⁺` with gradient (`memory = "online"`: its `reTSFeat`);
//! - `G_2` = the cycle head's cells of `a′` (online, with gradient).
//!
//! Task S at pixel level closes the walk: `π` sends each cell of `a` to the cell of `a′` that
//! shows the same source point (the two crops' geometry); cells of `a` with no counterpart in
//! `a′` are left out. Task C is the walk `a → x⁺ → a′` (`hops = 3`: `a → x⁺ → x⁺⁺ → a′`, through
//! a second partner `data.pair_gap` beyond the first, shown by the view after `a′`, its middle
//! groups from the same source), one block per image pair (the code's
//! block-diagonal `C`: a walk never leaves its own pair), `L_cyc` the row-weighted mean of the
//! blocks' circulations ([`circulation_loss_blocks`]). The loss gains `λ_c · L_cyc`.
//!
//! Auto-paired dense positives (`auto_pair = true`): each cell of `a` takes its best cell of
//! `x⁺` under the first hop, within its own pair; the top ρ of all the batch's cells by
//! similarity are kept, weighted by the ramp; each kept cell's positive is its match's embedding
//! in a dense head of their own (online on `a`, EMA on `x⁺`'s teacher map), in an InfoNCE at
//! `pair_temperature` against a queue of pooled dense keys (`pair_queue`, DenseCL's negatives).
//!
//! Diagnostics (never a training signal): the pixel-level cycle accuracy, and with the scenes'
//! hidden truth attached ([`DensePlugin::attach_truth`]) the auto-pairs' precision against the
//! true flow (the match within one cell of where the cell's centre really went) and against the
//! class masks (the same class at both cell centres; over all kept pairs, and over those that
//! start on an object), for the kept pairs, and against the flow for all cells.

use super::IrcConfig;
use super::MemoryKind;
use crate::bank::FifoBank;
use crate::ema::EmaTeacher;
use crate::step::{StepContext, StepOutput};
use gyre_data::scenes::SceneTruth;
use gyre_data::{Batch, ViewGeometry};
use gyre_encoders::{Backbone, DenseHead, ParamStore, ProjectionHeadConfig};
use gyre_kernels::candle::bail;
use gyre_kernels::{Device, Result, Tensor};
use gyre_losses::{
    auto_pair_blocks, circulation_loss_blocks, info_nce, l2_normalize, AutoPairOptions,
    CirculationOptions,
};
use std::collections::HashMap;
use std::sync::Arc;

/// Running sums since the last `take_stats`.
#[derive(Debug, Default, Clone)]
struct Tally {
    steps: u64,
    cycle_acc: f64,
    return_prob: f64,
    cells: u64,
    pairs: u64,
    precision: Precision,
}

/// Hits among the checked pairs.
#[derive(Debug, Default, Clone, Copy)]
struct Share {
    hit: u64,
    of: u64,
}

impl Share {
    fn count(&mut self, hit: bool) {
        self.of += 1;
        self.hit += u64::from(hit);
    }

    fn add(&mut self, other: Share) {
        self.hit += other.hit;
        self.of += other.of;
    }

    fn ratio(self) -> Option<f64> {
        (self.of > 0).then(|| self.hit as f64 / self.of as f64)
    }
}

/// The auto-pairs' precision against the hidden truth: kept pairs against the flow, the
/// classes and the object classes; every cell's match against the flow.
#[derive(Debug, Default, Clone, Copy)]
struct Precision {
    flow: Share,
    class: Share,
    object: Share,
    all_flow: Share,
}

impl Precision {
    fn add(&mut self, o: Precision) {
        self.flow.add(o.flow);
        self.class.add(o.class);
        self.object.add(o.object);
        self.all_flow.add(o.all_flow);
    }

    /// `(log key, share)` of each measure.
    fn measures(self) -> [(&'static str, Share); 4] {
        [
            ("irc_pair_precision_flow", self.flow),
            ("irc_pair_precision_class", self.class),
            ("irc_pair_precision_object", self.object),
            ("irc_match_precision_flow", self.all_flow),
        ]
    }
}

/// The EMA copies of the plug-in's heads, run on the teacher's map of `x⁺`.
struct EmaHeads {
    cycle: DenseHead,
    pair: Option<DenseHead>,
    store: ParamStore,
    ema: EmaTeacher,
}

/// The dense level's state: its heads and their EMA copies, its queue, its diagnostics.
pub struct DensePlugin {
    cfg: IrcConfig,
    cycle_head: DenseHead,
    pair_head: Option<DenseHead>,
    ema: EmaHeads,
    queue: Option<FifoBank>,
    pending: Option<Tensor>,
    /// The step's view that shows `a′` (the next one shows `x⁺⁺` of a three-hop walk).
    extra_view: usize,
    hops: usize,
    truth: Option<Arc<SceneTruth>>,
    tally: Tally,
}

/// The cell of a `cells × cells` map over a view of side `size` that shows view point `p`
/// (row, column), also outside the map (negative or past the edge).
fn cell_of(p: [f32; 2], stride: f32) -> (i64, i64) {
    (
        (p[1] / stride).floor() as i64,
        (p[0] / stride).floor() as i64,
    )
}

/// Task S at pixel level for one image: the cells of view `a` (an `h × w` map over `ga`) that
/// show a point of view `a′` (`ga2`), and the cell of `a′` each maps to.
pub fn closure(ga: &ViewGeometry, ga2: &ViewGeometry, h: usize, w: usize) -> (Vec<u32>, Vec<u32>) {
    let stride = ga.size as f32 / w as f32;
    let stride2 = ga2.size as f32 / w as f32;
    let (mut rows, mut pi) = (Vec::new(), Vec::new());
    for r in 0..h {
        for c in 0..w {
            let p = [(c as f32 + 0.5) * stride, (r as f32 + 0.5) * stride];
            let (r2, c2) = cell_of(ga.map_to(ga2, p), stride2);
            if (0..h as i64).contains(&r2) && (0..w as i64).contains(&c2) {
                rows.push((r * w + c) as u32);
                pi.push((r2 as usize * w + c2 as usize) as u32);
            }
        }
    }
    (rows, pi)
}

impl DensePlugin {
    /// A dense level over the maps of `backbone` (its feature width), registering its heads
    /// under `cycle_head.` (and `irc_pair_head.` with auto-pairs) in `params`; `extra_view` is
    /// the view that shows `a′`.
    pub fn new(
        cfg: &IrcConfig,
        backbone: &Backbone,
        extra_view: usize,
        seed: u64,
        device: &Device,
        params: &mut ParamStore,
    ) -> anyhow::Result<Self> {
        let head_cfg =
            ProjectionHeadConfig::new(backbone.feature_dim(), cfg.head_hidden, cfg.head_output);
        let cycle_head = DenseHead::new(head_cfg, seed, "cycle_head", device)?;
        params.extend_prefixed("cycle_head", cycle_head.params());
        let pair_head = if cfg.auto_pair {
            let h = DenseHead::new(head_cfg, seed ^ 0x5a, "irc_pair_head", device)?;
            params.extend_prefixed("irc_pair_head", h.params());
            Some(h)
        } else {
            None
        };
        let copy = |name: &str| DenseHead::new(head_cfg, seed, name, device);
        let ema_cycle = copy("cycle_head")?;
        let ema_pair = pair_head
            .as_ref()
            .map(|_| copy("irc_pair_head"))
            .transpose()?;
        let pair_store = |c: &DenseHead, p: Option<&DenseHead>| {
            let mut s = ParamStore::new();
            s.extend_prefixed("cycle_head", c.params());
            if let Some(p) = p {
                s.extend_prefixed("irc_pair_head", p.params());
            }
            s
        };
        let store = pair_store(&ema_cycle, ema_pair.as_ref());
        let ema = EmaTeacher::new(&pair_store(&cycle_head, pair_head.as_ref()), &store)?;
        let queue = cfg
            .auto_pair
            .then(|| FifoBank::with_noise(cfg.pair_queue_rows(), &[cfg.head_output], seed ^ 0xd3));
        Ok(Self {
            cfg: cfg.clone(),
            cycle_head,
            pair_head,
            ema: EmaHeads {
                cycle: ema_cycle,
                pair: ema_pair,
                store,
                ema,
            },
            queue,
            pending: None,
            extra_view,
            hops: cfg.dense_hops(),
            truth: None,
            tally: Tally::default(),
        })
    }

    /// The view whose momentum-teacher map the step needs besides the base's: a three-hop
    /// walk's second partner, when its middle groups come from the teacher (`memory = "ema"`).
    pub fn teacher_view(&self) -> Option<usize> {
        (self.hops == 3 && self.cfg.memory_kind() == MemoryKind::Ema).then_some(self.extra_view + 1)
    }

    /// The scenes' hidden masks and flow, for the precision diagnostics only.
    pub fn attach_truth(&mut self, truth: Arc<SceneTruth>) {
        self.truth = Some(truth);
    }

    /// The cycle loss, auto-paired dense positives and diagnostics of one step, added to `out`;
    /// `far_map`: the teacher's map of [`Self::teacher_view`], when it names one.
    pub(super) fn add_to(
        &mut self,
        out: &mut StepOutput,
        backbone: &Backbone,
        views: &[Tensor],
        batch: &Batch,
        ctx: StepContext,
        far_map: Option<Tensor>,
    ) -> Result<()> {
        let Some(pair) = out.pair.take() else {
            bail!("irc: this method exposes no pair of views");
        };
        let Some(hooks) = pair.dense else {
            bail!("irc.level = \"dense\": the method gives no cell maps (it needs a momentum teacher of view 1's partner)");
        };
        // Before the copies' forward pass, with the base teacher's momentum.
        self.ema.ema.update(hooks.momentum)?;
        let base = out.loss.clone();
        out.logs
            .push(("base_loss", base.to_scalar::<f32>()? as f64));
        let map_a = &hooks.view1_map;
        let (b, _, h, w) = map_a.dims4()?;
        let n = h * w;
        let map_a2 = backbone.forward_dense_t(&views[self.extra_view], true)?;
        if map_a2.dims4()? != map_a.dims4()? {
            bail!(
                "irc.level = \"dense\": view a′ gives a {:?} map, view a {:?}; give them one size",
                map_a2.dims(),
                map_a.dims()
            );
        }
        let g0 = l2_normalize(&self.cycle_head.forward_cells(map_a, true)?)?;
        let g2 = l2_normalize(&self.cycle_head.forward_cells(&map_a2, true)?)?;
        // The middle groups: x⁺ (and x⁺⁺ for three hops), from the teacher or online.
        let middle = |teacher_map: Option<&Tensor>, view: usize| -> Result<Tensor> {
            match self.cfg.memory_kind() {
                MemoryKind::Ema => {
                    let Some(map) = teacher_map else {
                        bail!("irc: the method gave no teacher map of view {view}");
                    };
                    Ok(l2_normalize(&self.ema.cycle.forward_cells(map, true)?)?.detach())
                }
                MemoryKind::Online => {
                    let m = backbone.forward_dense_t(&views[view], true)?;
                    l2_normalize(&self.cycle_head.forward_cells(&m, true)?)
                }
            }
        };
        let g1 = middle(Some(&hooks.view2_map), 1)?;
        let g1b = match self.hops {
            3 => Some(middle(far_map.as_ref(), self.extra_view + 1)?),
            _ => None,
        };
        let m = g1.dim(1)?;
        let (geo_a, geo_a2) = (&batch.geometry[0], &batch.geometry[self.extra_view]);
        // Task C closed by Task S, one block per image pair.
        let mut kept: Vec<(Tensor, Vec<u32>)> = Vec::with_capacity(b);
        let mut block_of = Vec::with_capacity(b);
        for k in 0..b {
            let (rows, pi) = closure(&geo_a[k], &geo_a2[k], h, w);
            if rows.is_empty() {
                continue;
            }
            let idx = Tensor::from_slice(&rows, rows.len(), g0.device())?;
            kept.push((g0.get(k)?.index_select(&idx, 0)?, pi));
            block_of.push(k);
        }
        let mut loss = base;
        let cells: usize = kept.iter().map(|(_, pi)| pi.len()).sum();
        if kept.is_empty() {
            // No cell of a is in a′ anywhere in the batch: a zero term, still in the graph.
            loss = (loss + g0.sum_all()?.affine(0.0, 0.0)?)?;
        } else {
            let per_block = |g: &Tensor| -> Result<Vec<Tensor>> {
                block_of.iter().map(|&k| g.get(k)).collect()
            };
            let (g1s, g2s) = (per_block(&g1)?, per_block(&g2)?);
            let g1bs = g1b.as_ref().map(per_block).transpose()?;
            let blocks: Vec<(Vec<&Tensor>, Option<&[u32]>)> = kept
                .iter()
                .enumerate()
                .map(|(i, (g0k, pi))| {
                    let mut groups = vec![g0k, &g1s[i]];
                    if let Some(far) = &g1bs {
                        groups.push(&far[i]);
                    }
                    groups.push(&g2s[i]);
                    (groups, Some(pi.as_slice()))
                })
                .collect();
            let opts = CirculationOptions {
                tau: self.cfg.temperature,
                ..CirculationOptions::default()
            };
            let circ = circulation_loss_blocks(&blocks, opts)?;
            out.logs.extend([
                ("irc_cycle_loss", circ.loss.to_scalar::<f32>()? as f64),
                ("irc_cycle_acc", circ.cycle_accuracy),
                ("irc_return_prob", circ.return_probability),
            ]);
            self.tally.cycle_acc += circ.cycle_accuracy;
            self.tally.return_prob += circ.return_probability;
            loss = (loss + (circ.loss * self.cfg.weight)?)?;
        }
        out.logs.push(("irc_cells", cells as f64 / b as f64));
        self.tally.steps += 1;
        self.tally.cells += cells as u64;
        // Auto-pairs: every cell's best partner cell, sorted by confidence; the top ρ kept.
        let all = auto_pair_blocks(
            &g0,
            &g1,
            ctx.step,
            ctx.total_steps,
            AutoPairOptions {
                keep_fraction: 1.0,
                ramp: self.cfg.ramp,
                top_n: 1,
                balance: None,
            },
        )?;
        let keep = ((self.cfg.keep_fraction * all.query.len() as f64).ceil() as usize)
            .min(all.query.len());
        self.diagnose(out, &all.query, &all.matched, keep, batch, w, n, m);
        if let (Some(head), Some(ema_head), Some(queue)) =
            (&self.pair_head, &self.ema.pair, &self.queue)
        {
            let weight = all.weight * self.cfg.auto_pair_weight;
            out.logs.push(("irc_pair_weight", all.weight));
            let keys = ema_head.forward_cells(&hooks.view2_map, true)?.detach();
            let kd = keys.dim(2)?;
            if weight > 0.0 && keep > 0 {
                let q = head.forward_cells(map_a, true)?;
                let rows = Tensor::from_slice(&all.query[..keep], keep, q.device())?;
                let cols = Tensor::from_slice(&all.matched[..keep], keep, q.device())?;
                let q = q.reshape((b * n, kd))?.index_select(&rows, 0)?;
                let k = keys.reshape((b * m, kd))?.index_select(&cols, 0)?;
                let negatives = queue.field(0, q.device())?;
                let ap = info_nce(&q, &k, &negatives, self.cfg.pair_tau())?;
                out.logs
                    .push(("irc_pair_loss", ap.to_scalar::<f32>()? as f64));
                loss = (loss + (ap * weight)?)?;
            }
            self.pending = Some(l2_normalize(&l2_normalize(&keys)?.mean(1)?)?);
        }
        out.loss = loss;
        Ok(())
    }

    /// The auto-pairs' precision against the hidden truth (when attached and the batch names
    /// the partners): `query`/`matched` are flat cell indices sorted by confidence, the first
    /// `keep` the kept pairs.
    #[allow(clippy::too_many_arguments)]
    fn diagnose(
        &mut self,
        out: &mut StepOutput,
        query: &[u32],
        matched: &[u32],
        keep: usize,
        batch: &Batch,
        w: usize,
        n: usize,
        m: usize,
    ) {
        self.tally.pairs += keep as u64;
        out.logs.push(("irc_pairs", keep as f64));
        let Some(truth) = &self.truth else { return };
        if batch.partners.len() != batch.len() {
            return;
        }
        let (geo_a, geo_p) = (&batch.geometry[0], &batch.geometry[1]);
        // The partner map is square like a's (same pipeline shapes); its side from m cells.
        let side = (m as f64).sqrt().round() as usize;
        let mut step = Precision::default();
        for (rank, (&q, &mt)) in query.iter().zip(matched).enumerate() {
            let (k, i) = (q as usize / n, q as usize % n);
            let j = mt as usize % m;
            let (x, xp) = (batch.indices[k], batch.partners[k]);
            let stride_a = geo_a[k].size as f32 / w as f32;
            let stride_p = geo_p[k].size as f32 / side as f32;
            let src = geo_a[k].cell_centre(i / w, i % w, stride_a);
            let dst = geo_p[k].cell_centre(j / side, j % side, stride_p);
            let kept = rank < keep;
            if let Some(t) = truth.track(x, xp, src) {
                let (r, c) = cell_of(geo_p[k].from_source(t), stride_p);
                let hit = (r - (j / side) as i64).abs() <= 1 && (c - (j % side) as i64).abs() <= 1;
                step.all_flow.count(hit);
                if kept {
                    step.flow.count(hit);
                }
            }
            if kept {
                if let (Some(ca), Some(cb)) = (truth.class_at(x, src), truth.class_at(xp, dst)) {
                    step.class.count(ca == cb);
                    // Objects only (class 0 is the background, most of every frame).
                    if ca != 0 {
                        step.object.count(ca == cb);
                    }
                }
            }
        }
        self.tally.precision.add(step);
        for (key, share) in step.measures() {
            if let Some(r) = share.ratio() {
                out.logs.push((key, r));
            }
        }
    }

    /// Writes the step's pooled dense keys into the queue (after the optimiser step).
    pub(super) fn remember(&mut self) -> Result<()> {
        if let (Some(k), Some(q)) = (self.pending.take(), &mut self.queue) {
            q.push(&[&k], None)?;
        }
        Ok(())
    }

    /// The EMA heads (under `irc.dense_ema`) and the queue (under `irc.pair_queue`).
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut v = crate::ema::copy_state(&self.ema.store, "irc.dense_ema");
        if let Some(q) = &self.queue {
            v.extend(q.state("irc.pair_queue")?);
        }
        Ok(v)
    }

    pub fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        crate::ema::load_copy_state(&self.ema.store, "irc.dense_ema", t)?;
        match &mut self.queue {
            Some(q) => q.load_state("irc.pair_queue", t),
            None => Ok(()),
        }
    }

    /// Means since the last call, for the evaluation log; resets them.
    pub fn take_stats(&mut self) -> serde_json::Value {
        let t = std::mem::take(&mut self.tally);
        let per_step = |x: f64| (t.steps > 0).then(|| x / t.steps as f64);
        let mut v = serde_json::json!({
            "irc_steps": t.steps,
            "irc_cycle_acc": per_step(t.cycle_acc),
            "irc_return_prob": per_step(t.return_prob),
            "irc_cells": t.cells,
            "irc_pairs": t.pairs,
        });
        for (key, share) in t.precision.measures() {
            v[key] = serde_json::json!(share.ratio());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::testing::{batch, ctx, random_views, Fixture};
    use crate::method::Method;
    use gyre_data::scenes::{Clip, Motion};

    fn geo(left: f32, top: f32, side: f32, flip: bool) -> ViewGeometry {
        crate::method::testing::square_view(top, left, side, flip, 64)
    }

    /// Task S at pixel level: the same crop maps each cell to itself; a flip mirrors the
    /// columns; a′ zoomed on the top-left quarter keeps only that quarter's cells of a, each sent
    /// to the cell its centre lands in.
    #[test]
    fn the_closure_follows_the_crops() {
        let whole = geo(0.0, 0.0, 64.0, false);
        let (rows, pi) = closure(&whole, &whole, 16, 16);
        assert_eq!(rows, (0..256).collect::<Vec<u32>>());
        assert_eq!(pi, rows);
        let (rows, pi) = closure(&whole, &geo(0.0, 0.0, 64.0, true), 16, 16);
        assert_eq!(rows.len(), 256);
        for (&i, &j) in rows.iter().zip(&pi) {
            assert_eq!(j, (i / 16) * 16 + 15 - i % 16);
        }
        let (rows, pi) = closure(&whole, &geo(0.0, 0.0, 32.0, false), 16, 16);
        assert_eq!(rows.len(), 64);
        for (&i, &j) in rows.iter().zip(&pi) {
            let (r, c) = (i / 16, i % 16);
            assert!(r < 8 && c < 8);
            // Centre (4c + 2, 4r + 2) shows at (8c + 4, 8r + 4) in a′: cell (2r + 1, 2c + 1).
            assert_eq!(j, (2 * r + 1) * 16 + 2 * c + 1);
        }
        let (rows, _) = closure(&whole, &geo(70.0, 0.0, 32.0, false), 16, 16);
        assert!(rows.is_empty(), "a′ shows none of a");
    }

    fn dense_cfg(auto_pair: bool) -> IrcConfig {
        dense_cfg_with(auto_pair, 2, "ema")
    }

    fn dense_cfg_with(auto_pair: bool, hops: usize, memory: &str) -> IrcConfig {
        let t = format!(
            "level = \"dense\"\nhead_hidden = 16\nhead_output = 8\npair_queue = 16\nauto_pair = {auto_pair}\nramp = 0.0\nhops = {hops}\nmemory = \"{memory}\""
        );
        let cfg = toml::from_str::<IrcConfig>(&t).unwrap().resolved();
        cfg.check(8).unwrap();
        cfg
    }

    fn dense_fixture() -> Fixture {
        let mut f = Fixture::new(8);
        f.encoder.output_stride = Some(4);
        f
    }

    /// MoCo v2 with the dense level (two hops with and without auto-pairs, three hops, an online
    /// middle group): the loss is the base's plus λ_c times the logged cycle loss (plus the
    /// weighted auto-pair term); the EMA heads and the queue are in the state; a method without
    /// cell maps is refused by name.
    #[test]
    fn the_dense_level_adds_its_terms_to_the_base() -> anyhow::Result<()> {
        let f = dense_fixture();
        let entry = crate::method::lookup("mocov2").unwrap();
        let table: toml::Table = toml::from_str("queue = 16").unwrap();
        let settings = entry.resolve(&table, &f.env()).unwrap();
        for (auto_pair, hops, memory) in [
            (false, 2, "ema"),
            (true, 2, "ema"),
            (false, 3, "ema"),
            (false, 3, "online"),
        ] {
            let inner = entry.build(&settings, &f.build_context())?;
            let mut cfg = dense_cfg_with(auto_pair, hops, memory);
            cfg.weight = 0.5;
            let mut irc = super::super::Irc::new(inner, &cfg, 32, 2, 0, &f.device)?;
            let mut b = batch(8);
            b.geometry = vec![vec![ViewGeometry::whole(16); 8]; hops + 1];
            let views = random_views(hops + 1, 8, 4)?;
            let out = irc.step(&views, &b, ctx(2))?;
            let log = |k: &str| out.logs.iter().find(|l| l.0 == k).map(|l| l.1);
            let mut want = log("base_loss").unwrap() + 0.5 * log("irc_cycle_loss").unwrap();
            // Whole views: every cell of a has its counterpart (4×4 cells).
            assert_eq!(log("irc_cells"), Some(16.0));
            assert_eq!(log("irc_pairs"), Some((0.2f64 * 128.0).ceil()));
            if auto_pair {
                want += log("irc_pair_weight").unwrap() * log("irc_pair_loss").unwrap();
            } else {
                assert!(log("irc_pair_loss").is_none());
            }
            let got = out.loss.to_scalar::<f32>()? as f64;
            assert!((got - want).abs() < 1e-4, "{got} vs {want}");
            let state: Vec<String> = irc.state()?.into_iter().map(|(k, _)| k).collect();
            assert!(state
                .iter()
                .any(|k| k.starts_with("irc.dense_ema.cycle_head.")));
            assert_eq!(
                state.iter().any(|k| k.starts_with("irc.pair_queue")),
                auto_pair
            );
            irc.after_step(ctx(2))?;
        }
        let simclr = crate::method::lookup("simclr").unwrap();
        let s = simclr.resolve(&toml::Table::new(), &f.env()).unwrap();
        let inner = simclr.build(&s, &f.build_context())?;
        let mut irc = super::super::Irc::new(inner, &dense_cfg(false), 32, 2, 0, &f.device)?;
        let mut b = batch(8);
        b.geometry = vec![vec![ViewGeometry::whole(16); 8]; 3];
        let e = irc
            .step(&random_views(3, 8, 4)?, &b, ctx(0))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("gives no cell maps"), "{e}");
        Ok(())
    }

    /// The precision diagnostics against a hand-made truth: a still 16-px scene (the true flow
    /// is the identity) whose left half is an object of class 3; whole, unflipped views, 4×4
    /// cells of 4 px. A match to the same cell or a neighbour is right, two cells off is wrong.
    #[test]
    fn auto_pairs_are_scored_against_the_hidden_flow_and_classes() -> anyhow::Result<()> {
        let f = dense_fixture();
        let (size, frames) = (16usize, 2usize);
        let left = |v: u8| -> Vec<u8> {
            (0..frames * size * size)
                .map(|i| if (i % size) < 8 { v } else { 0 })
                .collect()
        };
        let clip = Clip {
            size,
            frames,
            pixels: vec![0; frames * size * size * 3],
            classes: left(3),
            instances: vec![0; frames * size * size],
            motion: Motion {
                background: 0,
                pan: [0.0, 0.0],
                pan_velocity: [0.0, 0.0],
                tracks: vec![],
            },
        };
        let mut p = DensePlugin::new(
            &dense_cfg(false),
            &f.encoder.build(1, 0, &f.device)?,
            2,
            0,
            &f.device,
            &mut ParamStore::new(),
        )?;
        p.attach_truth(Arc::new(SceneTruth::from_clips(&[clip])));
        let mut b = batch(1);
        b.indices = vec![0];
        b.partners = vec![1];
        b.geometry = vec![vec![ViewGeometry::whole(16)]; 3];
        // Cell 0 (row 0, col 0) → 0 (right); 1 → 2 (a neighbour: right); 4 → 6 (two columns
        // off: wrong); 5 → 7 (wrong, and class 3 → background); the first three are kept.
        let query = [0u32, 1, 4, 5];
        let matched = [0u32, 2, 6, 7];
        let mut out = StepOutput {
            loss: Tensor::new(0f32, &f.device)?,
            logs: Vec::new(),
            embeddings: Tensor::zeros((1, 1), gyre_kernels::DType::F32, &f.device)?,
            pair: None,
        };
        p.diagnose(&mut out, &query, &matched, 3, &b, 4, 16, 16);
        let log = |k: &str| out.logs.iter().find(|l| l.0 == k).map(|l| l.1);
        assert_eq!(log("irc_pair_precision_flow"), Some(2.0 / 3.0));
        assert_eq!(log("irc_match_precision_flow"), Some(2.0 / 4.0));
        // Kept: cells 0, 1, 4 (centres x = 2, 6, 2: class 3) matched to x = 2, 10, 10.
        assert_eq!(log("irc_pair_precision_class"), Some(1.0 / 3.0));
        assert_eq!(log("irc_pair_precision_object"), Some(1.0 / 3.0));
        let stats = p.take_stats();
        assert_eq!(stats["irc_pairs"], 3);
        Ok(())
    }

    /// The dense level repeats itself and resumes from its state: a fresh copy given the
    /// parameters and the state (base teacher and queue, EMA heads, pair queue) of a run takes
    /// the same next step.
    #[test]
    fn the_dense_level_repeats_and_resumes_from_its_state() -> anyhow::Result<()> {
        let f = dense_fixture();
        let entry = crate::method::lookup("mocov2").unwrap();
        let table: toml::Table = toml::from_str("queue = 16").unwrap();
        let settings = entry.resolve(&table, &f.env()).unwrap();
        let cfg = dense_cfg(true);
        let build = || -> anyhow::Result<super::super::Irc> {
            let inner = entry.build(&settings, &f.build_context())?;
            super::super::Irc::new(inner, &cfg, 32, 2, 0, &f.device)
        };
        let mut b = batch(8);
        b.geometry = vec![vec![ViewGeometry::whole(16); 8]; 3];
        let run = |m: &mut super::super::Irc, from: u64, to: u64| -> anyhow::Result<Vec<f32>> {
            let mut losses = Vec::new();
            for s in from..to {
                let out = m.step(&random_views(3, 8, s)?, &b, ctx(s))?;
                losses.push(out.loss.to_scalar::<f32>()?);
                let grads = out.loss.backward()?;
                for p in m.params().trainable() {
                    if let Some(g) = grads.get(p.var.as_tensor()) {
                        p.var.set(&(p.var.as_tensor() - (g * 0.05)?)?)?;
                    }
                }
                m.after_step(ctx(s))?;
            }
            Ok(losses)
        };
        let (mut x, mut y) = (build()?, build()?);
        assert_eq!(run(&mut x, 0, 3)?, run(&mut y, 0, 3)?, "repeat");
        let mut z = build()?;
        for (p, q) in x.params().all().iter().zip(z.params().all()) {
            assert_eq!(p.name, q.name);
            q.var.set(&p.var.as_tensor().copy()?)?;
        }
        let state: HashMap<String, Tensor> = x.state()?.into_iter().collect();
        z.load_state(&state)?;
        assert_eq!(run(&mut x, 3, 5)?, run(&mut z, 3, 5)?, "resumed");
        Ok(())
    }
}
