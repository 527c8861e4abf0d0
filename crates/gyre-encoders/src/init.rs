//! Seeded initialisation. Candle's CPU `set_seed` does not work, so every initial value is drawn
//! here from a ChaCha stream keyed on the seed and the parameter's name: the same seed gives the
//! same model whatever the order modules are built in.

use gyre_kernels::{Device, Result, Tensor};
use gyre_rng::ChaCha8Rng;
use rand::Rng;
use rand_distr::{Distribution, Normal};

/// Draws initial values for named parameters.
#[derive(Debug, Clone)]
pub struct Init {
    seed: u64,
    device: Device,
}

fn name_hash(name: &str) -> u64 {
    // FNV-1a: stable across platforms and Rust versions (unlike `DefaultHasher`).
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

impl Init {
    pub fn new(seed: u64, device: &Device) -> Self {
        Self {
            seed,
            device: device.clone(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    fn rng(&self, name: &str) -> ChaCha8Rng {
        gyre_rng::stream([self.seed, name_hash(name), gyre_rng::tag(b"gyreinit"), 0])
    }

    /// Kaiming normal, fan-out, ReLU gain (torchvision's ResNet conv init): std = sqrt(2 / fan_out).
    pub fn kaiming_normal_fan_out(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let fan_out = shape[0] * shape[2..].iter().product::<usize>();
        let std = (2.0 / fan_out as f64).sqrt();
        let normal = Normal::new(0.0, std).expect("finite std");
        let mut rng = self.rng(name);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng) as f32).collect();
        Tensor::from_vec(v, shape, &self.device)
    }

    /// PyTorch's default `nn.Linear` init: U(−1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    pub fn linear_uniform(&self, name: &str, shape: &[usize], fan_in: usize) -> Result<Tensor> {
        let bound = 1.0 / (fan_in as f32).sqrt();
        let mut rng = self.rng(name);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-bound..bound)).collect();
        Tensor::from_vec(v, shape, &self.device)
    }

    /// timm's `trunc_normal_(std)`: N(0, std²) redrawn outside [−2, 2] (absolute bounds, as
    /// timm's defaults: for std 0.02 a plain normal in practice).
    pub fn trunc_normal(&self, name: &str, shape: &[usize], std: f64) -> Result<Tensor> {
        let normal = Normal::new(0.0, std).expect("finite std");
        let mut rng = self.rng(name);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| loop {
                let x: f64 = normal.sample(&mut rng);
                if (-2.0..=2.0).contains(&x) {
                    break x as f32;
                }
            })
            .collect();
        Tensor::from_vec(v, shape, &self.device)
    }

    pub fn constant(&self, shape: &[usize], value: f32) -> Result<Tensor> {
        Tensor::full(value, shape, &self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_and_right_scale() -> Result<()> {
        let a =
            Init::new(7, &Device::Cpu).kaiming_normal_fan_out("conv1.weight", &[64, 3, 3, 3])?;
        let b =
            Init::new(7, &Device::Cpu).kaiming_normal_fan_out("conv1.weight", &[64, 3, 3, 3])?;
        let c =
            Init::new(8, &Device::Cpu).kaiming_normal_fan_out("conv1.weight", &[64, 3, 3, 3])?;
        let (va, vb, vc) = (
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?,
            c.flatten_all()?.to_vec1::<f32>()?,
        );
        assert_eq!(va, vb);
        assert_ne!(va, vc);
        let var: f32 = va.iter().map(|x| x * x).sum::<f32>() / va.len() as f32;
        let want = 2.0 / (64.0 * 9.0);
        assert!((var / want - 1.0).abs() < 0.15, "variance {var} vs {want}");
        Ok(())
    }
}
