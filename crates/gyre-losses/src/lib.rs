//! Self-supervised losses as pure functions on candle tensors, one file per loss, each citing its
//! paper. Nothing here owns parameters, queues or state: callers pass tensors in and get a scalar
//! loss (with autograd) back.
//!
//! Conventions: embeddings are rows (`[N, D]`); every loss returns the **mean over rows**, and each
//! file says which reference convention that matches.

pub mod normalize;
pub mod nt_xent;
#[cfg(test)]
pub(crate) mod testing;

pub use normalize::l2_normalize;
pub use nt_xent::nt_xent;
