//! Small fixtures for the methods' unit tests: a tiny recipe environment (resnet-mini, a narrow
//! head), random views, batches and step contexts.

use super::{BuildContext, MethodEnv};
use crate::config::{EncoderConfig, HeadConfig};
use crate::step::StepContext;
use gyre_data::Batch;
use gyre_kernels::{Device, Result, Tensor};

/// A recipe environment for tests: resnet-mini on one channel, head 64 → 32, seed 0.
pub struct Fixture {
    pub encoder: EncoderConfig,
    pub head: HeadConfig,
    pub batch_size: usize,
    pub device: Device,
}

impl Fixture {
    pub fn new(batch_size: usize) -> Self {
        Self {
            encoder: EncoderConfig {
                arch: "resnet-mini".into(),
                bn_splits: 1,
                stem: None,
                output_stride: None,
                stages: None,
                image_size: None,
                drop_path_rate: None,
            },
            head: HeadConfig {
                hidden: 64,
                output: 32,
                layers: 2,
                batch_norm: true,
                output_bn: false,
                activation: gyre_encoders::Activation::Relu,
            },
            batch_size,
            device: Device::Cpu,
        }
    }

    pub fn env(&self) -> MethodEnv<'_> {
        MethodEnv {
            seed: 0,
            batch_size: self.batch_size,
            encoder: &self.encoder,
            head: &self.head,
        }
    }

    pub fn build_context(&self) -> BuildContext<'_> {
        BuildContext {
            env: self.env(),
            in_channels: 1,
            dataset_len: 256,
            device: &self.device,
        }
    }
}

/// `n` views of `b` seeded random 1×16×16 images.
pub fn random_views(n: usize, b: usize, seed: u64) -> Result<Vec<Tensor>> {
    (0..n)
        .map(|v| {
            let mut rng = gyre_rng::stream([seed, v as u64, gyre_rng::tag(b"testview"), 0]);
            let vals: Vec<f32> = (0..b * 256)
                .map(|_| rand::Rng::gen_range(&mut rng, -1.0f32..1.0))
                .collect();
            Tensor::from_vec(vals, (b, 1, 16, 16), &Device::Cpu)
        })
        .collect()
}

/// A batch of `b` images with indices 0..b and labels `i mod 4`; two views, each the whole
/// 16 × 16 image (no crop, no flip).
pub fn batch(b: usize) -> Batch {
    let whole = gyre_data::ViewGeometry::whole(16);
    Batch {
        epoch: 0,
        step: 0,
        indices: (0..b).collect(),
        labels: Some((0..b as u32).map(|i| i % 4).collect()),
        views: Vec::new(),
        view_shapes: Vec::new(),
        geometry: vec![vec![whole; b]; 3],
        partners: Vec::new(),
        second_partners: Vec::new(),
    }
}

/// A square crop of side `side` at (`top`, `left`), flipped or not, shown as a `size`-pixel view.
pub fn square_view(
    top: f32,
    left: f32,
    side: f32,
    flip: bool,
    size: usize,
) -> gyre_data::ViewGeometry {
    gyre_data::ViewGeometry {
        top,
        left,
        height: side,
        width: side,
        flip,
        size,
    }
}

/// Step `step` of a 20-step run of 4 steps per epoch.
pub fn ctx(step: u64) -> StepContext {
    StepContext {
        step,
        total_steps: 20,
        steps_per_epoch: 4,
    }
}

/// One step of the method `settings` build, from fixture `f` on random views drawn with `seed`,
/// and its pair loss with every row paired to its own view-2 base embedding (the memory's entry
/// of the same image): `(the step's output, that pair loss)`.
pub fn step_and_own_pair_loss<S: super::MethodSettings>(
    settings: &S,
    f: &Fixture,
    seed: u64,
) -> anyhow::Result<(crate::step::StepOutput, f64)> {
    let b = f.batch_size;
    let mut m = settings.build(&f.build_context())?;
    let mut out = m.step(&random_views(2, b, seed)?, &batch(b), ctx(0))?;
    let pair = out.pair.take().expect("a two-view method exposes its pair");
    let p = crate::step::AutoPositives {
        rows: (0..b as u32).collect(),
        positives: pair.base_v2.clone(),
        weight: 1.0,
    };
    let loss = (pair.pair_loss)(&p)?.to_scalar::<f32>()? as f64;
    Ok((out, loss))
}
