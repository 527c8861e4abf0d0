//! Tensors and kernels for gyre: the candle re-export every other crate uses, device choice, and
//! the fused operations that training needs to be fast (each with a plain reference and a backward).
//!
//! Everything tensor-shaped in gyre goes through this crate, so that a user who wants only the
//! losses builds `gyre-losses` and `gyre-kernels` and nothing else.

pub mod device;
pub mod gemm;
pub mod ops;
pub mod optim_step;

pub use candle_core as candle;
pub use candle_core::{DType, Device, Error, IndexOp, Module, Result, Shape, Tensor, Var, D};
pub use candle_nn as nn;
pub use device::{select_device, DeviceError, DeviceSpec};
