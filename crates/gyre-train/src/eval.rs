//! Evaluation of encoders: backbone features of clean images, and the kNN monitor — the one kNN
//! path behind training (the baselines and every few epochs), `gyre eval` (a sweep over k and
//! t) and the exported model's card.

use crate::knn::{effective_k, knn_top1, FeatureSet};
use gyre_data::ImageSet;
use gyre_encoders::Backbone;
use gyre_kernels::{Device, Result, Tensor};
use std::sync::Arc;

/// The weighted-kNN monitor of one labelled bank and its queries, at one normalisation.
#[derive(Clone)]
pub struct KnnMonitor {
    pub bank: Arc<ImageSet>,
    pub queries: Arc<ImageSet>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Neighbours as asked (the vote uses [`Self::k`]) and the temperature.
    pub k: usize,
    pub t: f64,
    pub device: Device,
}

/// One point of a sweep.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct KnnPoint {
    /// The neighbours that voted (the bank's size when it is smaller than asked).
    pub k: usize,
    pub k_asked: usize,
    pub t: f64,
    pub top1: f64,
}

impl KnnMonitor {
    /// The neighbours the vote uses: all of the bank when it is smaller than `k`.
    pub fn k_used(&self) -> usize {
        effective_k(self.k, self.bank.len())
    }

    fn classes(&self) -> usize {
        self.bank.classes.len().max(1)
    }

    /// kNN top-1 of normalised raw pixels (the "no learning" reference).
    pub fn raw_pixels(&self) -> anyhow::Result<f64> {
        let b = pixel_features(&self.bank, &self.mean, &self.std)?;
        let q = pixel_features(&self.queries, &self.mean, &self.std)?;
        Ok(knn_top1(&b, &q, self.k, self.t, self.classes())?)
    }

    /// Eval-mode backbone features of the bank and of the queries, not normalised.
    pub fn features(&self, net: &Backbone) -> Result<(Vec<f32>, Vec<f32>)> {
        let (m, s) = (&self.mean, &self.std);
        Ok((
            raw_backbone_features(net, &self.bank, m, s, &self.device)?,
            raw_backbone_features(net, &self.queries, m, s, &self.device)?,
        ))
    }

    /// kNN top-1 of `net`'s features at the monitor's k and t.
    pub fn accuracy(&self, net: &Backbone) -> Result<f64> {
        Ok(self.sweep(net, &[self.k], &[self.t])?[0].top1)
    }

    /// kNN top-1 at every (k, t) of `ks` × `ts`, from one pass of features.
    pub fn sweep(&self, net: &Backbone, ks: &[usize], ts: &[f64]) -> Result<Vec<KnnPoint>> {
        let (fb, fq) = self.features(net)?;
        self.sweep_features(fb, fq, net.feature_dim(), ks, ts)
    }

    /// [`Self::sweep`] on features already computed ([`Self::features`], `dim` wide).
    pub fn sweep_features(
        &self,
        bank: Vec<f32>,
        queries: Vec<f32>,
        dim: usize,
        ks: &[usize],
        ts: &[f64],
    ) -> Result<Vec<KnnPoint>> {
        let labels = |s: &ImageSet| s.labels().map(<[u32]>::to_vec).unwrap_or_default();
        let b = FeatureSet::new(bank, labels(&self.bank), dim);
        let q = FeatureSet::new(queries, labels(&self.queries), dim);
        let mut out = Vec::new();
        for &k in ks {
            for &t in ts {
                out.push(KnnPoint {
                    k: effective_k(k, b.len()),
                    k_asked: k,
                    t,
                    top1: knn_top1(&b, &q, k, t, self.classes())?,
                });
            }
        }
        Ok(out)
    }
}

/// L2-normalised eval-mode backbone features of every image of `set` (no augmentation).
pub fn backbone_features(
    net: &Backbone,
    set: &ImageSet,
    mean: &[f32],
    std: &[f32],
    device: &Device,
) -> Result<FeatureSet> {
    let raw = raw_backbone_features(net, set, mean, std, device)?;
    Ok(FeatureSet::new(
        raw,
        set.labels().map(<[u32]>::to_vec).unwrap_or_default(),
        net.feature_dim(),
    ))
}

/// Eval-mode backbone features of every image of `set`, not normalised, row-major `[n, dim]`.
pub fn raw_backbone_features(
    net: &Backbone,
    set: &ImageSet,
    mean: &[f32],
    std: &[f32],
    device: &Device,
) -> Result<Vec<f32>> {
    let chunk = 500;
    let (c, h, w) = (set.channels, set.height, set.width);
    let mut feats = Vec::with_capacity(set.len() * net.feature_dim());
    for start in (0..set.len()).step_by(chunk) {
        let end = (start + chunk).min(set.len());
        let x = Tensor::from_vec(
            set.normalized_chw(start..end, mean, std)
                .map_err(gyre_kernels::Error::wrap)?,
            (end - start, c, h, w),
            device,
        )?;
        let f = net.forward_t(&x, false)?.detach();
        feats.extend(f.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(feats)
}

/// Normalised raw pixels as features (the "no learning" reference).
pub fn pixel_features(
    set: &ImageSet,
    mean: &[f32],
    std: &[f32],
) -> std::result::Result<FeatureSet, gyre_data::DataError> {
    let dim = set.channels * set.height * set.width;
    Ok(FeatureSet::new(
        set.normalized_chw(0..set.len(), mean, std)?,
        set.labels().map(<[u32]>::to_vec).unwrap_or_default(),
        dim,
    ))
}

/// kNN top-1 of `net` with `bank` as the labelled bank and `queries` as the test set (the
/// [`KnnMonitor`] of those sets, for one call).
#[allow(clippy::too_many_arguments)]
pub fn knn_eval(
    net: &Backbone,
    bank: &Arc<ImageSet>,
    queries: &Arc<ImageSet>,
    mean: &[f32],
    std: &[f32],
    k: usize,
    t: f64,
    device: &Device,
) -> Result<f64> {
    KnnMonitor {
        bank: bank.clone(),
        queries: queries.clone(),
        mean: mean.to_vec(),
        std: std.to_vec(),
        k,
        t,
        device: device.clone(),
    }
    .accuracy(net)
}
