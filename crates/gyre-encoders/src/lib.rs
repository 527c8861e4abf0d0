//! Encoders for gyre: the ResNet family (BasicBlock and Bottleneck, CIFAR or ImageNet stem, any
//! input channel count) with BatchNorm that trains, the Vision Transformer (timm's names),
//! projection heads, and weights stored under torchvision's / timm's key names so that they load
//! into PyTorch unchanged.

pub mod backbone;
pub mod dense;
pub mod error;
pub mod head;
pub mod hub;
pub mod init;
pub mod layers;
pub mod params;
pub mod resnet;
pub mod vit;
pub mod weights;

pub use backbone::{Backbone, BackboneConfig};
pub use dense::{upsample_bilinear, DenseHead};
pub use error::EncoderError;
pub use head::{Activation, ProjectionHead, ProjectionHeadConfig};
pub use hub::{from_pretrained, from_pretrained_with, HubOptions, Pretrained, PretrainedConfig};
pub use layers::WeightNormLinear;
pub use params::{Param, ParamKind, ParamStore};
pub use resnet::{Block, ResNet, ResNetConfig, Stem};
pub use vit::{resample_pos_embed, ViT, VitConfig};
