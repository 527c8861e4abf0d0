//! Test helpers: tensors from literals, closeness, and a central-difference gradient check.

use gyre_kernels::{Device, Result, Tensor, Var};

pub fn rows<const D: usize>(r: &[[f32; D]]) -> Result<Tensor> {
    let v: Vec<f32> = r.iter().flat_map(|x| x.iter().copied()).collect();
    Tensor::from_vec(v, (r.len(), D), &Device::Cpu)
}

/// The unit vector along a 3-vector.
pub fn n3(v: [f32; 3]) -> [f32; 3] {
    let s = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    [v[0] / s, v[1] / s, v[2] / s]
}

pub fn assert_close(got: f64, want: f64, rel: f64) {
    let tol = rel * want.abs().max(1e-3);
    assert!((got - want).abs() <= tol, "got {got}, want {want} (±{tol})");
}

/// Compares autograd's gradient of `f` at `x` with central differences in f64 arithmetic on
/// an f64 copy of the input; `tol` is the largest allowed relative error (by the max gradient).
pub fn check_gradient<F>(x: &Tensor, f: F, tol: f64) -> Result<()>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let x64 = x.to_dtype(gyre_kernels::DType::F64)?;
    let var = Var::from_tensor(&x64)?;
    let loss = f(var.as_tensor())?;
    let grads = loss.backward()?;
    let g = grads
        .get(var.as_tensor())
        .expect("no gradient")
        .flatten_all()?
        .to_vec1::<f64>()?;
    let base = x64.flatten_all()?.to_vec1::<f64>()?;
    let h = 1e-5;
    let mut scale = 0f64;
    let mut worst = 0f64;
    for i in 0..base.len() {
        let mut p = base.clone();
        p[i] += h;
        let lp = f(&Tensor::from_vec(p.clone(), x.shape(), &Device::Cpu)?)?.to_scalar::<f64>()?;
        p[i] -= 2.0 * h;
        let lm = f(&Tensor::from_vec(p, x.shape(), &Device::Cpu)?)?.to_scalar::<f64>()?;
        let fd = (lp - lm) / (2.0 * h);
        scale = scale.max(fd.abs());
        worst = worst.max((fd - g[i]).abs());
    }
    assert!(
        scale > 0.0,
        "gradient is identically zero: the check cannot fail"
    );
    assert!(
        worst / scale < tol,
        "max |fd − autograd| = {worst}, scale {scale}"
    );
    Ok(())
}
