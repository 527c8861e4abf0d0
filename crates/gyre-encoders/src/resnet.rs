//! The ResNet family (He et al., CVPR 2016), in torchvision's layout and parameter names:
//! `conv1`, `bn1`, `layer{1..4}.{i}.conv{1,2,3}` / `bn{1,2,3}` / `downsample.{0,1}`.
//!
//! Two stems: ImageNet (7×7 s2 conv + 3×3 s2 max-pool) and CIFAR (3×3 s1 conv, no max-pool, as in
//! the MoCo CIFAR demo, solo-learn and lightly). The output is the global-average-pooled feature.

use crate::error::EncoderError;
use crate::init::Init;
use crate::layers::{BatchNorm, Conv2d};
use crate::params::ParamStore;
use gyre_kernels::ops::{add_relu, max_pool2d, relu};
use gyre_kernels::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

/// Residual block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Block {
    /// Two 3×3 convs (ResNet-18/34); expansion 1.
    Basic,
    /// 1×1, 3×3, 1×1 convs (ResNet-50+); expansion 4; stride on the 3×3 (torchvision v1.5).
    Bottleneck,
}

impl Block {
    pub fn expansion(self) -> usize {
        match self {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }
}

/// Input stem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    /// 3×3 stride-1 conv, no max-pool: for 28–64 px images.
    Cifar,
    /// 7×7 stride-2 conv and 3×3 stride-2 max-pool: for 224 px images.
    Imagenet,
}

impl Stem {
    /// Input pixels per pixel of the stem's output.
    pub fn stride(self) -> usize {
        match self {
            Stem::Cifar => 1,
            Stem::Imagenet => 4,
        }
    }
}

/// Architecture of a ResNet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResNetConfig {
    pub block: Block,
    /// Blocks per stage.
    pub depths: Vec<usize>,
    /// Base width per stage (the block output is `width · expansion`).
    pub widths: Vec<usize>,
    pub stem: Stem,
    pub in_channels: usize,
    /// SplitBatchNorm (MoCo's CIFAR demo): in training, every BatchNorm normalises each of this
    /// many interleaved sub-batches (samples `n ≡ s mod splits`) with its own statistics, which
    /// simulates per-GPU BatchNorm on one device. 1 = plain BatchNorm.
    #[serde(default = "one")]
    pub bn_splits: usize,
    /// Stride of each stage's first block; empty = the usual 1, 2, 2, 2, …. Dense encoders set
    /// the late stages' to 1 (see [`Self::dense`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strides: Vec<usize>,
}

fn one() -> usize {
    1
}

impl ResNetConfig {
    /// A named preset: `resnet-mini` (one BasicBlock per stage, widths 32–256, CIFAR stem),
    /// `resnet18`, `resnet34`, `resnet50` (ImageNet stem; switch with [`Self::with_stem`]).
    pub fn preset(name: &str, in_channels: usize) -> std::result::Result<Self, EncoderError> {
        let (block, depths, widths, stem) = match name {
            "resnet-mini" => (
                Block::Basic,
                vec![1, 1, 1, 1],
                vec![32, 64, 128, 256],
                Stem::Cifar,
            ),
            "resnet18" => (
                Block::Basic,
                vec![2, 2, 2, 2],
                vec![64, 128, 256, 512],
                Stem::Imagenet,
            ),
            "resnet34" => (
                Block::Basic,
                vec![3, 4, 6, 3],
                vec![64, 128, 256, 512],
                Stem::Imagenet,
            ),
            "resnet50" => (
                Block::Bottleneck,
                vec![3, 4, 6, 3],
                vec![64, 128, 256, 512],
                Stem::Imagenet,
            ),
            other => return Err(EncoderError::UnknownArch(other.to_string())),
        };
        let cfg = Self {
            block,
            depths,
            widths,
            stem,
            in_channels,
            bn_splits: 1,
            strides: Vec::new(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The stride of each stage's first block.
    pub fn stage_strides(&self) -> Vec<usize> {
        if self.strides.is_empty() {
            (0..self.depths.len())
                .map(|s| if s == 0 { 1 } else { 2 })
                .collect()
        } else {
            self.strides.clone()
        }
    }

    /// Input pixels per output cell of the dense feature map.
    pub fn output_stride(&self) -> usize {
        self.stem.stride() * self.stage_strides().iter().product::<usize>()
    }

    /// The first `stages` stages only (CRW drops ResNet-18's layer4: 3).
    pub fn with_stages(mut self, stages: usize) -> std::result::Result<Self, EncoderError> {
        if stages == 0 || stages > self.depths.len() {
            return Err(EncoderError::Config(format!(
                "stages {stages}: the preset has {}",
                self.depths.len()
            )));
        }
        let mut strides = self.stage_strides();
        strides.truncate(stages);
        self.depths.truncate(stages);
        self.widths.truncate(stages);
        if !self.strides.is_empty() {
            self.strides = strides;
        }
        Ok(self)
    }

    /// A dense encoder (CRW's recipe): the strides of the stages after the one that reaches
    /// `output_stride` set to 1, so the feature map has one cell per `output_stride` input
    /// pixels. ResNet-18 at 8 (with 3 stages, as CRW): ImageNet stem (4) and layer2 (2), layer3 at
    /// stride 1; resnet-mini at 8: the CIFAR stem and strides 1, 2, 2, 2; at 4: 1, 2, 2, 1.
    pub fn dense(mut self, output_stride: usize) -> std::result::Result<Self, EncoderError> {
        let mut strides = self.stage_strides();
        let mut total = self.stem.stride();
        for s in strides.iter_mut() {
            if total * *s > output_stride {
                *s = 1;
            }
            total *= *s;
        }
        if total != output_stride {
            return Err(EncoderError::Config(format!(
                "output stride {output_stride}: the stem and {} stages of stride ≤ 2 reach {total}",
                self.depths.len()
            )));
        }
        self.strides = strides;
        self.validate()?;
        Ok(self)
    }

    pub fn with_stem(mut self, stem: Stem) -> Self {
        self.stem = stem;
        self
    }

    /// Uses SplitBatchNorm with `splits` sub-batches (see [`Self::bn_splits`]).
    pub fn with_bn_splits(mut self, splits: usize) -> Self {
        self.bn_splits = splits;
        self
    }

    pub fn validate(&self) -> std::result::Result<(), EncoderError> {
        if self.bn_splits == 0 {
            return Err(EncoderError::Config("bn_splits must be at least 1".into()));
        }
        if self.depths.is_empty() || self.depths.len() != self.widths.len() {
            return Err(EncoderError::Config(format!(
                "depths ({}) and widths ({}) must be non-empty and of equal length",
                self.depths.len(),
                self.widths.len()
            )));
        }
        if !self.strides.is_empty()
            && (self.strides.len() != self.depths.len() || self.strides.contains(&0))
        {
            return Err(EncoderError::Config(format!(
                "strides {:?}: one positive stride per stage ({} stages)",
                self.strides,
                self.depths.len()
            )));
        }
        if self.depths.contains(&0) || self.widths.contains(&0) || self.in_channels == 0 {
            return Err(EncoderError::Config(
                "depths, widths and in_channels must be positive".into(),
            ));
        }
        Ok(())
    }

    /// Dimension of the pooled feature.
    pub fn feature_dim(&self) -> usize {
        self.widths.last().copied().unwrap_or(0) * self.block.expansion()
    }
}

#[derive(Debug, Clone)]
struct ResBlock {
    convs: Vec<Conv2d>,
    bns: Vec<BatchNorm>,
    downsample: Option<(Conv2d, BatchNorm)>,
}

impl ResBlock {
    fn new(
        store: &mut ParamStore,
        init: &Init,
        prefix: &str,
        block: Block,
        c_in: usize,
        width: usize,
        stride: usize,
    ) -> Result<Self> {
        let c_out = width * block.expansion();
        let p = |s: &str| format!("{prefix}.{s}");
        let (convs, bns) = match block {
            Block::Basic => {
                let c1 = Conv2d::new(store, init, &p("conv1"), c_in, width, 3, stride, 1)?;
                let b1 = BatchNorm::new(store, init, &p("bn1"), width, true)?;
                let c2 = Conv2d::new(store, init, &p("conv2"), width, width, 3, 1, 1)?;
                let b2 = BatchNorm::new(store, init, &p("bn2"), width, true)?;
                (vec![c1, c2], vec![b1, b2])
            }
            Block::Bottleneck => {
                let c1 = Conv2d::new(store, init, &p("conv1"), c_in, width, 1, 1, 0)?;
                let b1 = BatchNorm::new(store, init, &p("bn1"), width, true)?;
                let c2 = Conv2d::new(store, init, &p("conv2"), width, width, 3, stride, 1)?;
                let b2 = BatchNorm::new(store, init, &p("bn2"), width, true)?;
                let c3 = Conv2d::new(store, init, &p("conv3"), width, c_out, 1, 1, 0)?;
                let b3 = BatchNorm::new(store, init, &p("bn3"), c_out, true)?;
                (vec![c1, c2, c3], vec![b1, b2, b3])
            }
        };
        let downsample = if stride != 1 || c_in != c_out {
            let c = Conv2d::new(store, init, &p("downsample.0"), c_in, c_out, 1, stride, 0)?;
            let b = BatchNorm::new(store, init, &p("downsample.1"), c_out, true)?;
            Some((c, b))
        } else {
            None
        };
        Ok(Self {
            convs,
            bns,
            downsample,
        })
    }

    fn set_bn_splits(&mut self, splits: usize) {
        for b in self
            .bns
            .iter_mut()
            .chain(self.downsample.iter_mut().map(|d| &mut d.1))
        {
            b.set_splits(splits);
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let last = self.convs.len() - 1;
        let mut h = x.clone();
        for (i, (c, b)) in self.convs.iter().zip(&self.bns).enumerate() {
            h = b.forward_t(&c.forward(&h)?, train)?;
            if i != last {
                h = relu(&h)?;
            }
        }
        let shortcut = match &self.downsample {
            Some((c, b)) => b.forward_t(&c.forward(x)?, train)?,
            None => x.clone(),
        };
        add_relu(&h, &shortcut)
    }
}

/// A ResNet backbone. `forward_t` maps `[N, C, H, W]` images to `[N, feature_dim]` features.
#[derive(Debug, Clone)]
pub struct ResNet {
    config: ResNetConfig,
    conv1: Conv2d,
    bn1: BatchNorm,
    blocks: Vec<ResBlock>,
    store: ParamStore,
}

impl ResNet {
    /// Builds the network with seeded initial weights (torchvision's init: Kaiming normal fan-out
    /// for convs, BatchNorm scale 1 and shift 0).
    pub fn new(
        config: ResNetConfig,
        seed: u64,
        device: &Device,
    ) -> std::result::Result<Self, EncoderError> {
        config.validate()?;
        let init = Init::new(seed, device);
        let mut store = ParamStore::new();
        let w0 = config.widths[0];
        let conv1 = match config.stem {
            Stem::Cifar => {
                Conv2d::new(&mut store, &init, "conv1", config.in_channels, w0, 3, 1, 1)?
            }
            Stem::Imagenet => {
                Conv2d::new(&mut store, &init, "conv1", config.in_channels, w0, 7, 2, 3)?
            }
        };
        let mut bn1 = BatchNorm::new(&mut store, &init, "bn1", w0, true)?;
        bn1.set_splits(config.bn_splits);
        let mut blocks = Vec::new();
        let mut c_in = w0;
        let strides = config.stage_strides();
        for (s, (&depth, &width)) in config.depths.iter().zip(&config.widths).enumerate() {
            for i in 0..depth {
                let stride = if i == 0 { strides[s] } else { 1 };
                let prefix = format!("layer{}.{}", s + 1, i);
                blocks.push(ResBlock::new(
                    &mut store,
                    &init,
                    &prefix,
                    config.block,
                    c_in,
                    width,
                    stride,
                )?);
                blocks
                    .last_mut()
                    .expect("pushed")
                    .set_bn_splits(config.bn_splits);
                c_in = width * config.block.expansion();
            }
        }
        Ok(Self {
            config,
            conv1,
            bn1,
            blocks,
            store,
        })
    }

    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    pub fn feature_dim(&self) -> usize {
        self.config.feature_dim()
    }

    /// Parameters and buffers under torchvision names (no `fc`: this is a backbone).
    pub fn params(&self) -> &ParamStore {
        &self.store
    }

    /// Pooled features `[B, feature_dim]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_dense_t(x, train)?.mean((2, 3))
    }

    /// The last stage's feature map `[B, feature_dim, H / os, W / os]` (`os` =
    /// [`ResNetConfig::output_stride`], rounding as the convolutions do).
    pub fn forward_dense_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = relu(&self.bn1.forward_t(&self.conv1.forward(x)?, train)?)?;
        if self.config.stem == Stem::Imagenet {
            h = max_pool2d(&h, 3, 2, 1)?;
        }
        for b in &self.blocks {
            h = b.forward_t(&h, train)?;
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyre_kernels::DType;

    /// Output stride 8 the CRW way: ResNet-18 keeps stride 8 from layer2 on and drops layer4
    /// (its dense map on 64 px is 8×8 with 256 channels); resnet-mini reaches 8 with its four
    /// stages; the pooled features are the dense map's mean.
    #[test]
    fn dense_encoders_have_output_stride_8() -> Result<()> {
        let r18 = ResNetConfig::preset("resnet18", 3)
            .unwrap()
            .with_stages(3)
            .unwrap()
            .dense(8)
            .unwrap();
        assert_eq!(
            (r18.stage_strides(), r18.output_stride()),
            (vec![1, 2, 1], 8)
        );
        let mini = ResNetConfig::preset("resnet-mini", 3)
            .unwrap()
            .dense(8)
            .unwrap();
        assert_eq!(
            (mini.stage_strides(), mini.output_stride()),
            (vec![1, 2, 2, 2], 8)
        );
        let mini4 = ResNetConfig::preset("resnet-mini", 3)
            .unwrap()
            .dense(4)
            .unwrap();
        assert_eq!(mini4.stage_strides(), vec![1, 2, 2, 1]);
        let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu)?;
        for (cfg, dims) in [
            (r18, [2, 256, 8, 8]),
            (mini, [2, 256, 8, 8]),
            (mini4, [2, 256, 16, 16]),
        ] {
            let net = ResNet::new(cfg, 0, &Device::Cpu).unwrap();
            let dense = net.forward_dense_t(&x, false)?;
            assert_eq!(dense.dims(), &dims);
            let pooled = net.forward_t(&x, false)?;
            let diff = (pooled - dense.mean((2, 3))?)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert_eq!(diff, 0.0);
        }
        let e = ResNetConfig::preset("resnet18", 3)
            .unwrap()
            .with_stages(3)
            .unwrap()
            .dense(2)
            .unwrap_err();
        assert!(e.to_string().contains("output stride 2"), "{e}");
        assert!(ResNetConfig::preset("resnet18", 3)
            .unwrap()
            .with_stages(5)
            .is_err());
        Ok(())
    }

    #[test]
    fn resnet_mini_has_the_reference_size() {
        // step_bench.py's resnet-mini with its 256→512→128 head has 1.42 M parameters.
        let net = ResNet::new(
            ResNetConfig::preset("resnet-mini", 1).unwrap(),
            0,
            &Device::Cpu,
        )
        .unwrap();
        let backbone = net.params().num_trainable();
        let head = 256 * 512 + 2 * 512 + 512 * 128 + 128;
        assert_eq!(backbone, 1_225_824);
        assert_eq!(backbone + head, 1_423_584);
    }

    #[test]
    fn torchvision_resnet18_and_50_counts_and_names() {
        // torchvision resnet18 has 11,689,512 parameters with its 512×1000 fc; resnet50 25,557,032.
        let r18 = ResNet::new(
            ResNetConfig::preset("resnet18", 3).unwrap(),
            0,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(r18.params().num_trainable() + 512 * 1000 + 1000, 11_689_512);
        let r50 = ResNet::new(
            ResNetConfig::preset("resnet50", 3).unwrap(),
            0,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            r50.params().num_trainable() + 2048 * 1000 + 1000,
            25_557_032
        );
        let names: Vec<&str> = r18.params().all().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            &names[..7],
            &[
                "conv1.weight",
                "bn1.weight",
                "bn1.bias",
                "bn1.running_mean",
                "bn1.running_var",
                "bn1.num_batches_tracked",
                "layer1.0.conv1.weight"
            ]
        );
        assert!(names.contains(&"layer2.0.downsample.0.weight"));
        assert!(names.contains(&"layer4.1.bn2.running_var"));
        // torchvision's state_dict has 122 entries for resnet18 without fc (102 + 20 counters).
        assert_eq!(names.len(), 122 - 2);
    }

    #[test]
    fn forward_shapes_for_both_stems() -> Result<()> {
        let mini = ResNet::new(
            ResNetConfig::preset("resnet-mini", 1).unwrap(),
            0,
            &Device::Cpu,
        )
        .unwrap();
        let x = Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu)?;
        assert_eq!(mini.forward_t(&x, true)?.dims(), &[2, 256]);
        let cfg = ResNetConfig {
            block: Block::Bottleneck,
            depths: vec![1, 1],
            widths: vec![8, 16],
            stem: Stem::Imagenet,
            in_channels: 5,
            bn_splits: 1,
            strides: Vec::new(),
        };
        let net = ResNet::new(cfg, 0, &Device::Cpu).unwrap();
        let x = Tensor::ones((2, 5, 33, 33), DType::F32, &Device::Cpu)?;
        assert_eq!(net.forward_t(&x, true)?.dims(), &[2, 64]);
        // 33 → 17 (conv1) → 9 (max-pool) → 9 → 5.
        assert_eq!(net.forward_dense_t(&x, true)?.dims(), &[2, 64, 5, 5]);
        assert_eq!(net.forward_t(&x, false)?.dims(), &[2, 64]);
        Ok(())
    }
}
