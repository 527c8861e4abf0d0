//! The linear probe: a linear classifier trained on frozen backbone features (eval-mode
//! BatchNorm, clean images, computed once), the ReSSL protocol by default (`methods.md` §7.2:
//! SGD momentum 0.9, lr 0.3, cosine over 100 epochs, batch 256, no weight decay), on L2-normalised
//! or raw features. Reports top-1 and top-5 on the test features.

use crate::optim::{OptimKind, OptimSettings, Optimizer};
use crate::schedule::{Decay, LrSchedule};
use gyre_encoders::{ParamKind, ParamStore};
use gyre_kernels::{Device, Result, Tensor, D};
use rand::{seq::SliceRandom, SeedableRng};
use serde::Serialize;

/// Probe settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeConfig {
    pub epochs: usize,
    pub lr: f64,
    pub batch: usize,
    pub momentum: f64,
    pub weight_decay: f64,
    /// L2-normalise the features first.
    pub normalize: bool,
    pub seed: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            epochs: 100,
            lr: 0.3,
            batch: 256,
            momentum: 0.9,
            weight_decay: 0.0,
            normalize: true,
            seed: 0,
        }
    }
}

impl ProbeConfig {
    /// Checks the settings; the error names the setting (`epochs`, `lr`, …) and the problem.
    pub fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        if self.epochs == 0 {
            return Err(("epochs", "must be at least 1, got 0".into()));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(("lr", format!("must be a positive number, got {}", self.lr)));
        }
        if self.batch == 0 {
            return Err(("batch", "must be at least 1, got 0".into()));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err((
                "momentum",
                format!("must be in [0, 1), got {}", self.momentum),
            ));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err((
                "weight_decay",
                format!("must be ≥ 0, got {}", self.weight_decay),
            ));
        }
        Ok(())
    }
}

/// What the probe reached.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub top1: f64,
    pub top5: f64,
    pub train_images: usize,
    pub test_images: usize,
    pub epochs: usize,
    pub final_train_loss: f64,
}

fn normalise_rows(v: &mut [f32], dim: usize) {
    for row in v.chunks_exact_mut(dim) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x /= n);
    }
}

/// A trained linear classifier: `logits = x·Wᵀ + b`.
pub struct LinearClassifier {
    /// `[classes, dim]`.
    pub weight: Tensor,
    /// `[classes]`.
    pub bias: Tensor,
    /// The loss of the last training batch.
    pub final_train_loss: f64,
}

impl LinearClassifier {
    /// Logits `[n, classes]` of row-major `[n, dim]` features (normalised as they were trained).
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
    }
}

/// Trains a linear classifier on `(train, train_labels)` (row-major `[n, dim]`) with `cfg`
/// (SGD, cosine schedule, seeded shuffles); `cfg.normalize` L2-normalises the rows first.
pub fn fit_linear(
    mut train: Vec<f32>,
    train_labels: &[u32],
    dim: usize,
    classes: usize,
    cfg: ProbeConfig,
) -> Result<LinearClassifier> {
    cfg.validate()
        .map_err(|(k, p)| gyre_kernels::Error::Msg(format!("linear probe: {k} {p}")))?;
    if cfg.normalize {
        normalise_rows(&mut train, dim);
    }
    let dev = Device::Cpu;
    let n = train_labels.len();
    let xs = Tensor::from_vec(train, (n, dim), &dev)?;
    let ys = Tensor::from_slice(train_labels, n, &dev)?;
    let mut store = ParamStore::new();
    // fc ~ N(0, 0.01), bias 0 (MoCo's main_lincls.py).
    let w = store.add(
        "fc.weight",
        Tensor::randn(0f32, 0.01, (classes, dim), &dev)?,
        ParamKind::Weight,
    )?;
    let b = store.add(
        "fc.bias",
        Tensor::zeros(classes, gyre_kernels::DType::F32, &dev)?,
        ParamKind::Bias,
    )?;
    let mut opt = Optimizer::new(
        &store,
        OptimSettings {
            kind: OptimKind::Sgd,
            momentum: cfg.momentum,
            nesterov: false,
            weight_decay: cfg.weight_decay,
            exclude_bn_bias: false,
            betas: (0.9, 0.999),
            eps: 1e-8,
            eta: 0.0,
            clip_lr: false,
        },
    );
    let per_epoch = n.div_ceil(cfg.batch);
    let schedule = LrSchedule {
        base: cfg.lr,
        final_lr: 0.0,
        warmup_iters: 0,
        total_iters: (per_epoch * cfg.epochs) as u64,
        decay: Decay::Cosine,
    };
    let mut it = 0u64;
    let mut last = f64::NAN;
    for epoch in 0..cfg.epochs {
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
            cfg.seed ^ (epoch as u64) << 20,
        ));
        for chunk in order.chunks(cfg.batch) {
            let idx = Tensor::from_slice(chunk, chunk.len(), &dev)?;
            let x = xs.index_select(&idx, 0)?;
            let y = ys.index_select(&idx, 0)?;
            let logits = x
                .matmul(&w.as_tensor().t()?)?
                .broadcast_add(b.as_tensor())?;
            let loss = gyre_kernels::nn::loss::cross_entropy(&logits, &y)?;
            last = loss.to_scalar::<f32>()? as f64;
            opt.step(&loss.backward()?, schedule.at(it))?;
            it += 1;
        }
    }
    Ok(LinearClassifier {
        weight: w.as_tensor().detach(),
        bias: b.as_tensor().detach(),
        final_train_loss: last,
    })
}

/// Trains the probe on `(train, train_labels)` and scores it on `(test, test_labels)`; features
/// are row-major `[n, dim]`.
#[allow(clippy::too_many_arguments)]
pub fn linear_probe(
    train: Vec<f32>,
    train_labels: &[u32],
    mut test: Vec<f32>,
    test_labels: &[u32],
    dim: usize,
    classes: usize,
    cfg: ProbeConfig,
) -> Result<ProbeResult> {
    let n = train_labels.len();
    let fc = fit_linear(train, train_labels, dim, classes, cfg)?;
    if cfg.normalize {
        normalise_rows(&mut test, dim);
    }
    let m = test_labels.len();
    let xt = Tensor::from_vec(test, (m, dim), &Device::Cpu)?;
    let logits = fc.logits(&xt)?;
    let k = 5.min(classes);
    let order = logits
        .arg_sort_last_dim(false)?
        .narrow(D::Minus1, 0, k)?
        .to_vec2::<u32>()?;
    let (mut c1, mut c5) = (0usize, 0usize);
    for (row, &y) in order.iter().zip(test_labels) {
        c1 += usize::from(row[0] == y);
        c5 += usize::from(row.contains(&y));
    }
    Ok(ProbeResult {
        top1: c1 as f64 / m.max(1) as f64,
        top5: c5 as f64 / m.max(1) as f64,
        train_images: n,
        test_images: m,
        epochs: cfg.epochs,
        final_train_loss: fc.final_train_loss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_features_are_learned_and_noise_is_not() -> Result<()> {
        // Three classes along three axes (plus noise): the probe must reach ~100%; with the
        // training labels shuffled against the features its loss must stay near ln 3 (a linear
        // map of 4-d features cannot fit noise).
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let normal = rand_distr::Normal::new(0f32, 0.2).unwrap();
        let mut feats = Vec::new();
        let mut labels = Vec::new();
        for i in 0..600u32 {
            let c = i % 3;
            for d in 0..4 {
                let base = if d == c as usize { 1.0 } else { 0.0 };
                feats.push(base + rand_distr::Distribution::sample(&normal, &mut rng));
            }
            labels.push(c);
        }
        let (tr, te) = (feats[..400 * 4].to_vec(), feats[400 * 4..].to_vec());
        let cfg = ProbeConfig {
            epochs: 50,
            batch: 32,
            ..Default::default()
        };
        let r = linear_probe(
            tr.clone(),
            &labels[..400],
            te.clone(),
            &labels[400..],
            4,
            3,
            cfg,
        )?;
        assert!(r.top1 > 0.97, "{r:?}");
        assert_eq!(r.top5, 1.0);
        let mut wrong = labels[..400].to_vec();
        wrong.shuffle(&mut rng);
        let r = linear_probe(tr, &wrong, te, &labels[400..], 4, 3, cfg)?;
        assert!(r.final_train_loss > 1.0, "{r:?}");
        Ok(())
    }
}
