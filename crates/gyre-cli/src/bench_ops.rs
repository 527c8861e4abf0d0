//! `gyre bench --ops`: the per-op table at a model's step shapes (ResNet-18 with the CIFAR stem,
//! B = 64 per view, 128 images a forward; or resnet-mini on 1×28×28, B = 256, 512 images): conv
//! forward, grad-input and grad-weight for each distinct conv, the BatchNorm forward + backward for
//! each activation size, and the AdamW step over every parameter of the model and its head.
//! `benches/ops_bench.py` times the same ops in PyTorch.

use crate::bench::BenchModel;
use gyre_encoders::ParamStore;
use gyre_kernels::ops::batch_norm_train;
use gyre_kernels::ops::conv2d::{
    conv2d_forward_cpu, conv2d_grad_input_cpu, conv2d_grad_weight_cpu, ConvGeom,
};
use gyre_kernels::{Device, Tensor, Var};
use gyre_train::metrics::peak_rss_mb;
use gyre_train::optim::{OptimSettings, Optimizer};
use serde_json::{json, Value};
use std::time::Instant;

/// `(c_in, c_out, kernel, stride, input size)` of a conv.
pub type ConvShape = (usize, usize, usize, usize, usize);

/// Each distinct conv of the CIFAR ResNet-18.
pub const RESNET18_CONVS: &[ConvShape] = &[
    (3, 64, 3, 1, 32),
    (64, 64, 3, 1, 32),
    (64, 128, 3, 2, 32),
    (64, 128, 1, 2, 32),
    (128, 128, 3, 1, 16),
    (128, 256, 3, 2, 16),
    (128, 256, 1, 2, 16),
    (256, 256, 3, 1, 8),
    (256, 512, 3, 2, 8),
    (256, 512, 1, 2, 8),
    (512, 512, 3, 1, 4),
];

/// `(channels, size)` of each distinct BatchNorm input.
pub const RESNET18_BNS: &[(usize, usize)] = &[(64, 32), (128, 16), (256, 8), (512, 4)];

/// The same for resnet-mini (one BasicBlock per stage, widths 32–256, CIFAR stem) on 1×28×28.
pub const RESNET_MINI_CONVS: &[ConvShape] = &[
    (1, 32, 3, 1, 28),
    (32, 32, 3, 1, 28),
    (32, 64, 3, 2, 28),
    (32, 64, 1, 2, 28),
    (64, 64, 3, 1, 14),
    (64, 128, 3, 2, 14),
    (64, 128, 1, 2, 14),
    (128, 128, 3, 1, 7),
    (128, 256, 3, 2, 7),
    (128, 256, 1, 2, 7),
    (256, 256, 3, 1, 4),
];

/// `(channels, size)` of each distinct BatchNorm input of resnet-mini.
pub const RESNET_MINI_BNS: &[(usize, usize)] = &[(32, 28), (64, 14), (128, 7), (256, 4)];

/// The distinct convs and BatchNorm inputs of `model`.
fn shapes(model: BenchModel) -> (&'static [ConvShape], &'static [(usize, usize)]) {
    match model {
        BenchModel::Resnet18 => (RESNET18_CONVS, RESNET18_BNS),
        BenchModel::ResnetMini => (RESNET_MINI_CONVS, RESNET_MINI_BNS),
    }
}

/// Median, min and max milliseconds of `reps` calls after one untimed call.
fn time_ms(reps: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<[f64; 3]> {
    f()?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = Instant::now();
        f()?;
        t.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok([t[t.len() / 2], t[0], t[t.len() - 1]])
}

fn filled(n: usize, seed: u32) -> Vec<f32> {
    // A cheap deterministic fill in [-1, 1): the values do not matter for timing.
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 8_388_608.0
                - 1.0
        })
        .collect()
}

fn row(op: &str, shape: String, ms: [f64; 3]) -> Value {
    json!({"bench": "op", "impl": "gyre", "op": op, "shape": shape, "ms_median": ms[0], "ms_min": ms[1],
           "ms_max": ms[2], "threads": rayon::current_num_threads()})
}

/// Every op of the table, as JSON lines; `images` is the forward batch (2B: 128 for ResNet-18 at
/// B = 64 per view).
pub fn ops_bench(model: BenchModel, images: usize, reps: usize) -> anyhow::Result<Vec<Value>> {
    let (convs, bns) = shapes(model);
    let mut out = Vec::new();
    for &(c, o, k, s, hw) in convs {
        let g = ConvGeom {
            n: images,
            c,
            h: hw,
            w: hw,
            o,
            kh: k,
            kw: k,
            stride: s,
            pad: k / 2,
        };
        let x = filled(images * c * hw * hw, 1);
        let w = filled(o * c * k * k, 2);
        let dy = filled(images * o * g.p(), 3);
        let shape = format!("{images}x{c}x{hw}x{hw} -> {o}, {k}x{k} s{s}");
        let ms = time_ms(reps, || {
            std::hint::black_box(conv2d_forward_cpu(&x, &w, &g));
            Ok(())
        })?;
        out.push(row("conv_forward", shape.clone(), ms));
        let ms = time_ms(reps, || {
            std::hint::black_box(conv2d_grad_input_cpu(&w, &dy, &g));
            Ok(())
        })?;
        out.push(row("conv_grad_input", shape.clone(), ms));
        let ms = time_ms(reps, || {
            std::hint::black_box(conv2d_grad_weight_cpu(&x, &dy, &g));
            Ok(())
        })?;
        out.push(row("conv_grad_weight", shape, ms));
    }
    let dev = Device::Cpu;
    for &(c, hw) in bns {
        let shape = (images, c, hw, hw);
        let n = images * c * hw * hw;
        let x = Var::from_tensor(&Tensor::from_vec(filled(n, 4), shape, &dev)?)?;
        let w = Var::from_tensor(&Tensor::ones(c, gyre_kernels::DType::F32, &dev)?)?;
        let b = Var::from_tensor(&Tensor::zeros(c, gyre_kernels::DType::F32, &dev)?)?;
        let label = format!("{images}x{c}x{hw}x{hw}");
        let ms = time_ms(reps, || {
            let (y, _) = batch_norm_train(
                x.as_tensor(),
                Some(w.as_tensor()),
                Some(b.as_tensor()),
                1e-5,
            )?;
            std::hint::black_box(y);
            Ok(())
        })?;
        out.push(row("batch_norm_forward", label.clone(), ms));
        // Forward, then backward seeded with ones (`y.backward()`; torch: `y.backward(ones)`).
        let ms = time_ms(reps, || {
            let (y, _) = batch_norm_train(
                x.as_tensor(),
                Some(w.as_tensor()),
                Some(b.as_tensor()),
                1e-5,
            )?;
            std::hint::black_box(y.backward()?);
            Ok(())
        })?;
        out.push(row("batch_norm_fwd_bwd", label, ms));
    }
    // AdamW over the whole backbone + projection head, as in the step.
    let (backbone, head) = model.build(&dev)?;
    let (in_ch, size) = (model.in_ch(), model.size());
    let mut params = ParamStore::new();
    params.extend_prefixed("backbone", backbone.params());
    params.extend_prefixed("projector", head.params());
    let x = Tensor::from_vec(
        filled(8 * in_ch * size * size, 6),
        (8, in_ch, size, size),
        &dev,
    )?;
    let grads = head
        .forward_t(&backbone.forward_t(&x, true)?, true)?
        .sqr()?
        .sum_all()?
        .backward()?;
    let mut opt = Optimizer::new(&params, OptimSettings::torch_adamw());
    let ms = time_ms(reps, || Ok(opt.step(&grads, 1e-6)?))?;
    out.push(row(
        "adamw_step",
        format!("{} parameters", params.num_trainable()),
        ms,
    ));
    out.push(
        json!({"bench": "op", "impl": "gyre", "op": "peak_rss", "peak_rss_mb": peak_rss_mb()}),
    );
    Ok(out)
}
