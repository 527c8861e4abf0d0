//! Operations the encoders call; each has one entry point here so that a fused kernel can replace
//! the plain composition without touching the callers, and each keeps its plain composition
//! (`*_reference`) for tests and for devices without a fused kernel.

pub mod batch_norm;
pub mod conv2d;
pub mod relu;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result};

/// The f32 contents of a contiguous CPU tensor; `op` and `what` name it in the error.
pub(crate) fn cpu_f32<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
    what: &str,
) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: {what} must be f32, got {:?}", s.dtype())
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: {what} must be contiguous"),
    }
}

pub use batch_norm::{batch_norm_eval, batch_norm_train, batch_norm_train_reference, BatchStats};
pub use conv2d::{conv2d, conv2d_reference};
pub use relu::{add_relu, relu};
