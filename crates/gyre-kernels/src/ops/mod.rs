//! Operations the encoders call; each has one entry point here so that a fused kernel can replace
//! the plain composition without touching the callers, and each keeps its plain composition
//! (`*_reference`) for tests and for devices without a fused kernel.

pub mod batch_norm;
pub mod conv2d;
pub mod relu;

pub use batch_norm::{batch_norm_eval, batch_norm_train, batch_norm_train_reference, BatchStats};
pub use conv2d::{conv2d, conv2d_reference};
pub use relu::{add_relu, relu};
