//! MLP heads (projectors and predictors): `[Linear – BN – ReLU] × (layers − 1) – Linear [– BN]`,
//! parameters named by their index in the equivalent PyTorch `nn.Sequential`, so the default
//! SimCLR/lightly head is `0.weight`, `1.{weight,bias,running_*}`, `3.{weight,bias}`.
//!
//! The variants the methods need: SimCLR/BYOL (2 layers, BN on the hidden layer), MoCo v2 and
//! ReSSL (no BN: `Linear – ReLU – Linear`, biases on), SimSiam (3 layers and a final BN without
//! affine parameters), DINO (GELU between the layers, no BN).

use crate::init::Init;
use crate::layers::{BatchNorm, Linear};
use crate::params::ParamStore;
use gyre_kernels::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

/// The non-linearity between a head's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// ReLU (SimCLR, MoCo, BYOL, SimSiam, SwAV, …).
    #[default]
    Relu,
    /// GELU, the exact (erf) form of PyTorch's `nn.GELU()` (DINO's head).
    Gelu,
}

/// Shape of an MLP head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectionHeadConfig {
    pub input: usize,
    pub hidden: usize,
    pub output: usize,
    /// Linear layers (≥ 1; 1 = a single `Linear(input, output)`).
    pub layers: usize,
    /// BatchNorm after every hidden Linear (which then has no bias).
    pub hidden_bn: bool,
    /// BatchNorm without affine parameters after the last Linear (SimSiam's projector).
    pub output_bn: bool,
    /// Between the layers.
    #[serde(default)]
    pub activation: Activation,
}

impl ProjectionHeadConfig {
    /// The SimCLR/lightly head: `Linear(no bias) – BN – ReLU – Linear`.
    pub fn new(input: usize, hidden: usize, output: usize) -> Self {
        Self {
            input,
            hidden,
            output,
            layers: 2,
            hidden_bn: true,
            output_bn: false,
            activation: Activation::Relu,
        }
    }
}

#[derive(Debug, Clone)]
struct Hidden {
    fc: Linear,
    bn: Option<BatchNorm>,
}

/// An MLP head.
#[derive(Debug, Clone)]
pub struct ProjectionHead {
    hidden: Vec<Hidden>,
    activation: Activation,
    last: Linear,
    out_bn: Option<BatchNorm>,
    store: ParamStore,
}

impl ProjectionHead {
    /// `seed` keys the initial values (different names than the backbone, so one seed serves both).
    pub fn new(cfg: ProjectionHeadConfig, seed: u64, name: &str, device: &Device) -> Result<Self> {
        if cfg.layers == 0 || cfg.input == 0 || cfg.output == 0 || cfg.hidden == 0 {
            gyre_kernels::candle::bail!("head {name}: layers and sizes must be positive: {cfg:?}");
        }
        let init = Init::new(seed, device);
        let mut store = ParamStore::new();
        // Init draws are keyed on the full name so that two heads with one seed differ.
        let mut idx = 0usize;
        let mut next = || {
            idx += 1;
            format!("{name}.{}", idx - 1)
        };
        let mut hidden = Vec::new();
        let mut width = cfg.input;
        for _ in 1..cfg.layers {
            let fc = Linear::new(
                &mut store,
                &init,
                &next(),
                width,
                cfg.hidden,
                !cfg.hidden_bn,
            )?;
            let bn = if cfg.hidden_bn {
                Some(BatchNorm::new(
                    &mut store,
                    &init,
                    &next(),
                    cfg.hidden,
                    true,
                )?)
            } else {
                None
            };
            let _relu = next();
            hidden.push(Hidden { fc, bn });
            width = cfg.hidden;
        }
        let last = Linear::new(&mut store, &init, &next(), width, cfg.output, true)?;
        let out_bn = if cfg.output_bn {
            Some(BatchNorm::new(
                &mut store,
                &init,
                &next(),
                cfg.output,
                false,
            )?)
        } else {
            None
        };
        let mut local = ParamStore::new();
        let strip = format!("{name}.");
        for p in store.all() {
            local.push_renamed(p, p.name.strip_prefix(&strip).unwrap_or(&p.name));
        }
        Ok(Self {
            hidden,
            activation: cfg.activation,
            last,
            out_bn,
            store: local,
        })
    }

    /// Parameters under `0.weight`, `1.weight`, … (callers add their own prefix).
    pub fn params(&self) -> &ParamStore {
        &self.store
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &self.hidden {
            h = l.fc.forward(&h)?;
            if let Some(bn) = &l.bn {
                h = bn.forward_t(&h, train)?;
            }
            h = match self.activation {
                Activation::Relu => gyre_kernels::ops::relu(&h)?,
                Activation::Gelu => h.gelu_erf()?,
            };
        }
        h = self.last.forward(&h)?;
        match &self.out_bn {
            Some(bn) => bn.forward_t(&h, train),
            None => Ok(h),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(cfg: ProjectionHeadConfig) -> Vec<String> {
        let h = ProjectionHead::new(cfg, 0, "h", &Device::Cpu).unwrap();
        h.params().all().iter().map(|p| p.name.clone()).collect()
    }

    #[test]
    fn names_follow_the_pytorch_sequential() {
        let bn = |i: usize| {
            [
                "weight",
                "bias",
                "running_mean",
                "running_var",
                "num_batches_tracked",
            ]
            .map(|s| format!("{i}.{s}"))
        };
        let mut want = vec!["0.weight".to_string()];
        want.extend(bn(1));
        want.extend(["3.weight".into(), "3.bias".into()]);
        assert_eq!(names(ProjectionHeadConfig::new(8, 16, 4)), want);
        // MoCo v2: Linear(bias) – ReLU – Linear.
        let moco = ProjectionHeadConfig {
            hidden_bn: false,
            ..ProjectionHeadConfig::new(8, 16, 4)
        };
        assert_eq!(names(moco), ["0.weight", "0.bias", "2.weight", "2.bias"]);
        // SimSiam: 3 layers and a final BN without affine parameters (index 7).
        let simsiam = ProjectionHeadConfig {
            layers: 3,
            output_bn: true,
            ..ProjectionHeadConfig::new(8, 16, 4)
        };
        let n = names(simsiam);
        assert_eq!(
            n[n.len() - 3..],
            ["7.running_mean", "7.running_var", "7.num_batches_tracked"]
        );
        assert!(n.contains(&"6.bias".to_string()));
    }

    #[test]
    fn output_bn_standardises_each_dimension() -> Result<()> {
        let cfg = ProjectionHeadConfig {
            output_bn: true,
            ..ProjectionHeadConfig::new(3, 5, 2)
        };
        let h = ProjectionHead::new(cfg, 1, "p", &Device::Cpu)?;
        let x = Tensor::new(
            &[[1f32, 2., 3.], [0., -1., 2.], [4., 0., 1.], [2., 2., -2.]],
            &Device::Cpu,
        )?;
        let y = h.forward_t(&x, true)?;
        let mean = y.mean(0)?.to_vec1::<f32>()?;
        assert!(mean.iter().all(|m| m.abs() < 1e-5), "{mean:?}");
        Ok(())
    }
}
