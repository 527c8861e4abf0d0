//! EMA ("momentum") teachers: `θ_k ← m·θ_k + (1 − m)·θ_q` over parameters only, with a constant
//! or BYOL's cosine momentum schedule.
//!
//! As in every reference (MoCo `builder.py`, ReSSL, ReCo), the update runs **before** the key
//! forward pass of the same step, BatchNorm buffers are not averaged (the teacher runs in train
//! mode and keeps its own running statistics from its own batches), and the teacher starts as an
//! exact copy of the online network.

use gyre_encoders::ParamStore;
use gyre_kernels::{candle::bail, Result, Tensor, Var};
use std::collections::HashMap;

/// Every tensor of an EMA copy's `store` (parameters and BatchNorm buffers) under `prefix.`:
/// its part of a checkpoint.
pub fn copy_state(store: &ParamStore, prefix: &str) -> Vec<(String, Tensor)> {
    store
        .all()
        .iter()
        .map(|p| (format!("{prefix}.{}", p.name), p.var.as_tensor().clone()))
        .collect()
}

/// Restores what [`copy_state`] wrote; names the first missing or mismatched tensor.
pub fn load_copy_state(
    store: &ParamStore,
    prefix: &str,
    t: &HashMap<String, Tensor>,
) -> Result<()> {
    for p in store.all() {
        let key = format!("{prefix}.{}", p.name);
        let Some(v) = t.get(&key) else {
            bail!("checkpoint lacks {key}")
        };
        if v.dims() != p.var.dims() || v.dtype() != p.var.dtype() {
            bail!("{key}: shape or dtype differs from the model's");
        }
        p.var.set(v)?;
    }
    Ok(())
}

/// The momentum at each step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MomentumSchedule {
    Constant(f64),
    /// `m(t) = final − (final − base)·(cos(π t / T) + 1) / 2`: `base` at step 0, `final` at T
    /// (solo-learn `momentum.py`).
    Cosine {
        base: f64,
        final_m: f64,
    },
}

impl MomentumSchedule {
    /// From a recipe's `momentum` and optional `momentum_final`.
    pub fn new(base: f64, final_m: Option<f64>) -> Self {
        match final_m {
            Some(f) => MomentumSchedule::Cosine { base, final_m: f },
            None => MomentumSchedule::Constant(base),
        }
    }

    pub fn at(&self, step: u64, total: u64) -> f64 {
        match *self {
            MomentumSchedule::Constant(m) => m,
            MomentumSchedule::Cosine { base, final_m } => {
                let t = step as f64 / total.max(1) as f64;
                final_m - (final_m - base) * ((std::f64::consts::PI * t).cos() + 1.0) / 2.0
            }
        }
    }
}

/// Pairs of (online, teacher) parameters.
pub struct EmaTeacher {
    pairs: Vec<(Var, Var)>,
}

impl EmaTeacher {
    /// Links `teacher` to `online` (same names, same shapes, same order) and copies every online
    /// tensor, buffers included, into the teacher.
    pub fn new(online: &ParamStore, teacher: &ParamStore) -> Result<Self> {
        let (a, b) = (online.all(), teacher.all());
        if a.len() != b.len() {
            bail!("ema: online has {} tensors, teacher {}", a.len(), b.len());
        }
        let mut pairs = Vec::new();
        for (o, t) in a.iter().zip(b) {
            if o.name != t.name || o.var.dims() != t.var.dims() {
                bail!(
                    "ema: online '{}' {:?} does not match teacher '{}' {:?}",
                    o.name,
                    o.var.dims(),
                    t.name,
                    t.var.dims()
                );
            }
            t.var.set(&o.var.as_tensor().copy()?)?;
            if o.kind.trains() {
                pairs.push((o.var.clone(), t.var.clone()));
            }
        }
        Ok(Self { pairs })
    }

    /// One update with momentum `m`.
    pub fn update(&self, m: f64) -> Result<()> {
        for (o, t) in &self.pairs {
            let v = ((t.as_tensor() * m)? + (o.as_tensor() * (1.0 - m))?)?;
            t.set(&v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyre_encoders::ParamKind;
    use gyre_kernels::{Device, Tensor};

    #[test]
    fn tv14_ema_and_cosine_momentum() -> Result<()> {
        // docs/spec/test-vectors.md TV14: m = 0.99, θ_k = 1, θ_q = 0 → 0.99; buffers are copied,
        // never averaged.
        let dev = Device::Cpu;
        let mut online = ParamStore::new();
        online.add("w", Tensor::new(&[0f32], &dev)?, ParamKind::Weight)?;
        online.add(
            "running_mean",
            Tensor::new(&[5f32], &dev)?,
            ParamKind::Buffer,
        )?;
        let mut teacher = ParamStore::new();
        teacher.add("w", Tensor::new(&[7f32], &dev)?, ParamKind::Weight)?;
        teacher.add(
            "running_mean",
            Tensor::new(&[0f32], &dev)?,
            ParamKind::Buffer,
        )?;
        let ema = EmaTeacher::new(&online, &teacher)?;
        let tw = teacher.get("w").unwrap().var.clone();
        assert_eq!(tw.to_vec1::<f32>()?, [0.0], "starts as a copy");
        tw.set(&Tensor::new(&[1f32], &dev)?)?;
        teacher
            .get("running_mean")
            .unwrap()
            .var
            .set(&Tensor::new(&[3f32], &dev)?)?;
        ema.update(0.99)?;
        assert!((tw.to_vec1::<f32>()?[0] - 0.99).abs() < 1e-7);
        assert_eq!(
            teacher.get("running_mean").unwrap().var.to_vec1::<f32>()?,
            [3.0]
        );
        let s = MomentumSchedule::new(0.99, Some(1.0));
        for (t, want) in [(0, 0.99), (50, 0.995), (100, 1.0)] {
            assert!((s.at(t, 100) - want).abs() < 1e-12, "{t}: {}", s.at(t, 100));
        }
        assert_eq!(MomentumSchedule::new(0.9, None).at(70, 100), 0.9);
        Ok(())
    }

    #[test]
    fn mismatched_stores_are_an_error() -> Result<()> {
        let dev = Device::Cpu;
        let mut a = ParamStore::new();
        a.add("w", Tensor::new(&[0f32, 1.0], &dev)?, ParamKind::Weight)?;
        let mut b = ParamStore::new();
        b.add("w", Tensor::new(&[0f32], &dev)?, ParamKind::Weight)?;
        assert!(EmaTeacher::new(&a, &b).is_err());
        Ok(())
    }
}
