//! CRW, the contrastive random walk (Jabri, Owens and Efros, NeurIPS 2020): a sample is a clip of
//! T frames; every cell of each frame's dense map is a node (a linear head to 128 dimensions,
//! L2-normalised, as videowalk's `selfsim_fc`); the walker goes from frame 0 to frame h along
//! softmax transitions between adjacent frames and back, and must end on the node it started
//! from ([`gyre_losses::crw_loss`]: palindromes of every horizon 2 … T−1, edge dropout, τ = 0.05
//! as videowalk's README command). No pairs, no teacher, no queue.
//!
//! Differences from videowalk, on purpose: the nodes are the cells of the backbone's dense map
//! (`encoder.output_stride`), not a grid of separately encoded, jittered patches; against the
//! positional shortcut that leaves open, every frame draws its own crop (`ClipDraws::PerFrame`),
//! so the same cell of two frames shows different image points. Frames go through the backbone
//! together (one BatchNorm batch of B·T frames, as videowalk's `B·T` encoder batch).
//!
//! CRW has no two views of one image, so it exposes no IRC pair (a recipe with `[irc]` is
//! refused).

use super::{BuildContext, Method, MethodEnv, MethodSettings, SettingsError};
use crate::step::{StepContext, StepOutput};
use gyre_data::{Batch, ClipDraws};
use gyre_encoders::{Backbone, DenseHead, ParamStore, ProjectionHeadConfig};
use gyre_kernels::{Result, Tensor};
use gyre_losses::normalize::l2_normalize_dim;
use gyre_losses::{crw_loss, l2_normalize, EdgeDropout};
use serde::{Deserialize, Serialize};

/// `[method] name = "crw"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CrwSettings {
    /// τ of the transitions.
    pub temperature: f64,
    /// Probability that an edge is dropped from a transition (videowalk's `--dropout`).
    pub edge_dropout: f64,
    /// Palindrome horizons walked (each in 1 … T−1); none: 2 … T−1, videowalk's training walks.
    pub horizons: Option<Vec<usize>>,
}

impl Default for CrwSettings {
    fn default() -> Self {
        Self {
            temperature: 0.05,
            edge_dropout: 0.1,
            horizons: None,
        }
    }
}

impl MethodSettings for CrwSettings {
    const NAME: &'static str = "crw";
    const VIEWS: (usize, &'static str) = (1, "one augmentation for the frames of each clip");
    const CLIPS: Option<ClipDraws> = Some(ClipDraws::PerFrame);

    fn check(&self, _env: &MethodEnv) -> std::result::Result<(), SettingsError> {
        super::check::positive("temperature", self.temperature)?;
        if !(0.0..1.0).contains(&self.edge_dropout) {
            return Err(SettingsError::new(
                "edge_dropout",
                format!("must be in [0, 1), got {}", self.edge_dropout),
            ));
        }
        match &self.horizons {
            Some(h) if h.is_empty() || h.contains(&0) => Err(SettingsError::new(
                "horizons",
                format!("must be a non-empty list of horizons ≥ 1, got {h:?}"),
            )),
            _ => Ok(()),
        }
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Method>> {
        Ok(Box::new(Crw::new(self, ctx)?))
    }
}

pub struct Crw {
    backbone: Backbone,
    head: DenseHead,
    settings: CrwSettings,
    seed: u64,
    params: ParamStore,
}

impl Crw {
    pub fn new(s: &CrwSettings, ctx: &BuildContext) -> anyhow::Result<Self> {
        let backbone = ctx
            .env
            .encoder
            .build(ctx.in_channels, ctx.env.seed, ctx.device)?;
        // A linear node head to `head.output` (videowalk: 512 → 128); no projector.
        let cfg = ProjectionHeadConfig {
            layers: 1,
            ..ProjectionHeadConfig::new(backbone.feature_dim(), 1, ctx.env.head.output)
        };
        let head = DenseHead::new(cfg, ctx.env.seed, "node_head", ctx.device)?;
        let mut params = ParamStore::new();
        params.extend_prefixed("backbone", backbone.params());
        params.extend_prefixed("node_head", head.params());
        Ok(Self {
            backbone,
            head,
            settings: s.clone(),
            seed: ctx.env.seed,
            params,
        })
    }

    /// The nodes of every frame: `[B, T, N, D]`, rows L2-normalised, from `T` views `[B, C, H, W]`.
    pub fn nodes(&self, frames: &[Tensor]) -> Result<Tensor> {
        let t = frames.len();
        let b = frames[0].dim(0)?;
        let x = Tensor::cat(frames, 0)?; // [T·B, C, H, W], frame-major
        let map = self.backbone.forward_dense_t(&x, true)?;
        let q = self.head.forward_t(&map, true)?; // [T·B, D, h, w]
        let (_, d, h, w) = q.dims4()?;
        let q = q
            .reshape((t, b, d, h * w))?
            .permute((1, 0, 3, 2))?
            .contiguous()?;
        l2_normalize_dim(&q, 3)
    }
}

impl Method for Crw {
    fn name(&self) -> &'static str {
        CrwSettings::NAME
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    fn step(&mut self, views: &[Tensor], _batch: &Batch, ctx: StepContext) -> Result<StepOutput> {
        if views.len() < 2 {
            gyre_kernels::candle::bail!("crw: a clip needs at least 2 frames, got {}", views.len());
        }
        let q = self.nodes(views)?;
        let s = &self.settings;
        let dropout = EdgeDropout {
            p: s.edge_dropout,
            // A mask per step, keyed (not drawn in order): the same at any resume point.
            seed: self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ ctx.step
                ^ gyre_rng::tag(b"crwdrop_"),
        };
        let out = crw_loss(&q, s.temperature, s.horizons.as_deref(), Some(dropout))?;
        let acc = &out.accuracy;
        let logs = vec![
            ("walk_acc", acc.iter().sum::<f64>() / acc.len() as f64),
            ("walk_acc_longest", *acc.last().unwrap_or(&f64::NAN)),
        ];
        // Frame 0's mean node, per clip: the collapse gauge.
        let embeddings = l2_normalize(&q.narrow(1, 0, 1)?.squeeze(1)?.mean(1)?)?;
        Ok(StepOutput {
            loss: out.loss,
            logs,
            embeddings,
            pair: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::testing::{batch, ctx, random_views, Fixture};

    /// Nodes are unit rows of the right shape, frame t of the nodes is view t (the same frame
    /// twice gives the same nodes), and a clip of one frame is refused.
    #[test]
    fn nodes_are_per_frame_unit_rows() -> Result<()> {
        let f = Fixture::new(3);
        let mut crw = Crw::new(&CrwSettings::default(), &f.build_context()).unwrap();
        let v = random_views(2, 3, 0)?;
        let frames = [v[0].clone(), v[1].clone(), v[0].clone()];
        let q = crw.nodes(&frames)?;
        let (b, t, n, d) = q.dims4()?;
        assert_eq!((b, t, d), (3, 3, 32));
        let norms = q.sqr()?.sum(3)?.flatten_all()?.to_vec1::<f32>()?;
        assert!(norms.iter().all(|x| (x - 1.0).abs() < 1e-4));
        let a = q.narrow(1, 0, 1)?.flatten_all()?.to_vec1::<f32>()?;
        let c = q.narrow(1, 2, 1)?.flatten_all()?.to_vec1::<f32>()?;
        let diff = a
            .iter()
            .zip(&c)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "frames 0 and 2 are the same image: {diff}");
        assert!(n >= 4);
        let e = crw
            .step(&frames[..1], &batch(3), ctx(0))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("at least 2 frames"), "{e}");
        let out = crw.step(&frames, &batch(3), ctx(0))?;
        let l = out.loss.to_scalar::<f32>()?;
        // The loss is −mean ln W_ii: positive and at most ln of a huge number.
        assert!(l.is_finite() && l >= 0.0, "{l}");
        Ok(())
    }
}
