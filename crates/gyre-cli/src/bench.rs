//! `gyre bench`: training-step throughput of the reference SimCLR step (one forward of both views,
//! projection head, NT-Xent τ = 0.2, AdamW lr 1e-3) on fixed random inputs, the same step as
//! `shared/reference/step_bench.py`; and data-pipeline throughput in pairs of views per second.

use gyre_data::{AugmentConfig, Loader, LoaderConfig, ViewPipeline};
use gyre_encoders::{ParamStore, ProjectionHead, ProjectionHeadConfig, ResNet, ResNetConfig, Stem};
use gyre_kernels::{Device, Tensor};
use gyre_train::metrics::peak_rss_mb;
use gyre_train::optim::{OptimSettings, Optimizer};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// The two reference models of `shared/reference/step_bench.py` (CIFAR stem, projection head to
/// 128), with the input shape and batch per view the benchmarks use for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchModel {
    /// One BasicBlock per stage, widths 32–256, on 1×28×28; B = 256.
    #[value(name = "resnet-mini")]
    ResnetMini,
    /// ResNet-18 on 3×32×32; B = 64.
    #[value(name = "resnet18")]
    Resnet18,
}

impl BenchModel {
    pub fn name(self) -> &'static str {
        match self {
            Self::ResnetMini => "resnet-mini",
            Self::Resnet18 => "resnet18",
        }
    }
    pub fn in_ch(self) -> usize {
        match self {
            Self::ResnetMini => 1,
            Self::Resnet18 => 3,
        }
    }
    pub fn size(self) -> usize {
        match self {
            Self::ResnetMini => 28,
            Self::Resnet18 => 32,
        }
    }
    /// Images per view.
    pub fn default_batch(self) -> usize {
        match self {
            Self::ResnetMini => 256,
            Self::Resnet18 => 64,
        }
    }
    /// The backbone and its projection head (hidden 512 or 2048, output 128), seed 0.
    pub fn build(self, device: &Device) -> anyhow::Result<(ResNet, ProjectionHead)> {
        let cfg = ResNetConfig::preset(self.name(), self.in_ch())?.with_stem(Stem::Cifar);
        let backbone = ResNet::new(cfg, 0, device)?;
        let hidden = match self {
            Self::ResnetMini => 512,
            Self::Resnet18 => 2048,
        };
        let head = ProjectionHead::new(
            ProjectionHeadConfig::new(backbone.feature_dim(), hidden, 128),
            0,
            "projector",
            device,
        )?;
        Ok((backbone, head))
    }
}

/// One step-benchmark case.
#[derive(Debug, Clone)]
pub struct StepCase {
    pub model: BenchModel,
    /// Images per view.
    pub batch: usize,
    pub steps: usize,
    pub warmup: usize,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Times the training step; returns one JSON object.
pub fn step_bench(case: &StepCase, device: &Device) -> anyhow::Result<Value> {
    let (backbone, head) = case.model.build(device)?;
    let (in_ch, size) = (case.model.in_ch(), case.model.size());
    let mut params = ParamStore::new();
    params.extend_prefixed("backbone", backbone.params());
    params.extend_prefixed("projector", head.params());
    let mut opt = Optimizer::new(&params, OptimSettings::torch_adamw());
    let n = 2 * case.batch;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let normal = rand_distr::Normal::new(0f32, 1.0).expect("valid");
    let data: Vec<f32> = (0..n * in_ch * size * size)
        .map(|_| rand_distr::Distribution::sample(&normal, &mut rng))
        .collect();
    let x = Tensor::from_vec(data, (n, in_ch, size, size), device)?;
    let mut step = || -> anyhow::Result<f32> {
        let z = head.forward_t(&backbone.forward_t(&x, true)?, true)?;
        let loss = gyre_losses::nt_xent(
            &z.narrow(0, 0, case.batch)?,
            &z.narrow(0, case.batch, case.batch)?,
            0.2,
        )?;
        let grads = loss.backward()?;
        opt.step(&grads, 1e-3)?;
        Ok(loss.to_scalar::<f32>()?)
    };
    let t_first = Instant::now();
    for _ in 0..case.warmup {
        step()?;
    }
    let first = t_first.elapsed().as_secs_f64();
    let mut times = Vec::with_capacity(case.steps);
    let mut loss = 0.0;
    for _ in 0..case.steps {
        let t0 = Instant::now();
        loss = step()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    let (min, max) = (
        times.iter().cloned().fold(f64::INFINITY, f64::min),
        times.iter().cloned().fold(0.0, f64::max),
    );
    let med = median(&mut times);
    Ok(json!({
        "bench": "step", "impl": "gyre", "model": case.model.name(), "batch_per_view": case.batch, "images_per_step": n,
        "size": size, "in_ch": in_ch, "steps": case.steps, "warmup": case.warmup,
        "threads": rayon::current_num_threads(), "params": params.num_trainable(),
        "step_ms_median": med * 1e3, "step_ms_min": min * 1e3, "step_ms_max": max * 1e3,
        "img_per_s": n as f64 / med, "warmup_s": first, "final_loss": loss, "peak_rss_mb": peak_rss_mb(),
    }))
}

/// Pairs of augmented views per second with the default recipe's strong view on the embedded
/// Fashion-MNIST split (`batches` batches of `batch`).
pub fn data_bench(batch: usize, batches: usize) -> anyhow::Result<Value> {
    let set = Arc::new(gyre_data::fashion_mnist::embedded()?);
    let aug = AugmentConfig {
        crop_scale: [0.2, 1.0],
        hflip_p: 0.5,
        jitter_p: 0.8,
        brightness: 0.4,
        contrast: 0.4,
        ..AugmentConfig::identity(28)
    };
    let v = ViewPipeline::new(aug, &[0.2860], &[0.3530])?;
    let loader = Loader::new(
        set,
        vec![v.clone(), v],
        LoaderConfig {
            batch_size: batch,
            seed: 0,
            prefetch: 0,
        },
    )?;
    let perm: Vec<usize> = (0..loader.dataset().len()).collect();
    let per_epoch = loader.batches_per_epoch();
    loader.build(0, 0, &perm)?;
    let t0 = Instant::now();
    for i in 0..batches {
        std::hint::black_box(loader.build(0, i % per_epoch, &perm)?);
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(json!({
        "bench": "data", "impl": "gyre", "dataset": "fashion-mnist-embedded", "view": "RRC(28, 0.2-1) flip jitter(0.4, 0.4) p0.8",
        "batch": batch, "batches": batches, "threads": rayon::current_num_threads(),
        "pairs_per_s": (batch * batches) as f64 / secs,
    }))
}

/// Pairs of augmented views per second on CIFAR-10 JPEGs with the SimCLR CIFAR view (RRC 32
/// (0.08–1), flip, colour jitter 0.4/0.4/0.4/0.1 p 0.8, grayscale 0.2) — the same work as
/// `benches/data_bench.py` does with torchvision v2. Decoding (once, into memory) is timed apart;
/// with `disk`, the images are decoded again for every batch (`data.residency = "disk"`), as
/// torchvision's `ImageFolder` does.
pub fn cifar_data_bench(
    root: &std::path::Path,
    batch: usize,
    batches: usize,
    disk: bool,
) -> anyhow::Result<Value> {
    let t0 = Instant::now();
    let residency = if disk {
        gyre_data::Residency::Disk
    } else {
        gyre_data::Residency::Memory
    };
    let (set, bad) =
        gyre_data::cifar::load_cifar10_jpeg(root, true, gyre_data::OnBadSample::Fail, residency)?;
    let decode_s = t0.elapsed().as_secs_f64();
    let n = set.len();
    let aug = AugmentConfig {
        crop_scale: [0.08, 1.0],
        hflip_p: 0.5,
        jitter_p: 0.8,
        brightness: 0.4,
        contrast: 0.4,
        saturation: 0.4,
        hue: 0.1,
        grayscale_p: 0.2,
        ..AugmentConfig::identity(32)
    };
    let v = ViewPipeline::new(
        aug,
        &gyre_data::cifar::CIFAR10_MEAN,
        &gyre_data::cifar::CIFAR10_STD,
    )?;
    let loader = Loader::new(
        Arc::new(set),
        vec![v.clone(), v],
        LoaderConfig {
            batch_size: batch,
            seed: 0,
            prefetch: 0,
        },
    )?;
    let perm: Vec<usize> = (0..n).collect();
    let per_epoch = loader.batches_per_epoch();
    loader.build(0, 0, &perm)?;
    let t0 = Instant::now();
    for i in 0..batches {
        std::hint::black_box(loader.build(0, i % per_epoch, &perm)?);
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(json!({
        "bench": "data", "impl": "gyre", "dataset": "cifar10-jpeg/train",
        "residency": if disk { "disk (decoded every batch)" } else { "memory" },
        "view": "RRC(32, 0.08-1) flip jitter(0.4, 0.4, 0.4, 0.1) p0.8 gray p0.2",
        "images": n, "bad": bad.bad_samples.count, "decode_s": decode_s, "decode_img_per_s": n as f64 / decode_s,
        "batch": batch, "batches": batches, "threads": rayon::current_num_threads(),
        "pairs_per_s": (batch * batches) as f64 / secs,
    }))
}

/// Times a recipe's own training step (its method, encoder, heads, views, batch and optimiser)
/// on fixed random views of its shapes (clips: one view per frame); every view's geometry is the
/// whole image. Returns one JSON object; `peak_rss_mb` is the process's high-water mark, so time
/// one recipe per process for its memory.
pub fn recipe_step_bench(
    recipe: &gyre_train::Recipe,
    steps: usize,
    warmup: usize,
    device: &Device,
) -> anyhow::Result<Value> {
    use gyre_train::step::StepContext;
    recipe.validate("recipe")?;
    let entry = recipe
        .method
        .entry()
        .ok_or_else(|| anyhow::anyhow!("method.name: unknown method"))?;
    let ch = recipe.in_channels().unwrap_or(3);
    let scenes = recipe.data.scenes.clone().unwrap_or_default();
    let mut method = recipe.build_method(ch, scenes.clips * scenes.clip.frames, device)?;
    let mut opt = Optimizer::new(method.params(), recipe.optim.settings());
    let b = recipe.train.batch_size;
    let pipes: Vec<&AugmentConfig> = match entry.clips {
        Some(_) => vec![&recipe.augment[&recipe.method.views[0]]; scenes.clip.frames],
        None => recipe
            .method
            .views
            .iter()
            .map(|v| &recipe.augment[v])
            .collect(),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let normal = rand_distr::Normal::new(0f32, 1.0).expect("valid");
    let mut views = Vec::new();
    let mut geometry = Vec::new();
    for a in &pipes {
        let s = a.size;
        let data: Vec<f32> = (0..b * ch * s * s)
            .map(|_| rand_distr::Distribution::sample(&normal, &mut rng))
            .collect();
        views.push(Tensor::from_vec(data, (b, ch, s, s), device)?);
        let whole = gyre_data::ViewGeometry::whole(s);
        geometry.push(vec![whole; b]);
    }
    let batch = gyre_data::Batch {
        epoch: 0,
        step: 0,
        indices: (0..b).collect(),
        labels: None,
        views: Vec::new(),
        view_shapes: pipes.iter().map(|a| (ch, a.size, a.size)).collect(),
        geometry,
        partners: Vec::new(),
        second_partners: Vec::new(),
    };
    let total = (warmup + steps) as u64;
    let lr = recipe.effective_lr();
    let mut loss = 0f32;
    let mut step = |i: u64| -> anyhow::Result<f32> {
        let ctx = StepContext {
            step: i,
            total_steps: total,
            steps_per_epoch: total,
        };
        let out = method.step(&views, &batch, ctx)?;
        let grads = out.loss.backward()?;
        opt.step(&grads, lr)?;
        method.after_step(ctx)?;
        Ok(out.loss.to_scalar::<f32>()?)
    };
    let t_first = Instant::now();
    for i in 0..warmup {
        step(i as u64)?;
    }
    let first = t_first.elapsed().as_secs_f64();
    let mut times = Vec::with_capacity(steps);
    for i in 0..steps {
        let t0 = Instant::now();
        loss = step((warmup + i) as u64)?;
        times.push(t0.elapsed().as_secs_f64());
    }
    let med = median(&mut times);
    let images = b * pipes.len();
    Ok(json!({
        "bench": "recipe-step", "impl": "gyre", "recipe": recipe.name, "method": entry.name,
        "encoder": recipe.encoder.arch, "output_stride": recipe.encoder.output_stride,
        "batch": b, "views": pipes.len(), "images_per_step": images,
        "size": pipes.first().map(|a| a.size), "steps": steps, "warmup": warmup,
        "threads": rayon::current_num_threads(), "params": method.params().num_trainable(),
        "step_ms_median": med * 1e3, "img_per_s": images as f64 / med, "warmup_s": first,
        "final_loss": loss, "peak_rss_mb": peak_rss_mb(),
    }))
}
