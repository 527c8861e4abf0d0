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
//! As the IRC pair: the query's online features and the key view's teacher features (the
//! plug-in keeps its own FIFO, not the dataset-sized bank); the memory keeps the keys, and an
//! auto-paired positive is one more intra-branch InfoNCE positive against the queue at T (as
//! MoCo v2).

use super::{
    check, info_nce_pair, BuildContext, Method, MethodEnv, MethodSettings, Online, SettingsError,
};
use crate::bank::FifoBank;
use crate::cluster_bank::ClusterBank;
use crate::step::{StepContext, StepOutput};
use crate::teacher::MomentumEncoder;
use gyre_data::Batch;
use gyre_encoders::{Backbone, ParamStore, ProjectionHead};
use gyre_kernels::{Result, Tensor};
use gyre_losses::{info_nce, inter_loss, l2_normalize};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `[method] name = "interclr"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InterClrSettings {
    /// T of both terms.
    pub temperature: f64,
    /// K, rows of the intra term's queue.
    pub queue: usize,
    pub momentum: f64,
    pub momentum_final: Option<f64>,
    pub intra_weight: f64,
    pub inter_weight: f64,
    /// Cosine margin on the inter positive.
    pub margin: f64,
    /// Online k-means clusters, their minimum size, and the centroid refresh interval (steps).
    pub clusters: usize,
    pub min_cluster: usize,
    pub centroid_every: usize,
    /// Semi-hard pool size, and negatives drawn from it per query.
    pub pool: usize,
    pub negatives: usize,
    /// Intra-only epochs before the first k-means [P].
    pub kmeans_warmup_epochs: usize,
}

impl Default for InterClrSettings {
    fn default() -> Self {
        Self {
            temperature: 0.2,
            queue: 4096,
            momentum: 0.99,
            momentum_final: None,
            intra_weight: 0.75,
            inter_weight: 0.25,
            margin: -0.5,
            clusters: 100,
            min_cluster: 20,
            centroid_every: 10,
            pool: 10000,
            negatives: 4096,
            kmeans_warmup_epochs: 1,
        }
    }
}

impl MethodSettings for InterClrSettings {
    const NAME: &'static str = "interclr";

    fn check(&self, env: &MethodEnv) -> std::result::Result<(), SettingsError> {
        check::positive("temperature", self.temperature)?;
        check::non_negative("intra_weight", self.intra_weight)?;
        check::non_negative("inter_weight", self.inter_weight)?;
        if !self.margin.is_finite() {
            return Err(SettingsError::new(
                "margin",
                format!("must be finite, got {}", self.margin),
            ));
        }
        check::momentum(self.momentum, self.momentum_final)?;
        check::rows("clusters", self.clusters)?;
        check::rows("centroid_every", self.centroid_every)?;
        check::rows("pool", self.pool)?;
        check::rows("negatives", self.negatives)?;
        // With the defaults too: a pool left at 10000 cannot give 20000 negatives.
        if self.negatives > self.pool {
            return Err(SettingsError::new(
                "negatives",
                format!(
                    "{} negatives cannot be drawn from a pool of {}",
                    self.negatives, self.pool
                ),
            ));
        }
        check::queue("queue", self.queue, env.batch_size)
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Method>> {
        let o = Online::new(ctx)?;
        let teacher = o.teacher(self.momentum, self.momentum_final, true, ctx)?;
        let (clusters, min_cluster, n) = (self.clusters, self.min_cluster, ctx.dataset_len);
        if clusters * min_cluster > n {
            anyhow::bail!(
                "method.clusters: {clusters} clusters of at least {min_cluster} (method.min_cluster) need {} images, the dataset has {n}",
                clusters * min_cluster
            );
        }
        let seed = ctx.env.seed;
        let memory = ClusterBank::new(
            n,
            o.head_cfg.output,
            clusters,
            min_cluster,
            self.centroid_every,
            seed,
        );
        Ok(Box::new(InterClr {
            queue: FifoBank::with_noise(self.queue, &[o.head_cfg.output], seed),
            backbone: o.backbone,
            head: o.head,
            teacher,
            memory,
            pending: None,
            tau: self.temperature,
            intra_weight: self.intra_weight,
            inter_weight: self.inter_weight,
            margin: self.margin,
            pool: self.pool,
            negatives: self.negatives,
            kmeans_warmup_epochs: self.kmeans_warmup_epochs,
            params: o.params,
        }))
    }
}

pub struct InterClr {
    backbone: Backbone,
    head: ProjectionHead,
    teacher: MomentumEncoder,
    queue: FifoBank,
    memory: ClusterBank,
    pending: Option<(Tensor, Vec<usize>)>,
    tau: f64,
    intra_weight: f64,
    inter_weight: f64,
    margin: f64,
    pool: usize,
    negatives: usize,
    kmeans_warmup_epochs: usize,
    params: ParamStore,
}

impl Method for InterClr {
    fn name(&self) -> &'static str {
        InterClrSettings::NAME
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn backbone(&self) -> &Backbone {
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
        let loss = if self.memory.ready {
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
        self.pending = Some((l2_normalize(&k)?, batch.indices.clone()));
        let (query, tau) = (q.clone(), self.tau);
        Ok(StepOutput {
            loss,
            logs,
            embeddings: q,
            pair: Some(info_nce_pair(f_q, key.features, k, query, queue, tau)),
        })
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut v = self.teacher.state();
        v.extend(self.queue.state("queue")?);
        v.extend(self.memory.state("memory")?);
        Ok(v)
    }

    fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        self.teacher.load_state(t)?;
        self.queue.load_state("queue", t)?;
        self.memory.load_state("memory", t)
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
        Some(serde_json::json!({
            "clusters_min_size": sizes.iter().min(),
            "clusters_max_size": sizes.iter().max(),
        }))
    }
}
