//! Shared set-up of the criterion benchmarks (in `benches/`) and the memory probes (in
//! `examples/`), so that both measure exactly the same work.

use gyre_kernels::{Device, Result, Tensor, Var};

/// Three L2-normalised random groups `[n0, d]`, `[n1, d]`, `[n0, d]` (the instance-level IRC walk:
/// view 1 → memory → view 2), the first and last as variables.
pub fn circulation_groups(n0: usize, n1: usize, d: usize) -> (Var, Tensor, Var) {
    let dev = Device::Cpu;
    // A fixed pseudo-random fill (candle's CPU `randn` cannot be seeded), so every run measures
    // the same numbers.
    let g = |n: usize| {
        let mut x = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..n * d)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        gyre_losses::l2_normalize(&Tensor::from_vec(v, (n, d), &dev).unwrap()).unwrap()
    };
    (
        Var::from_tensor(&g(n0)).unwrap(),
        g(n1),
        Var::from_tensor(&g(n0)).unwrap(),
    )
}

/// One forward + backward of the circulation loss (π = identity, τ = 0.1): the fused chunked op,
/// or the dense form with `C` materialised. Returns the loss.
pub fn circulation_step(g0: &Var, g1: &Tensor, g2: &Var, dense: bool) -> Result<f32> {
    let groups = [g0.as_tensor(), g1, g2.as_tensor()];
    let loss = if dense {
        gyre_losses::circulation_loss_dense(&groups, None, 0.1)?
    } else {
        gyre_losses::circulation_loss(&groups, None, Default::default())?.loss
    };
    loss.backward()?;
    loss.to_scalar::<f32>()
}
