//! Projection heads: `Linear(no bias) – BN – ReLU – Linear` (SimCLR/lightly layout), parameter
//! names `0.weight`, `1.{weight,bias,running_*}`, `3.{weight,bias}` as in a PyTorch `Sequential`.

use crate::init::Init;
use crate::layers::{BatchNorm, Linear};
use crate::params::ParamStore;
use gyre_kernels::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

/// Sizes of a projection head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectionHeadConfig {
    pub input: usize,
    pub hidden: usize,
    pub output: usize,
}

/// A two-layer MLP projector with BatchNorm on the hidden layer.
#[derive(Debug, Clone)]
pub struct ProjectionHead {
    fc1: Linear,
    bn: BatchNorm,
    fc2: Linear,
    store: ParamStore,
}

impl ProjectionHead {
    /// `seed` keys the initial values (different names than the backbone, so one seed serves both).
    pub fn new(cfg: ProjectionHeadConfig, seed: u64, name: &str, device: &Device) -> Result<Self> {
        let init = Init::new(seed, device);
        let mut store = ParamStore::new();
        // Init draws are keyed on the full name so that two heads with one seed differ.
        let fc1 = Linear::new(
            &mut store,
            &init,
            &format!("{name}.0"),
            cfg.input,
            cfg.hidden,
            false,
        )?;
        let bn = BatchNorm::new(&mut store, &init, &format!("{name}.1"), cfg.hidden, true)?;
        let fc2 = Linear::new(
            &mut store,
            &init,
            &format!("{name}.3"),
            cfg.hidden,
            cfg.output,
            true,
        )?;
        let mut local = ParamStore::new();
        let strip = format!("{name}.");
        for p in store.all() {
            local.push_renamed(p, p.name.strip_prefix(&strip).unwrap_or(&p.name));
        }
        Ok(Self {
            fc1,
            bn,
            fc2,
            store: local,
        })
    }

    /// Parameters under `0.weight`, `1.weight`, … (callers add their own prefix).
    pub fn params(&self) -> &ParamStore {
        &self.store
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = gyre_kernels::ops::relu(&self.bn.forward_t(&self.fc1.forward(x)?, train)?)?;
        self.fc2.forward(&h)
    }
}
