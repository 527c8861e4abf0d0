//! Criterion: NT-Xent forward + backward at SimCLR sizes.

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

criterion_group!(benches, nt_xent);
criterion_main!(benches);
