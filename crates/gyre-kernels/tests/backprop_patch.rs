//! The workspace's candle-core (third_party/candle-core, see its README) stores a tensor's first
//! gradient as it is instead of adding it to a zero-filled tensor. These tests pin that down: the
//! patch is in use, and gradients that several consumers add up are still right.

use gyre_kernels::candle::{CpuStorage, CustomOp1, Layout, Shape};
use gyre_kernels::{Device, Result, Tensor, Var};
use std::sync::{Arc, Mutex};

/// Identity whose backward hands the incoming gradient on (contiguous) and keeps a handle to it.
struct Probe(Arc<Mutex<Option<Tensor>>>);

impl CustomOp1 for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = s else {
            gyre_kernels::candle::bail!("probe: f32 only")
        };
        let (a, b) = l
            .contiguous_offsets()
            .expect("probe: contiguous input only");
        Ok((CpuStorage::F32(v[a..b].to_vec()), l.shape().clone()))
    }
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = grad.contiguous()?;
        *self.0.lock().unwrap() = Some(g.clone());
        Ok(Some(g))
    }
}

#[test]
fn the_first_gradient_is_stored_not_added_to_zeros() -> Result<()> {
    let x = Var::from_vec(vec![1f32, 2., 3., 4.], 4, &Device::Cpu)?;
    let slot = Arc::new(Mutex::new(None));
    let y = x.as_tensor().apply_op1(Probe(slot.clone()))?;
    let grads = (y * 3.0)?.sum_all()?.backward()?;
    let g = grads.get(x.as_tensor()).expect("x has a gradient");
    let handed_on = slot.lock().unwrap().clone().expect("probe backward ran");
    // Upstream candle would store `zeros + g`, a new tensor; the patch stores `g` itself.
    assert_eq!(g.id(), handed_on.id());
    assert_eq!(g.to_vec1::<f32>()?, vec![3.0; 4]);
    Ok(())
}

#[test]
fn gradients_of_shared_tensors_still_add_up() -> Result<()> {
    // f(x) = Σ (2x + x ⊙ x + reshape(x)ᵀ-summed-back) over a 2×3 x: every element of x feeds three
    // consumers, so its gradient is the sum of three contributions: 2 + 2x + 1.
    let vals = vec![0.5f32, -1.0, 2.0, 3.0, -0.25, 1.5];
    let x = Var::from_vec(vals.clone(), (2, 3), &Device::Cpu)?;
    let t = x.as_tensor();
    let f = ((t * 2.0)?.sum_all()? + t.sqr()?.sum_all()?)?;
    let f = (f + t.reshape((3, 2))?.t()?.sum_all()?)?;
    let g = f.backward()?;
    let got = g
        .get(t)
        .expect("x has a gradient")
        .flatten_all()?
        .to_vec1::<f32>()?;
    let want: Vec<f32> = vals.iter().map(|v| 2.0 + 2.0 * v + 1.0).collect();
    assert_eq!(got, want);
    Ok(())
}
