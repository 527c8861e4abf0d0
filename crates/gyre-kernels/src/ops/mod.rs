//! Operations the encoders call; each has one entry point here so that a fused kernel can replace
//! the plain composition without touching the callers, and each keeps its plain composition
//! (`*_reference`) for tests and for devices without a fused kernel.

pub mod batch_norm;
pub mod conv2d;
pub mod max_pool;
pub mod relu;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Tensor};
use std::sync::OnceLock;

/// Whether the fused CPU kernels are switched on: yes unless the environment variable
/// `GYRE_KERNELS=reference` is set (read once per process). The switch exists to measure the
/// "before" of the kernels with candle's stock ops (`GYRE_KERNELS=reference gyre bench`).
pub fn fused_kernels_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("GYRE_KERNELS").map_or(true, |v| v != "reference"))
}

/// Whether `t` takes the fused CPU path: an f32 tensor on the CPU, fused kernels switched on.
/// For fused ops in other crates too.
pub fn fused(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && fused_kernels_enabled()
}

/// The f32 contents of a contiguous CPU tensor; `op` and `what` name it in the error. For
/// `CustomOp` implementations in other crates too.
pub fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: {what} must be f32, got {:?}", s.dtype())
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: {what} must be contiguous"),
    }
}

pub use batch_norm::{
    batch_norm_eval, batch_norm_eval_reference, batch_norm_train, batch_norm_train_reference,
    channel_affine, channel_affine_reference, BatchStats,
};
pub use conv2d::{conv2d, conv2d_reference};
pub use max_pool::{max_pool2d, max_pool2d_reference};
pub use relu::{add_relu, relu};
