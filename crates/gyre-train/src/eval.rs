//! Evaluation of encoders: backbone features of clean images and the kNN monitor on them.

use crate::knn::{knn_top1, FeatureSet};
use gyre_data::ImageSet;
use gyre_encoders::ResNet;
use gyre_kernels::{Device, Result, Tensor};

/// L2-normalised eval-mode backbone features of every image of `set` (no augmentation).
pub fn backbone_features(
    net: &ResNet,
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
    net: &ResNet,
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

/// kNN top-1 of `net` with `bank` as the labelled bank and `queries` as the test set.
#[allow(clippy::too_many_arguments)]
pub fn knn_eval(
    net: &ResNet,
    bank: &ImageSet,
    queries: &ImageSet,
    mean: &[f32],
    std: &[f32],
    k: usize,
    t: f64,
    device: &Device,
) -> Result<f64> {
    let classes = bank.classes.len().max(1);
    let b = backbone_features(net, bank, mean, std, device)?;
    let q = backbone_features(net, queries, mean, std, device)?;
    knn_top1(&b, &q, k, t, classes)
}
