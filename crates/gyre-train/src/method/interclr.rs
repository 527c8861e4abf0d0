//! InterCLR (Xie et al., IJCV 2022): MoCo v2's intra-image term plus an inter-image term over a
//! dataset-sized memory bank whose rows carry online k-means labels ([`ClusterBank`]).
//! `L = intra_weight·L_intra + inter_weight·L_inter` (0.75 and 0.25):
//! - `L_intra` = [`info_nce`] (query view 1, momentum key view 2, the queue; T = 0.2);
//! - `L_inter` = [`inter_loss`]: the positive is a bank row drawn uniformly from the query's
//!   cluster, with the cosine `margin` (−0.5) subtracted; the negatives are `negatives` rows drawn
//!   from the `pool` most similar bank rows with other labels; same T.
//!
//! For the first `kmeans_warmup_epochs` (1) the loss is `L_intra` alone while the bank fills with
//! keys; then k-means (`clusters`, cosine, 20 Lloyd rounds) labels the bank and the inter term
//! starts [P] (the reference initialises from a feature pass of the initial network instead; on
//! a small dataset one epoch of keys is cheaper and closer to the trained encoder). After each
//! step: enqueue the keys, write them into the bank at their dataset indices, relabel, refresh
//! centroids every `centroid_every` steps and keep every cluster at `min_cluster` members or more.
//! Rows the warm-up epoch never visits (a dropped last partial batch) keep their noise.
//!
//! With `[irc]`: the walk runs the query's online features → the plug-in's memory (its own FIFO,
//! not the dataset-sized bank) → the key view's teacher features; the memory's base entries are
//! the keys, and an auto-paired positive is one more intra-branch InfoNCE positive against the
//! queue at T (as MoCo v2).

use super::{Method, Online, StepContext, StepOutput};
use crate::bank::FifoBank;
use crate::cluster_bank::ClusterBank;
use crate::irc::IrcPlugin;
use crate::recipe::Recipe;
use crate::teacher::MomentumEncoder;
use gyre_data::Batch;
use gyre_encoders::{ParamStore, ProjectionHead, ResNet};
use gyre_kernels::{Device, Result, Tensor};
use gyre_losses::{info_nce, inter_loss, l2_normalize};
use std::collections::HashMap;

pub struct InterClr {
    backbone: ResNet,
    head: ProjectionHead,
    teacher: MomentumEncoder,
    queue: FifoBank,
    memory: ClusterBank,
    pending: Option<(Tensor, Vec<usize>)>,
    irc: Option<IrcPlugin>,
    tau: f64,
    intra_weight: f64,
    inter_weight: f64,
    margin: f64,
    pool: usize,
    negatives: usize,
    kmeans_warmup_epochs: usize,
    params: ParamStore,
}

impl InterClr {
    /// `dataset_len` sizes the memory bank (one row per pretraining image).
    pub fn new(
        recipe: &Recipe,
        in_channels: usize,
        dataset_len: usize,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let m = &recipe.method;
        let mut o = Online::new(recipe, in_channels, device)?;
        let teacher = o.teacher(recipe, None, true, device)?;
        let irc = o.irc(recipe, device)?;
        let clusters = m.clusters.unwrap_or(100);
        let min_cluster = m.min_cluster.unwrap_or(20);
        if clusters * min_cluster > dataset_len {
            anyhow::bail!(
                "method.clusters: {clusters} clusters of at least {min_cluster} (method.min_cluster) need {} images, the dataset has {dataset_len}",
                clusters * min_cluster
            );
        }
        let memory = ClusterBank::new(
            dataset_len,
            o.head_cfg.output,
            clusters,
            min_cluster,
            m.centroid_every.unwrap_or(10),
            recipe.seed,
        );
        Ok(Self {
            queue: FifoBank::with_noise(m.queue.unwrap_or(4096), &[o.head_cfg.output], recipe.seed),
            backbone: o.backbone,
            head: o.head,
            teacher,
            memory,
            pending: None,
            irc,
            tau: m.temperature.unwrap_or(0.2),
            intra_weight: m.intra_weight.unwrap_or(0.75),
            inter_weight: m.inter_weight.unwrap_or(0.25),
            margin: m.margin.unwrap_or(-0.5),
            pool: m.pool.unwrap_or(10000),
            negatives: m.negatives.unwrap_or(4096),
            kmeans_warmup_epochs: m.kmeans_warmup_epochs.unwrap_or(1),
            params: o.params,
        })
    }
}

impl Method for InterClr {
    fn name(&self) -> &'static str {
        "interclr"
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn backbone(&self) -> &ResNet {
        &self.backbone
    }

    fn step(&mut self, views: &[Tensor], batch: &Batch, ctx: StepContext) -> Result<StepOutput> {
        self.teacher.update(ctx)?;
        let dev = views[0].device();
        let queue = self.queue.field(0, dev)?;
        let f_q = self.backbone.forward_t(&views[0], true)?;
        let q = self.head.forward_t(&f_q, true)?;
        let key = self.teacher.encode(&views[1], ctx, 1)?;
        let k = key.embeddings.clone();
        let intra = info_nce(&q, &k, &queue, self.tau)?;
        let mut logs = vec![
            ("momentum", self.teacher.last_momentum),
            ("label_change", self.memory.change_ratio),
        ];
        let mut loss = if self.memory.ready {
            let (n, d) = (self.memory.len(), self.memory.dim());
            let bank = Tensor::from_slice(self.memory.rows(), (n, d), dev)?;
            let sims = l2_normalize(&q.detach())?
                .matmul(&bank.t()?)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let (pos, neg) =
                self.memory
                    .sample(&sims, &batch.indices, self.pool, self.negatives, ctx.step);
            let inter = inter_loss(&q, &bank, &pos, &neg, self.margin, self.tau)?;
            logs.push(("intra_loss", intra.to_scalar::<f32>()? as f64));
            logs.push(("inter_loss", inter.to_scalar::<f32>()? as f64));
            ((intra * self.intra_weight)? + (inter * self.inter_weight)?)?
        } else {
            intra
        };
        if let Some(irc) = self.irc.as_mut() {
            let f = Tensor::cat(&[&f_q, &key.features], 0)?;
            let tau = self.tau;
            loss = irc.add_to(loss, &f, &k, batch, ctx, &mut logs, |p| {
                info_nce(&p.queries(&q)?, &p.positives, &queue, tau)
            })?;
        }
        self.pending = Some((l2_normalize(&k)?, batch.indices.clone()));
        Ok(StepOutput {
            loss,
            logs,
            embeddings: q,
        })
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut v = self.teacher.state();
        v.extend(self.queue.state("queue")?);
        v.extend(self.memory.state("memory")?);
        if let Some(irc) = &self.irc {
            v.extend(irc.state()?);
        }
        Ok(v)
    }

    fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        self.teacher.load_state(t)?;
        self.queue.load_state("queue", t)?;
        self.memory.load_state("memory", t)?;
        match self.irc.as_mut() {
            Some(irc) => irc.load_state(t),
            None => Ok(()),
        }
    }

    fn after_step(&mut self, ctx: StepContext) -> Result<()> {
        if let Some((k, idx)) = self.pending.take() {
            self.queue.push(&[&k], None)?;
            let rows = k.flatten_all()?.to_vec1::<f32>()?;
            self.memory.update(&idx, &rows, ctx.step);
        }
        let done = (ctx.step + 1) as f64 / ctx.steps_per_epoch.max(1) as f64;
        if !self.memory.ready && done >= self.kmeans_warmup_epochs as f64 {
            self.memory.init_kmeans(20);
        }
        Ok(())
    }

    fn take_eval_stats(&mut self) -> Option<serde_json::Value> {
        let sizes = self.memory.sizes();
        let mut v = serde_json::json!({
            "clusters_min_size": sizes.iter().min(),
            "clusters_max_size": sizes.iter().max(),
        });
        if let (Some(irc), Some(o)) = (self.irc.as_mut(), v.as_object_mut()) {
            if let serde_json::Value::Object(stats) = irc.take_stats() {
                o.extend(stats);
            }
        }
        Some(v)
    }
}
