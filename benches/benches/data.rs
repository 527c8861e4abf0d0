//! Criterion: one batch of two augmented 28×28 views (the default recipe's strong view).

use criterion::{criterion_group, criterion_main, Criterion};
use gyre_data::{AugmentConfig, Loader, LoaderConfig, ViewPipeline};
use std::sync::Arc;

fn batch(c: &mut Criterion) {
    let set = Arc::new(gyre_data::fashion_mnist::embedded().unwrap());
    let aug = AugmentConfig {
        crop_scale: [0.2, 1.0],
        jitter_p: 0.8,
        brightness: 0.4,
        contrast: 0.4,
        ..AugmentConfig::identity(28)
    };
    let v = ViewPipeline::new(aug, &[0.286], &[0.353]).unwrap();
    let loader = Loader::new(
        set,
        vec![v.clone(), v],
        LoaderConfig {
            batch_size: 256,
            seed: 0,
            prefetch: 0,
        },
    )
    .unwrap();
    let perm: Vec<usize> = (0..loader.dataset().len()).collect();
    c.bench_function("fmnist_two_views_B256", |b| {
        b.iter(|| loader.build(0, 3, &perm))
    });
}

criterion_group!(benches, batch);
criterion_main!(benches);
