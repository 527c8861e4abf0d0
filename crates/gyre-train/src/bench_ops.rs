//! `gyre bench --ops`: the per-op table at the ResNet-18 (CIFAR stem) step shapes, B = 64 per view
//! (128 images a forward): conv forward, grad-input and grad-weight for each distinct conv, the
//! BatchNorm forward + backward for each activation size, and the AdamW step over every parameter.
//! `benches/ops_bench.py` times the same ops in PyTorch.

use crate::metrics::peak_rss_mb;
use crate::optim::{OptimSettings, Optimizer};
use gyre_encoders::{ParamStore, ProjectionHead, ProjectionHeadConfig, ResNet, ResNetConfig, Stem};
use gyre_kernels::ops::batch_norm_train;
use gyre_kernels::ops::conv2d::{
    conv2d_forward_cpu, conv2d_grad_input_cpu, conv2d_grad_weight_cpu, ConvGeom,
};
use gyre_kernels::{Device, Tensor, Var};
use serde_json::{json, Value};
use std::time::Instant;

/// `(c_in, c_out, kernel, stride, input size)` of each distinct conv in the CIFAR ResNet-18.
pub const RESNET18_CONVS: &[(usize, usize, usize, usize, usize)] = &[
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

/// Every op of the table, as JSON lines; `images` is the forward batch (128 for B = 64 per view).
pub fn ops_bench(images: usize, reps: usize) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for &(c, o, k, s, hw) in RESNET18_CONVS {
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
    for &(c, hw) in RESNET18_BNS {
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
    // AdamW over the whole ResNet-18 + projection head (12.5 M parameters), as in the step.
    let backbone = ResNet::new(
        ResNetConfig::preset("resnet18", 3)?.with_stem(Stem::Cifar),
        0,
        &dev,
    )?;
    let head = ProjectionHead::new(
        ProjectionHeadConfig::new(512, 2048, 128),
        0,
        "projector",
        &dev,
    )?;
    let mut params = ParamStore::new();
    params.extend_prefixed("backbone", backbone.params());
    params.extend_prefixed("projector", head.params());
    let x = Tensor::from_vec(filled(8 * 3 * 32 * 32, 6), (8, 3, 32, 32), &dev)?;
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
