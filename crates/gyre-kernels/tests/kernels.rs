//! Every fused kernel against the plain candle composition it replaces (forward and both
//! gradients), a finite-difference check of each custom backward, and bit-identical results at 1
//! and 2 threads. One body per test, run on every device this build has.

use gyre_kernels::ops::{
    add_relu, batch_norm_eval, batch_norm_eval_reference, batch_norm_train,
    batch_norm_train_reference, channel_affine, conv2d, conv2d_reference, max_pool2d,
    max_pool2d_reference, relu,
};
use gyre_kernels::{Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};

/// The CPU, plus CUDA device 0 when built with `cuda` and a GPU is present. On a GPU machine set
/// `GYRE_TEST_CUDA=1`: then a CUDA device that does not open fails the tests instead of leaving
/// them to the CPU.
fn devices() -> Vec<Device> {
    let mut d = vec![Device::Cpu];
    match gyre_kernels::select_device("cuda:0") {
        Ok(c) => d.push(c),
        Err(e) if std::env::var("GYRE_TEST_CUDA").is_ok_and(|v| v == "1") => {
            panic!("GYRE_TEST_CUDA=1 but {e}")
        }
        Err(_) => {}
    }
    d
}

fn rand_tensor(shape: &[usize], seed: u64, dev: &Device) -> Result<Tensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, shape, dev)
}

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// (n, c, h, w, o, k, stride, pad): odd channel counts, stride 2, padding 0/1, 1×1, batch 1, and
/// enough tiny images that several samples share one product.
type ConvCase = (usize, usize, usize, usize, usize, usize, usize, usize);
const CONV_CASES: &[ConvCase] = &[
    (1, 3, 7, 7, 5, 3, 1, 1),
    (2, 5, 8, 9, 6, 3, 2, 1),
    (3, 4, 6, 6, 7, 1, 2, 0),
    (2, 6, 5, 5, 3, 1, 1, 0),
    (20, 3, 4, 4, 2, 3, 1, 0),
    (40, 7, 3, 3, 9, 1, 1, 0),
    (2, 3, 9, 9, 4, 7, 2, 3),
    (33, 2, 5, 5, 3, 3, 2, 1),
];

#[test]
fn conv2d_equals_candle_forward_and_gradients() -> Result<()> {
    for dev in devices() {
        for (i, &(n, c, h, w, o, k, s, p)) in CONV_CASES.iter().enumerate() {
            let x = Var::from_tensor(&rand_tensor(&[n, c, h, w], i as u64, &dev)?)?;
            let wt = Var::from_tensor(&rand_tensor(&[o, c, k, k], 100 + i as u64, &dev)?)?;
            let y = conv2d(x.as_tensor(), wt.as_tensor(), s, p)?;
            let yr = conv2d_reference(x.as_tensor(), wt.as_tensor(), s, p)?;
            assert_eq!(y.dims(), yr.dims());
            assert!(
                max_rel(&y, &yr) < 1e-5,
                "case {i} forward {}",
                max_rel(&y, &yr)
            );
            let r = rand_tensor(y.dims(), 200 + i as u64, &dev)?;
            let g = y.mul(&r)?.sum_all()?.backward()?;
            let (gx, gw) = (
                g.get(x.as_tensor()).unwrap(),
                g.get(wt.as_tensor()).unwrap(),
            );
            // Plain loops in f64 are the reference for the gradients: candle 0.11.1's own conv
            // backward returns a wrongly shaped input gradient when (H + 2p − k) is not a multiple
            // of the stride, which `conv2d_reference` works around (checked below).
            let (nx, nw) = naive_conv_grads(
                &x.as_tensor().to_device(&Device::Cpu)?,
                &wt.as_tensor().to_device(&Device::Cpu)?,
                &r.to_device(&Device::Cpu)?,
                s,
                p,
            )?;
            assert!(
                max_rel(&gx.to_device(&Device::Cpu)?, &nx) < 1e-5,
                "case {i} grad input: {}",
                max_rel(gx, &nx)
            );
            assert!(
                max_rel(&gw.to_device(&Device::Cpu)?, &nw) < 1e-5,
                "case {i} grad weight: {}",
                max_rel(gw, &nw)
            );
            // The composition (the path on devices without a fused kernel) has the same
            // gradients on every case, the uneven ones included.
            let gr = yr.mul(&r)?.sum_all()?.backward()?;
            let (grx, grw) = (
                gr.get(x.as_tensor()).unwrap().to_device(&Device::Cpu)?,
                gr.get(wt.as_tensor()).unwrap().to_device(&Device::Cpu)?,
            );
            assert!(
                max_rel(&grx, &nx) < 1e-5,
                "case {i} reference grad input: {}",
                max_rel(&grx, &nx)
            );
            assert!(
                max_rel(&grw, &nw) < 1e-5,
                "case {i} reference grad weight: {}",
                max_rel(&grw, &nw)
            );
        }
    }
    Ok(())
}

/// Gradients of `Σ conv(x, w) ⊙ r` by direct loops in f64.
fn naive_conv_grads(
    x: &Tensor,
    w: &Tensor,
    r: &Tensor,
    s: usize,
    p: usize,
) -> Result<(Tensor, Tensor)> {
    let (n, c, h, wd) = x.dims4()?;
    let (o, _, kh, kw) = w.dims4()?;
    let (_, _, ho, wo) = r.dims4()?;
    let xv = x.flatten_all()?.to_vec1::<f32>()?;
    let wv = w.flatten_all()?.to_vec1::<f32>()?;
    let rv = r.flatten_all()?.to_vec1::<f32>()?;
    let mut gx = vec![0f64; xv.len()];
    let mut gw = vec![0f64; wv.len()];
    for b in 0..n {
        for oc in 0..o {
            for oy in 0..ho {
                for ox in 0..wo {
                    let g = rv[((b * o + oc) * ho + oy) * wo + ox] as f64;
                    for ic in 0..c {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let iy = (oy * s + ki) as isize - p as isize;
                                let ix = (ox * s + kj) as isize - p as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xi = ((b * c + ic) * h + iy as usize) * wd + ix as usize;
                                let wi = ((oc * c + ic) * kh + ki) * kw + kj;
                                gx[xi] += g * wv[wi] as f64;
                                gw[wi] += g * xv[xi] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    let to = |v: Vec<f64>, sh: &[usize]| {
        Tensor::from_vec(
            v.into_iter().map(|a| a as f32).collect::<Vec<f32>>(),
            sh,
            &Device::Cpu,
        )
    };
    Ok((to(gx, x.dims())?, to(gw, w.dims())?))
}

/// Central differences of `f` at a few coordinates of `v` against autograd's gradient.
fn fd_check(v: &Var, f: &dyn Fn() -> Result<Tensor>, h: f32, tol: f32) -> Result<()> {
    let g = f()?
        .backward()?
        .get(v.as_tensor())
        .unwrap()
        .flatten_all()?
        .to_vec1::<f32>()?;
    let base = v.flatten_all()?.to_vec1::<f32>()?;
    let shape = v.shape().clone();
    let scale = g.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(scale > 0.0, "zero gradient: the check cannot fail");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..12 {
        let j = rng.gen_range(0..base.len());
        let mut p = base.clone();
        p[j] += h;
        v.set(&Tensor::from_vec(p.clone(), &shape, v.device())?)?;
        let lp = f()?.to_scalar::<f32>()?;
        p[j] -= 2.0 * h;
        v.set(&Tensor::from_vec(p, &shape, v.device())?)?;
        let lm = f()?.to_scalar::<f32>()?;
        v.set(&Tensor::from_vec(base.clone(), &shape, v.device())?)?;
        let fd = (lp - lm) / (2.0 * h);
        assert!(
            (fd - g[j]).abs() <= tol * scale,
            "coord {j}: fd {fd} vs autograd {} (scale {scale})",
            g[j]
        );
    }
    Ok(())
}

#[test]
fn conv2d_finite_difference() -> Result<()> {
    for dev in devices() {
        for (i, &(n, c, h, w, o, k, s, p)) in CONV_CASES.iter().enumerate().take(4) {
            let x = Var::from_tensor(&rand_tensor(&[n, c, h, w], i as u64, &dev)?)?;
            let wt = Var::from_tensor(&rand_tensor(&[o, c, k, k], 50 + i as u64, &dev)?)?;
            let r = conv2d_reference(x.as_tensor(), wt.as_tensor(), s, p)?;
            let r = rand_tensor(r.dims(), 9, &dev)?;
            // A non-linear loss so that the check sees more than a constant gradient.
            let f = || {
                conv2d(x.as_tensor(), wt.as_tensor(), s, p)?
                    .mul(&r)?
                    .tanh()?
                    .sum_all()
            };
            fd_check(&x, &f, 1e-2, 1e-2)?;
            fd_check(&wt, &f, 1e-2, 1e-2)?;
        }
    }
    Ok(())
}

#[test]
fn batch_norm_equals_candle_forward_and_gradients() -> Result<()> {
    for dev in devices() {
        for (i, shape) in [
            vec![4, 3, 5, 5],
            vec![1, 7, 3, 2],
            vec![16, 9],
            vec![3, 5, 1, 1],
        ]
        .iter()
        .enumerate()
        {
            let c = shape[1];
            let x = Var::from_tensor(&rand_tensor(shape, i as u64, &dev)?.affine(3.0, 0.5)?)?;
            let wv = Var::from_tensor(&(rand_tensor(&[c], 10 + i as u64, &dev)? + 1.0)?)?;
            let bv = Var::from_tensor(&rand_tensor(&[c], 20 + i as u64, &dev)?)?;
            for affine in [true, false] {
                let (w, b) = if affine {
                    (Some(wv.as_tensor()), Some(bv.as_tensor()))
                } else {
                    (None, None)
                };
                let (y, st) = batch_norm_train(x.as_tensor(), w, b, 1e-5)?;
                let (yr, str_) = batch_norm_train_reference(x.as_tensor(), w, b, 1e-5)?;
                assert!(
                    max_rel(&y, &yr) < 1e-5,
                    "case {i} forward {}",
                    max_rel(&y, &yr)
                );
                assert!(max_rel(&st.mean, &str_.mean) < 1e-5 && max_rel(&st.var, &str_.var) < 1e-5);
                assert_eq!(st.count, str_.count);
                let r = rand_tensor(y.dims(), 30 + i as u64, &dev)?;
                let g = y.mul(&r)?.sum_all()?.backward()?;
                let gr = yr.mul(&r)?.sum_all()?.backward()?;
                let mut vars = vec![("x", &x)];
                if affine {
                    vars.push(("weight", &wv));
                    vars.push(("bias", &bv));
                }
                for (name, v) in vars {
                    let (a, b) = (
                        g.get(v.as_tensor()).unwrap(),
                        gr.get(v.as_tensor()).unwrap(),
                    );
                    assert!(
                        max_rel(a, b) < 1e-4,
                        "case {i} affine {affine} grad {name}: {}",
                        max_rel(a, b)
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn batch_norm_finite_difference() -> Result<()> {
    for dev in devices() {
        let x = Var::from_tensor(&rand_tensor(&[3, 4, 3, 3], 1, &dev)?)?;
        let w = Var::from_tensor(&(rand_tensor(&[4], 2, &dev)? + 1.5)?)?;
        let b = Var::from_tensor(&rand_tensor(&[4], 3, &dev)?)?;
        let r = rand_tensor(&[3, 4, 3, 3], 4, &dev)?;
        let f = || {
            batch_norm_train(
                x.as_tensor(),
                Some(w.as_tensor()),
                Some(b.as_tensor()),
                1e-5,
            )?
            .0
            .mul(&r)?
            .sqr()?
            .sum_all()
        };
        fd_check(&x, &f, 1e-2, 2e-2)?;
        fd_check(&w, &f, 1e-2, 2e-2)?;
        fd_check(&b, &f, 1e-2, 2e-2)?;
    }
    Ok(())
}

#[test]
fn eval_batch_norm_equals_candle_and_passes_finite_differences() -> Result<()> {
    for dev in devices() {
        for (i, shape) in [vec![4, 3, 5, 5], vec![1, 7, 3, 2], vec![16, 9]]
            .iter()
            .enumerate()
        {
            let c = shape[1];
            let x = Var::from_tensor(&rand_tensor(shape, 40 + i as u64, &dev)?.affine(2.0, 0.3)?)?;
            let mean = rand_tensor(&[c], 41 + i as u64, &dev)?;
            let var = (rand_tensor(&[c], 42 + i as u64, &dev)? + 1.5)?;
            let w = (rand_tensor(&[c], 43 + i as u64, &dev)? + 1.0)?;
            let b = rand_tensor(&[c], 44 + i as u64, &dev)?;
            let y = batch_norm_eval(x.as_tensor(), &mean, &var, Some(&w), Some(&b), 1e-5)?;
            let yr =
                batch_norm_eval_reference(x.as_tensor(), &mean, &var, Some(&w), Some(&b), 1e-5)?;
            assert!(max_rel(&y, &yr) < 1e-6, "case {i}: {}", max_rel(&y, &yr));
            let r = rand_tensor(shape, 45 + i as u64, &dev)?;
            let g = y.mul(&r)?.sum_all()?.backward()?;
            let gr = yr.mul(&r)?.sum_all()?.backward()?;
            let (a, b) = (
                g.get(x.as_tensor()).unwrap(),
                gr.get(x.as_tensor()).unwrap(),
            );
            assert!(max_rel(a, b) < 1e-6, "case {i} grad x: {}", max_rel(a, b));
        }
        // Gradients of the per-channel affine with respect to all three inputs.
        let x = Var::from_tensor(&rand_tensor(&[3, 4, 2, 3], 50, &dev)?)?;
        let a = Var::from_tensor(&(rand_tensor(&[4], 51, &dev)? + 1.0)?)?;
        let t = Var::from_tensor(&rand_tensor(&[4], 52, &dev)?)?;
        let r = rand_tensor(&[3, 4, 2, 3], 53, &dev)?;
        let f = || {
            channel_affine(x.as_tensor(), a.as_tensor(), t.as_tensor())?
                .mul(&r)?
                .sqr()?
                .sum_all()
        };
        fd_check(&x, &f, 1e-2, 1e-2)?;
        fd_check(&a, &f, 1e-2, 1e-2)?;
        fd_check(&t, &f, 1e-2, 1e-2)?;
    }
    Ok(())
}

#[test]
fn conv2d_skips_the_gradient_of_an_untracked_input() -> Result<()> {
    for dev in devices() {
        // Data straight from the loader has no graph behind it: only the weight gets a gradient,
        // and it equals the one computed when the input is tracked too.
        let x = rand_tensor(&[3, 2, 6, 6], 60, &dev)?;
        let w = Var::from_tensor(&rand_tensor(&[4, 2, 3, 3], 61, &dev)?)?;
        let g = conv2d(&x, w.as_tensor(), 2, 1)?
            .sqr()?
            .sum_all()?
            .backward()?;
        assert!(g.get(&x).is_none());
        let xv = Var::from_tensor(&x)?;
        let gv = conv2d(xv.as_tensor(), w.as_tensor(), 2, 1)?
            .sqr()?
            .sum_all()?
            .backward()?;
        assert!(gv.get(xv.as_tensor()).is_some());
        let (a, b) = (
            g.get(w.as_tensor()).unwrap(),
            gv.get(w.as_tensor()).unwrap(),
        );
        assert_eq!(max_rel(a, b), 0.0);
    }
    Ok(())
}

#[test]
fn kernels_are_bit_identical_at_one_and_two_threads() -> Result<()> {
    let run = |threads: usize| -> Vec<Vec<f32>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let x =
                Var::from_tensor(&rand_tensor(&[64, 8, 10, 10], 1, &Device::Cpu).unwrap()).unwrap();
            let w =
                Var::from_tensor(&rand_tensor(&[12, 8, 3, 3], 2, &Device::Cpu).unwrap()).unwrap();
            let y = conv2d(x.as_tensor(), w.as_tensor(), 1, 1).unwrap();
            let (z, _) = batch_norm_train(&y, None, None, 1e-5).unwrap();
            let z = max_pool2d(&z, 3, 2, 1).unwrap();
            let g = z.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            [
                z.clone(),
                g.get(x.as_tensor()).unwrap().clone(),
                g.get(w.as_tensor()).unwrap().clone(),
            ]
            .iter()
            .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
        })
    };
    assert_eq!(run(1), run(2));
    Ok(())
}

#[test]
fn relu_and_add_relu_equal_candle_and_pass_finite_differences() -> Result<()> {
    for dev in devices() {
        let a = Var::from_tensor(&rand_tensor(&[3, 5, 7, 7], 1, &dev)?)?;
        let b = Var::from_tensor(&rand_tensor(&[3, 5, 7, 7], 2, &dev)?)?;
        let r = rand_tensor(&[3, 5, 7, 7], 3, &dev)?;
        let y = add_relu(a.as_tensor(), b.as_tensor())?;
        let yr = (a.as_tensor() + b.as_tensor())?.relu()?;
        assert_eq!(max_rel(&y, &yr), 0.0);
        let g = y.mul(&r)?.sum_all()?.backward()?;
        let gr = yr.mul(&r)?.sum_all()?.backward()?;
        for v in [&a, &b] {
            assert_eq!(
                max_rel(
                    g.get(v.as_tensor()).unwrap(),
                    gr.get(v.as_tensor()).unwrap()
                ),
                0.0
            );
        }
        let y = relu(a.as_tensor())?;
        assert_eq!(max_rel(&y, &a.as_tensor().relu()?), 0.0);
        let g = y
            .mul(&r)?
            .sum_all()?
            .backward()?
            .get(a.as_tensor())
            .unwrap()
            .clone();
        let gr = a
            .as_tensor()
            .relu()?
            .mul(&r)?
            .sum_all()?
            .backward()?
            .get(a.as_tensor())
            .unwrap()
            .clone();
        assert_eq!(max_rel(&g, &gr), 0.0);
        let f = || {
            add_relu(a.as_tensor(), b.as_tensor())?
                .mul(&r)?
                .sqr()?
                .sum_all()
        };
        fd_check(&a, &f, 1e-3, 1e-2)?;
        let f = || relu(b.as_tensor())?.mul(&r)?.sqr()?.sum_all();
        fd_check(&b, &f, 1e-3, 1e-2)?;
    }
    Ok(())
}

/// (n, c, h, w, k, stride, pad): the ResNet stem's 3×3 / 2 / 1 on even and odd sides, a window
/// equal to the stride, stride 1, and a map barely larger than the window.
const POOL_CASES: &[(usize, usize, usize, usize, usize, usize, usize)] = &[
    (2, 3, 8, 8, 3, 2, 1),
    (1, 2, 7, 9, 3, 2, 1),
    (2, 2, 6, 6, 2, 2, 0),
    (3, 1, 5, 5, 3, 1, 1),
    (1, 4, 3, 3, 3, 2, 1),
    (2, 2, 16, 16, 3, 2, 1),
];

#[test]
fn max_pool_equals_the_composition_forward_and_gradient() -> Result<()> {
    for dev in devices() {
        for (i, &(n, c, h, w, k, s, p)) in POOL_CASES.iter().enumerate() {
            let x = Var::from_tensor(&rand_tensor(&[n, c, h, w], 300 + i as u64, &dev)?)?;
            let y = max_pool2d(x.as_tensor(), k, s, p)?;
            let yr = max_pool2d_reference(x.as_tensor(), k, s, p)?;
            assert_eq!(y.dims(), yr.dims(), "case {i}");
            assert_eq!(y.dims()[2], (h + 2 * p - k) / s + 1);
            assert_eq!(max_rel(&y, &yr), 0.0, "case {i} forward");
            let r = rand_tensor(y.dims(), 400 + i as u64, &dev)?;
            let g = y.mul(&r)?.sum_all()?.backward()?;
            let gr = yr.mul(&r)?.sum_all()?.backward()?;
            let (a, b) = (
                g.get(x.as_tensor()).unwrap(),
                gr.get(x.as_tensor()).unwrap(),
            );
            assert!(max_rel(a, b) < 1e-6, "case {i} grad: {}", max_rel(a, b));
        }
    }
    Ok(())
}

#[test]
fn max_pool_finite_difference() -> Result<()> {
    for dev in devices() {
        for (i, &(n, c, h, w, k, s, p)) in POOL_CASES.iter().enumerate() {
            let x = Var::from_tensor(&rand_tensor(&[n, c, h, w], 500 + i as u64, &dev)?)?;
            let r = rand_tensor(max_pool2d(x.as_tensor(), k, s, p)?.dims(), 9, &dev)?;
            let f = || {
                max_pool2d(x.as_tensor(), k, s, p)?
                    .mul(&r)?
                    .sqr()?
                    .sum_all()
            };
            // Random values are ~0.01 apart at worst here; h = 1e-3 never moves an argmax.
            fd_check(&x, &f, 1e-3, 1e-2)?;
        }
    }
    Ok(())
}

/// Hand-made values: padding is −∞ (an all-negative map keeps its values), and a window of
/// equal values sends its gradient to its first element only, as PyTorch does.
#[test]
fn max_pool_padding_and_ties_follow_pytorch() -> Result<()> {
    for dev in devices() {
        // 1×1×3×3, values −9..−1; 3×3 / 2 / 1 → 2×2, each output the window's largest.
        let v: Vec<f32> = (0..9).map(|i| i as f32 - 9.0).collect();
        let x = Tensor::from_vec(v, (1, 1, 3, 3), &dev)?;
        let y = max_pool2d(&x, 3, 2, 1)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(y, [-5.0, -4.0, -2.0, -1.0]);
        // A zero map (post-ReLU): every window ties; its gradient goes to its first cell.
        let z = Var::from_tensor(&Tensor::zeros(
            (1, 1, 4, 4),
            gyre_kernels::DType::F32,
            &dev,
        )?)?;
        let g = max_pool2d(z.as_tensor(), 2, 2, 0)?.sum_all()?.backward()?;
        let g = g
            .get(z.as_tensor())
            .unwrap()
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut want = [0f32; 16];
        for i in [0, 2, 8, 10] {
            want[i] = 1.0;
        }
        assert_eq!(g, want);
        // Overlapping windows (3×3 / 2 / 1): the centre of a 3×3 map is the maximum of all four
        // windows and gets all four gradients.
        let mut v = vec![0f32; 9];
        v[4] = 1.0;
        let c = Var::from_tensor(&Tensor::from_vec(v, (1, 1, 3, 3), &dev)?)?;
        let g = max_pool2d(c.as_tensor(), 3, 2, 1)?.sum_all()?.backward()?;
        let g = g
            .get(c.as_tensor())
            .unwrap()
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(g, [0.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0]);
        assert!(
            max_pool2d(&x, 3, 2, 2).is_err(),
            "padding over half the window"
        );
    }
    Ok(())
}
