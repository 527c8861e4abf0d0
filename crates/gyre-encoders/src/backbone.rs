//! The encoder a method trains, whichever family it is: a ResNet or a ViT behind one interface
//! (the pooled feature, the dense map, the parameters, a fresh copy of the same architecture).
//! What only a ResNet has (its torchvision export layout) is reached through [`Backbone::resnet`].

use crate::error::EncoderError;
use crate::params::ParamStore;
use crate::resnet::{ResNet, ResNetConfig};
use crate::vit::{ViT, VitConfig};
use gyre_kernels::{Device, Result, Tensor};

/// The architecture of a [`Backbone`].
#[derive(Debug, Clone, PartialEq)]
pub enum BackboneConfig {
    ResNet(ResNetConfig),
    ViT(VitConfig),
}

/// A ResNet or a Vision Transformer.
pub enum Backbone {
    ResNet(ResNet),
    ViT(ViT),
}

impl From<ResNet> for Backbone {
    fn from(r: ResNet) -> Self {
        Backbone::ResNet(r)
    }
}

impl From<ViT> for Backbone {
    fn from(v: ViT) -> Self {
        Backbone::ViT(v)
    }
}

impl Backbone {
    /// A backbone of `cfg` with initial weights keyed on `seed`.
    pub fn new(
        cfg: &BackboneConfig,
        seed: u64,
        device: &Device,
    ) -> std::result::Result<Self, EncoderError> {
        Ok(match cfg {
            BackboneConfig::ResNet(c) => Backbone::ResNet(ResNet::new(c.clone(), seed, device)?),
            BackboneConfig::ViT(c) => Backbone::ViT(ViT::new(c.clone(), seed, device)?),
        })
    }

    /// Its architecture.
    pub fn config(&self) -> BackboneConfig {
        match self {
            Backbone::ResNet(r) => BackboneConfig::ResNet(r.config().clone()),
            Backbone::ViT(v) => BackboneConfig::ViT(v.config().clone()),
        }
    }

    /// A fresh backbone of the same architecture (teachers and memory encoders copy into it).
    pub fn fresh(&self, seed: u64, device: &Device) -> std::result::Result<Self, EncoderError> {
        Self::new(&self.config(), seed, device)
    }

    /// The ResNet, when it is one.
    pub fn resnet(&self) -> Option<&ResNet> {
        match self {
            Backbone::ResNet(r) => Some(r),
            Backbone::ViT(_) => None,
        }
    }

    /// The width of [`Self::forward_t`]'s features.
    pub fn feature_dim(&self) -> usize {
        match self {
            Backbone::ResNet(r) => r.feature_dim(),
            Backbone::ViT(v) => v.feature_dim(),
        }
    }

    /// Image channels it takes.
    pub fn in_channels(&self) -> usize {
        match self {
            Backbone::ResNet(r) => r.config().in_channels,
            Backbone::ViT(v) => v.config().in_channels,
        }
    }

    /// Input pixels per cell of [`Self::forward_dense_t`]'s map (a ViT's: its patch).
    pub fn output_stride(&self) -> usize {
        match self {
            Backbone::ResNet(r) => r.config().output_stride(),
            Backbone::ViT(v) => v.config().patch_size,
        }
    }

    /// Parameters and buffers (torchvision's names for a ResNet, timm's for a ViT).
    pub fn params(&self) -> &ParamStore {
        match self {
            Backbone::ResNet(r) => r.params(),
            Backbone::ViT(v) => v.params(),
        }
    }

    /// The feature `[B, F]` of images `[B, C, H, W]`: a ResNet's pooled last stage (`train`:
    /// BatchNorm in training mode), a ViT's class token (`train`: stochastic depth when armed).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Backbone::ResNet(r) => r.forward_t(x, train),
            Backbone::ViT(v) => v.forward_t(x, train),
        }
    }

    /// Arms stochastic depth for the training-mode forwards of one step (`Some(step key)`) or
    /// disarms it ([`ViT::arm_drop_path`]); a ResNet has none.
    pub fn arm_drop_path(&self, step_key: Option<u64>) {
        if let Backbone::ViT(v) = self {
            v.arm_drop_path(step_key);
        }
    }

    /// The dense map `[B, F, h, w]`: a ResNet's last stage, a ViT's patch tokens after the final
    /// norm laid out on their grid.
    pub fn forward_dense_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Backbone::ResNet(r) => r.forward_dense_t(x, train),
            Backbone::ViT(v) => {
                let (b, _, h, w) = x.dims4()?;
                let p = v.config().patch_size;
                let t = v.tokens_t(x, train)?;
                let n = t.dim(1)? - 1;
                t.narrow(1, 1, n)?
                    .reshape((b, h / p, w / p, v.feature_dim()))?
                    .permute((0, 3, 1, 2))?
                    .contiguous()
            }
        }
    }
}
