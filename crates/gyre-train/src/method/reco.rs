//! ReCo (Zhang et al., arXiv 2211.01796): MoCo v2 plus two relation terms.
//! `L = L_moco + λ1·L_global + λ2·L_local` (`global_weight`, `local_weight`; 1 and 1):
//! - `L_moco`: [`info_nce`] of the query (strong view 1) against the key (strong view 2) and the
//!   strong-key queue `Q`, at `temperature` T;
//! - `L_global`: [`ressl_loss`] of the query against the teacher's weak-view key `k_w` over the
//!   weak-key queue `Q_w` (τ_s = `relation_temperature` 0.1, τ_t = `teacher_temperature` 0.04);
//! - `L_local`: a CutMix `x_mix` of the query images with the key images of a permutation of the
//!   batch; its online embedding is pulled towards `sg(n(r·q + (1 − r)·k[perm]))`
//!   ([`interpolation_target`]), `r` the kept fraction of the query image after clipping, with `Q`
//!   as negatives ([`local_relation_loss`]). One λ ~ Beta(1, 1), one box and one permutation per
//!   batch, drawn from the run's seed and the step.
//!
//! Views: `[strong, strong, weak]`. After the step, `k → Q` and `k_w → Q_w`.
//!
//! As the IRC pair: the query's online features and the key view's teacher features (as for
//! ReSSL: ReCo has no online pass of view 2); the memory keeps the keys `k`, and an auto-paired
//! positive is one more InfoNCE positive of the query against `Q` at T (as MoCo v2).

use super::{
    check, info_nce_pair, BuildContext, Method, MethodEnv, MethodSettings, Online, SettingsError,
};
use crate::bank::FifoBank;
use crate::step::{StepContext, StepOutput};
use crate::teacher::MomentumEncoder;
use gyre_data::Batch;
use gyre_encoders::{Backbone, ParamStore, ProjectionHead};
use gyre_kernels::{Result, Tensor};
use gyre_losses::{
    cutmix_kept_fraction, info_nce, interpolation_target, l2_normalize, local_relation_loss,
    ressl_loss,
};
use rand::{seq::SliceRandom, Rng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `[method] name = "reco"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoSettings {
    /// T of the MoCo and local terms.
    pub temperature: f64,
    /// τ_s of the global relation.
    pub relation_temperature: f64,
    /// τ_t of the teacher's relation distribution.
    pub teacher_temperature: f64,
    /// K, rows of each of the two queues.
    pub queue: usize,
    pub momentum: f64,
    pub momentum_final: Option<f64>,
    /// λ1, the global relation term.
    pub global_weight: f64,
    /// λ2, the local interpolation term.
    pub local_weight: f64,
}

impl Default for RecoSettings {
    fn default() -> Self {
        Self {
            temperature: 0.1,
            relation_temperature: 0.1,
            teacher_temperature: 0.04,
            queue: 4096,
            momentum: 0.99,
            momentum_final: None,
            global_weight: 1.0,
            local_weight: 1.0,
        }
    }
}

impl MethodSettings for RecoSettings {
    const NAME: &'static str = "reco";
    const VIEWS: (usize, &'static str) = (3, "query (strong), key (strong), weak key");

    fn check(&self, env: &MethodEnv) -> std::result::Result<(), SettingsError> {
        for (k, v) in [
            ("temperature", self.temperature),
            ("relation_temperature", self.relation_temperature),
            ("teacher_temperature", self.teacher_temperature),
        ] {
            check::positive(k, v)?;
        }
        check::non_negative("global_weight", self.global_weight)?;
        check::non_negative("local_weight", self.local_weight)?;
        check::momentum(self.momentum, self.momentum_final)?;
        check::queue("queue", self.queue, env.batch_size)
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Method>> {
        let o = Online::new(ctx)?;
        let teacher = o.teacher(self.momentum, self.momentum_final, true, ctx)?;
        let (k, d, seed) = (self.queue, o.head_cfg.output, ctx.env.seed);
        Ok(Box::new(Reco {
            backbone: o.backbone,
            head: o.head,
            teacher,
            queue: FifoBank::with_noise(k, &[d], seed),
            queue_w: FifoBank::with_noise(k, &[d], seed ^ 0x5745_414b),
            pending: None,
            tau: self.temperature,
            tau_s: self.relation_temperature,
            tau_t: self.teacher_temperature,
            global_weight: self.global_weight,
            local_weight: self.local_weight,
            seed,
            params: o.params,
        }))
    }
}

/// One batch's CutMix: the box `[y0, y1) × [x0, x1)`, the permutation, and the kept fraction r.
#[derive(Debug, Clone, PartialEq)]
pub struct CutMix {
    pub y0: usize,
    pub y1: usize,
    pub x0: usize,
    pub x1: usize,
    pub perm: Vec<u32>,
    pub r: f64,
}

impl CutMix {
    /// Draws λ ~ Beta(1, 1) = U(0, 1), a box of side `sqrt(1 − λ)` × the image around a uniform
    /// centre, clipped to the image (as the reference's `rand_bbox`), and a permutation of `n`.
    pub fn draw(seed: u64, step: u64, n: usize, h: usize, w: usize) -> Self {
        let mut rng = gyre_rng::stream([seed, step, gyre_rng::tag(b"recomix_"), 0]);
        let lam: f64 = rng.gen();
        let cut = (1.0 - lam).sqrt();
        let (cw, ch) = ((w as f64 * cut) as usize, (h as f64 * cut) as usize);
        let (cx, cy) = (rng.gen_range(0..w), rng.gen_range(0..h));
        let clip = |c: usize, half: usize, lim: usize, up: bool| {
            if up {
                (c + half).min(lim)
            } else {
                c.saturating_sub(half)
            }
        };
        let (x0, x1) = (clip(cx, cw / 2, w, false), clip(cx, cw / 2, w, true));
        let (y0, y1) = (clip(cy, ch / 2, h, false), clip(cy, ch / 2, h, true));
        let mut perm: Vec<u32> = (0..n as u32).collect();
        perm.shuffle(&mut rng);
        let r = cutmix_kept_fraction(h, w, y0, y1, x0, x1);
        Self {
            y0,
            y1,
            x0,
            x1,
            perm,
            r,
        }
    }

    /// `x_q` with `x_k[perm]` pasted inside the box (`[B, C, H, W]` each).
    pub fn apply(&self, x_q: &Tensor, x_k: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x_q.dims4()?;
        let dev = x_q.device();
        let mut m = vec![0f32; h * w];
        for y in self.y0..self.y1 {
            m[y * w + self.x0..y * w + self.x1].fill(1.0);
        }
        let mask = Tensor::from_vec(m, (1, 1, h, w), dev)?;
        let perm = Tensor::from_slice(&self.perm, self.perm.len(), dev)?;
        let pasted = x_k.index_select(&perm, 0)?;
        x_q.broadcast_mul(&mask.affine(-1.0, 1.0)?)?
            .add(&pasted.broadcast_mul(&mask)?)
    }
}

pub struct Reco {
    backbone: Backbone,
    head: ProjectionHead,
    teacher: MomentumEncoder,
    queue: FifoBank,
    queue_w: FifoBank,
    pending: Option<(Tensor, Tensor)>,
    tau: f64,
    tau_s: f64,
    tau_t: f64,
    global_weight: f64,
    local_weight: f64,
    seed: u64,
    params: ParamStore,
}

impl Reco {
    /// Backbone features and embedding of one batch through the online network.
    fn online(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let f = self.backbone.forward_t(x, true)?;
        let q = self.head.forward_t(&f, true)?;
        Ok((f, q))
    }
}

impl Method for Reco {
    fn name(&self) -> &'static str {
        RecoSettings::NAME
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
        let (queue, queue_w) = (self.queue.field(0, dev)?, self.queue_w.field(0, dev)?);
        let (f_q, q) = self.online(&views[0])?;
        let key = self.teacher.encode(&views[1], ctx, 1)?;
        let k = key.embeddings.clone();
        let k_w = self.teacher.encode(&views[2], ctx, 2)?.embeddings;
        let l_moco = info_nce(&q, &k, &queue, self.tau)?;
        let l_global = ressl_loss(&q, &k_w, &queue_w, self.tau_s, self.tau_t)?;
        let (n, _, h, w) = views[0].dims4()?;
        let mix = CutMix::draw(self.seed, ctx.step, n, h, w);
        let (_, q_mix) = self.online(&mix.apply(&views[0], &views[1])?)?;
        let perm = Tensor::from_slice(&mix.perm, n, dev)?;
        let f_mix = interpolation_target(&q, &k.index_select(&perm, 0)?, mix.r)?;
        let l_local = local_relation_loss(&q_mix, &f_mix, &queue, self.tau)?;
        let logs = vec![
            ("moco_loss", l_moco.to_scalar::<f32>()? as f64),
            ("global_loss", l_global.to_scalar::<f32>()? as f64),
            ("local_loss", l_local.to_scalar::<f32>()? as f64),
            ("mix_r", mix.r),
            ("momentum", self.teacher.last_momentum),
        ];
        let loss = ((l_moco + (l_global * self.global_weight)?)? + (l_local * self.local_weight)?)?;
        self.pending = Some((l2_normalize(&k)?, l2_normalize(&k_w)?));
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
        v.extend(self.queue_w.state("queue_weak")?);
        Ok(v)
    }

    fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        self.teacher.load_state(t)?;
        self.queue.load_state("queue", t)?;
        self.queue_w.load_state("queue_weak", t)
    }

    fn after_step(&mut self, _ctx: StepContext) -> Result<()> {
        if let Some((k, k_w)) = self.pending.take() {
            self.queue.push(&[&k], None)?;
            self.queue_w.push(&[&k_w], None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutmix_box_is_clipped_seeded_and_pastes_the_permuted_keys() -> Result<()> {
        let a = CutMix::draw(3, 17, 4, 8, 6);
        assert_eq!(a, CutMix::draw(3, 17, 4, 8, 6));
        assert_ne!(a, CutMix::draw(3, 18, 4, 8, 6));
        for s in 0..200 {
            let m = CutMix::draw(1, s, 4, 8, 6);
            assert!(
                m.y0 <= m.y1 && m.y1 <= 8 && m.x0 <= m.x1 && m.x1 <= 6,
                "{m:?}"
            );
            let kept = 1.0 - ((m.y1 - m.y0) * (m.x1 - m.x0)) as f64 / 48.0;
            assert_eq!(m.r, kept);
            let mut p = m.perm.clone();
            p.sort();
            assert_eq!(p, [0, 1, 2, 3]);
        }
        // Pixels inside the box come from x_k[perm], the rest from x_q.
        let m = CutMix {
            y0: 1,
            y1: 3,
            x0: 0,
            x1: 2,
            perm: vec![1, 0],
            r: 1.0 - 4.0 / 12.0,
        };
        let dev = gyre_kernels::Device::Cpu;
        let xq = Tensor::zeros((2, 1, 3, 4), gyre_kernels::DType::F32, &dev)?;
        let xk = Tensor::new(&[1f32, 2.0], &dev)?
            .reshape((2, 1, 1, 1))?
            .broadcast_as((2, 1, 3, 4))?;
        let y = m
            .apply(&xq, &xk.contiguous()?)?
            .squeeze(1)?
            .to_vec3::<f32>()?;
        assert_eq!(y[0], [[0., 0., 0., 0.], [2., 2., 0., 0.], [2., 2., 0., 0.]]);
        assert_eq!(y[1], [[0., 0., 0., 0.], [1., 1., 0., 0.], [1., 1., 0., 0.]]);
        Ok(())
    }
}
