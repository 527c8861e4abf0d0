//! Criterion: NT-Xent forward + backward at SimCLR sizes; the IRC circulation loss forward +
//! backward at n_0 = 512, n_1 = 4096, d = 128, fused (chunked, log space) against the dense form.

use criterion::{criterion_group, criterion_main, Criterion};
use gyre_kernels::{Device, Tensor, Var};

fn nt_xent(c: &mut Criterion) {
    let dev = Device::Cpu;
    for b in [256usize, 512] {
        let za = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, 128), &dev).unwrap()).unwrap();
        let zb = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, 128), &dev).unwrap()).unwrap();
        c.bench_function(&format!("nt_xent_fwd_bwd_B{b}_D128"), |bench| {
            bench.iter(|| {
                let l = gyre_losses::nt_xent(za.as_tensor(), zb.as_tensor(), 0.2).unwrap();
                l.backward().unwrap()
            })
        });
    }
}

fn circulation(c: &mut Criterion) {
    let (g0, g1, g2) = gyre_benches::circulation_groups(512, 4096, 128);
    let mut group = c.benchmark_group("circulation_fwd_bwd_n512_k4096_d128");
    group.sample_size(10);
    group.bench_function("fused_chunked", |bench| {
        bench.iter(|| gyre_benches::circulation_step(&g0, &g1, &g2, false).unwrap())
    });
    group.bench_function("dense", |bench| {
        bench.iter(|| gyre_benches::circulation_step(&g0, &g1, &g2, true).unwrap())
    });
    group.finish();
}

criterion_group!(benches, nt_xent, circulation);
criterion_main!(benches);
