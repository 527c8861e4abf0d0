//! PixPro (Xie et al., "Propagate Yourself", CVPR 2021): pixel-to-propagation consistency. Each
//! view's backbone map goes through a dense projector (`[head]` at every cell) and the
//! pixel-propagation module (each cell becomes the similarity-weighted sum of the value-transformed
//! cells of its own map, `max(cos, 0)^γ`); a momentum encoder (BYOL-style, momentum 0.99 → 1 on
//! the cosine schedule) gives the target cells. Positives are cells of the two views whose centres,
//! mapped back to the image by each view's crop and flip, lie within 0.7 of the larger cell
//! diagonal ([`gyre_losses::pixpro`]). `L = L(y1, z2') + L(y2, z1')`, each
//! `−2·mean cos(y_i, z'_j)` over the positive pairs.
//!
//! The reference's instance branch (`pixpro-ins-loss-weight`, 0 in its main recipes) is not
//! built. The encoder should be dense (`encoder.output_stride`). As the IRC pair: pooled backbone
//! features of both views; the memory keeps the target's pooled view-2 projections (`[head]` on
//! the mean map), and an auto-paired positive is a BYOL regression target for the online
//! projection of view 1 — the projector trains only through that term.

use super::{check, BuildContext, Method, MethodEnv, MethodSettings, Online, SettingsError};
use crate::step::{PairHooks, StepContext, StepOutput};
use crate::teacher::MomentumEncoder;
use gyre_data::{Batch, ViewGeometry};
use gyre_encoders::{Backbone, DenseHead, ParamStore, ProjectionHead, ProjectionHeadConfig};
use gyre_kernels::{Device, Result, Tensor};
use gyre_losses::byol_loss;
use gyre_losses::pixpro::{pixel_propagation, pixpro_loss, positive_mask};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `[method] name = "pixpro"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PixProSettings {
    /// Target momentum at the start of training.
    pub momentum: f64,
    /// Target momentum at the end (cosine schedule); none: constant.
    pub momentum_final: Option<f64>,
    /// A pair of cells is positive when their centres are closer than this many of the larger
    /// cell diagonal (the reference's `pixpro-pos-ratio`).
    pub positive_ratio: f64,
    /// γ, the sharpness of the propagation's similarity.
    pub gamma: f64,
    /// Similarities below this are clamped to it before the power (the reference's 0).
    pub clamp: f64,
    /// Layers of the value transform: 1 = a 1×1 convolution, 2 = 1×1–BN–ReLU–1×1.
    pub transform_layers: usize,
}

impl Default for PixProSettings {
    fn default() -> Self {
        Self {
            momentum: 0.99,
            momentum_final: Some(1.0),
            positive_ratio: 0.7,
            gamma: 2.0,
            clamp: 0.0,
            transform_layers: 1,
        }
    }
}

impl MethodSettings for PixProSettings {
    const NAME: &'static str = "pixpro";

    fn check(&self, _env: &MethodEnv) -> std::result::Result<(), SettingsError> {
        check::momentum(self.momentum, self.momentum_final)?;
        check::positive("positive_ratio", self.positive_ratio)?;
        check::positive("gamma", self.gamma)?;
        if !(self.clamp.is_finite() && (-1.0..1.0).contains(&self.clamp)) {
            return Err(SettingsError::new(
                "clamp",
                format!("must be in [−1, 1), got {}", self.clamp),
            ));
        }
        if !(1..=2).contains(&self.transform_layers) {
            return Err(SettingsError::new(
                "transform_layers",
                format!("must be 1 or 2, got {}", self.transform_layers),
            ));
        }
        Ok(())
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Method>> {
        Ok(Box::new(PixPro::new(self, ctx)?))
    }
}

pub struct PixPro {
    backbone: Backbone,
    projector: ProjectionHead,
    dense_head: DenseHead,
    transform: DenseHead,
    teacher: MomentumEncoder,
    settings: PixProSettings,
    params: ParamStore,
}

impl PixPro {
    pub fn new(s: &PixProSettings, ctx: &BuildContext) -> anyhow::Result<Self> {
        let mut o = Online::new(ctx)?;
        let dense_head = o.dense_head(ctx)?;
        let d = o.head_cfg.output;
        let transform_cfg = ProjectionHeadConfig {
            layers: s.transform_layers,
            ..ProjectionHeadConfig::new(d, d, d)
        };
        let transform = DenseHead::new(transform_cfg, ctx.env.seed, "transform", ctx.device)?;
        o.params.extend_prefixed("transform", transform.params());
        // BYOL-style target: no Shuffle-BN.
        let teacher = o.dense_teacher(&dense_head, s.momentum, s.momentum_final, false, ctx)?;
        Ok(Self {
            backbone: o.backbone,
            projector: o.head,
            dense_head,
            transform,
            teacher,
            settings: s.clone(),
            params: o.params,
        })
    }

    /// The online side of one view: pooled backbone features, and the propagated cells.
    fn propagate(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let map = self.backbone.forward_dense_t(x, true)?;
        let f = map.mean((2, 3))?;
        let cells = self.dense_head.forward_t(&map, true)?;
        let value = self.transform.forward_t(&cells, true)?;
        let s = &self.settings;
        Ok((f, pixel_propagation(&cells, &value, s.gamma, s.clamp)?))
    }
}

/// Every cell centre of an `h × w` map over each sample's view, in its source image's
/// coordinates, and the stride (view pixels per cell).
fn centres(geo: &[ViewGeometry], h: usize, w: usize) -> (Vec<Vec<[f32; 2]>>, f32) {
    let stride = geo.first().map_or(1.0, |g| g.size as f32 / w as f32);
    let c = geo
        .iter()
        .map(|g| {
            (0..h)
                .flat_map(|r| (0..w).map(move |c| (r, c)))
                .map(|(r, c)| g.cell_centre(r, c, stride))
                .collect()
        })
        .collect();
    (c, stride)
}

/// PixPro's positives between views `a` and `b` of a batch, `[B, S_a, S_b]`, for `h × w` maps.
pub fn batch_positives(
    a: &[ViewGeometry],
    b: &[ViewGeometry],
    h: usize,
    w: usize,
    ratio: f32,
    device: &Device,
) -> Result<Tensor> {
    if a.len() != b.len() || a.is_empty() {
        gyre_kernels::candle::bail!(
            "pixpro: the batch carries no view geometry for both views ({} and {} samples)",
            a.len(),
            b.len()
        );
    }
    let (ca, sa) = centres(a, h, w);
    let (cb, sb) = centres(b, h, w);
    let diag: Vec<f32> = a
        .iter()
        .zip(b)
        .map(|(ga, gb)| ga.cell_diagonal(sa).max(gb.cell_diagonal(sb)))
        .collect();
    positive_mask(&ca, &cb, &diag, ratio, device)
}

impl Method for PixPro {
    fn name(&self) -> &'static str {
        PixProSettings::NAME
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self.teacher.state())
    }

    fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        self.teacher.load_state(t)
    }

    fn step(&mut self, views: &[Tensor], batch: &Batch, ctx: StepContext) -> Result<StepOutput> {
        self.teacher.update(ctx)?;
        let dev = views[0].device();
        let t1 = self.teacher.encode_dense(&views[0], ctx, 0)?;
        let t2 = self.teacher.encode_dense(&views[1], ctx, 1)?;
        let (f1, y1) = self.propagate(&views[0])?;
        let (f2, y2) = self.propagate(&views[1])?;
        let (_, _, h, w) = y1.dims4()?;
        let (Some(g1), Some(g2)) = (batch.geometry.first(), batch.geometry.get(1)) else {
            gyre_kernels::candle::bail!("pixpro: the batch carries no view geometry");
        };
        let ratio = self.settings.positive_ratio as f32;
        let m12 = batch_positives(g1, g2, h, w, ratio, dev)?;
        let m21 = m12.transpose(1, 2)?.contiguous()?;
        let l12 = pixpro_loss(&y1, &t2.dense, &m12)?;
        let l21 = pixpro_loss(&y2, &t1.dense, &m21)?;
        let loss = (&l12 + &l21)?;
        // The share of cells of view 1 with at least one positive in view 2 (crop overlap).
        let matched = m12.max(2)?.mean_all()?.to_scalar::<f32>()? as f64;
        let q = self.projector.forward_t(&f1, true)?;
        Ok(StepOutput {
            loss,
            logs: vec![
                ("momentum", self.teacher.last_momentum),
                ("matched_cells", matched),
            ],
            embeddings: y1.mean((2, 3))?,
            pair: Some(PairHooks {
                view1: f1,
                view2: f2,
                view2_index: 1,
                base_v2: t2.embeddings,
                keep_base_scale: false,
                pair_loss: Box::new(move |p| byol_loss(&p.queries(&q)?, &p.positives)),
                dense: None,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::testing::{ctx, random_views, Fixture};

    fn geo(top: f32, left: f32, side: f32, flip: bool) -> ViewGeometry {
        crate::method::testing::square_view(top, left, side, flip, 16)
    }

    /// The same crop pairs each cell with itself only; a flipped copy pairs cell (r, c) with
    /// (r, w − 1 − c); two crops with no overlap have no positives.
    #[test]
    fn positives_follow_the_crops() -> Result<()> {
        let dev = &Device::Cpu;
        let a = [geo(0.0, 0.0, 16.0, false)];
        let m = batch_positives(&a, &a, 4, 4, 0.7, dev)?
            .squeeze(0)?
            .to_vec2::<f32>()?;
        for (i, row) in m.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                assert_eq!(v, (i == j) as u8 as f32);
            }
        }
        let f = [geo(0.0, 0.0, 16.0, true)];
        let m = batch_positives(&a, &f, 4, 4, 0.7, dev)?
            .squeeze(0)?
            .to_vec2::<f32>()?;
        for r in 0..4 {
            for c in 0..4 {
                assert_eq!(m[r * 4 + c][r * 4 + 3 - c], 1.0);
                assert_eq!(m[r * 4 + c].iter().sum::<f32>(), 1.0);
            }
        }
        let far = [geo(20.0, 20.0, 8.0, false)];
        let m = batch_positives(&a, &far, 4, 4, 0.7, dev)?;
        assert_eq!(m.sum_all()?.to_scalar::<f32>()?, 0.0);
        Ok(())
    }

    /// A step with identical crops has a positive for every cell and a loss within PixPro's
    /// range [−4, 4]; a batch without view geometry is an error, not a silent zero.
    #[test]
    fn steps_and_refuses_a_batch_without_geometry() -> Result<()> {
        let f = Fixture::new(4);
        let mut m = PixPro::new(&PixProSettings::default(), &f.build_context()).unwrap();
        let views = random_views(2, 4, 1)?;
        let mut batch = crate::method::testing::batch(4);
        batch.geometry.clear();
        let e = m.step(&views, &batch, ctx(0)).err().unwrap().to_string();
        assert!(e.contains("no view geometry"), "{e}");
        let batch = crate::method::testing::batch(4);
        let out = m.step(&views, &batch, ctx(1))?;
        let l = out.loss.to_scalar::<f32>()?;
        assert!((-4.0..=4.0).contains(&l) && l.is_finite(), "{l}");
        let matched = out.logs.iter().find(|l| l.0 == "matched_cells").unwrap().1;
        assert_eq!(matched, 1.0, "identity crops: every cell has its positive");
        Ok(())
    }
}
