//! Every ResNet preset with its default stem trains: the forward pass has the expected shape and
//! the backward pass matches central finite differences, through the ImageNet stem's max-pool
//! (ResNet-18/34/50) and the CIFAR stem (resnet-mini).

use gyre_encoders::{ResNet, ResNetConfig, Stem};
use gyre_kernels::{Device, Result, Tensor, Var};

fn rand_tensor(shape: &[usize], seed: u32) -> Result<Tensor> {
    // A small LCG: the values only need to be fixed and spread over (−1, 1).
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// `Σ tanh(features ⊙ r)`: non-linear in the features, so the check sees more than a constant.
fn loss(net: &ResNet, x: &Tensor, r: &Tensor) -> Result<Tensor> {
    // Summed in f64: the finite differences need the loss without f32 rounding of the sum.
    net.forward_t(x, true)?
        .mul(r)?
        .tanh()?
        .to_dtype(gyre_kernels::DType::F64)?
        .sum_all()
}

/// The derivative of the loss along the unit gradient direction û of all trainable parameters
/// at once, by central differences, against autograd's |∇L|, which it equals when the backward
/// pass is right. One direction over every parameter keeps the signal far above f32 rounding;
/// per-coordinate differences drown in it (and in the ReLU/max-pool kinks) in deep networks.
/// The step is small because the stem's conv dominates ∇L and the loss bends sharply along it
/// (ResNet-50: 26% off at 1e-3, 3.4% at 1e-4, 1.4% at 1e-5: converging, as it must when the
/// backward is right).
fn fd_check(arch: &str, net: &ResNet, x: &Tensor, r: &Tensor) -> Result<()> {
    let params: Vec<(String, Var)> = net
        .params()
        .trainable()
        .map(|p| (p.name.clone(), p.var.clone()))
        .collect();
    let grads = loss(net, x, r)?.backward()?;
    let flat = |t: &Tensor| t.flatten_all().and_then(|t| t.to_vec1::<f32>());
    let mut g = Vec::new();
    for (name, p) in &params {
        let gp = grads
            .get(p.as_tensor())
            .unwrap_or_else(|| panic!("{arch}: {name} has no gradient"));
        g.push(flat(gp)?);
    }
    let base: Vec<Vec<f32>> = params
        .iter()
        .map(|(_, p)| flat(p.as_tensor()))
        .collect::<Result<_>>()?;
    let g_norm = g
        .iter()
        .flatten()
        .map(|x| (*x as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(g_norm > 0.0, "{arch}: zero gradient, the check cannot fail");
    let at = |step: f64| -> Result<f64> {
        for (((_, p), b), d) in params.iter().zip(&base).zip(&g) {
            let v: Vec<f32> = b
                .iter()
                .zip(d)
                .map(|(b, d)| b + (step * *d as f64 / g_norm) as f32)
                .collect();
            p.set(&Tensor::from_vec(v, p.shape(), &Device::Cpu)?)?;
        }
        loss(net, x, r)?.to_scalar::<f64>()
    };
    let h = 1e-5;
    let fd = (at(h)? - at(-h)?) / (2.0 * h);
    at(0.0)?;
    assert!(
        (fd - g_norm).abs() <= 0.03 * g_norm,
        "{arch}: derivative along the gradient: finite difference {fd} vs autograd {g_norm}"
    );
    Ok(())
}

#[test]
fn every_preset_trains_with_its_default_stem() -> Result<()> {
    for (arch, channels, side, stem) in [
        ("resnet-mini", 1, 28, Stem::Cifar),
        ("resnet18", 3, 96, Stem::Imagenet),
        ("resnet34", 3, 96, Stem::Imagenet),
        ("resnet50", 3, 128, Stem::Imagenet),
    ] {
        let cfg = ResNetConfig::preset(arch, channels).unwrap();
        assert_eq!(cfg.stem, stem, "{arch}'s default stem");
        let net = ResNet::new(cfg, 3, &Device::Cpu).unwrap();
        let x = rand_tensor(&[8, channels, side, side], 1)?;
        let f = net.forward_t(&x, true)?;
        assert_eq!(f.dims(), &[8, net.feature_dim()], "{arch}");
        let r = rand_tensor(f.dims(), 2)?;
        fd_check(arch, &net, &x, &r)?;
    }
    Ok(())
}
