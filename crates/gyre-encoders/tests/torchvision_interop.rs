//! Interoperability with torchvision and PyTorch: a ResNet-18 state dict written by Python with
//! torchvision's exact names, shapes and dtypes loads into gyre's resnet18 (the `fc` classifier
//! is dropped), gyre's export reads back in Python as exactly torchvision's state dict without
//! `fc` (numpy and safetensors only), and the PyTorch loader every model card embeds
//! ([`gyre_encoders::hub::PYTORCH_LOADER`]) rebuilds resnet-mini and resnet18 in torch with the
//! same features as gyre's forward pass.
//!
//! Python: `$GYRE_PYTHON` (set by `scripts/test.sh`, which makes a venv with numpy, safetensors
//! and torch), else `python3`.

use gyre_encoders::hub::{save_pretrained, PretrainedConfig};
use gyre_encoders::weights::{load_torchvision, read_tensors};
use gyre_encoders::{ResNet, ResNetConfig};
use gyre_kernels::{DType, Device};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

fn python(args: &[&str]) -> HashMap<String, f64> {
    python_script("tests/torchvision_resnet18.py", args)
}

/// Runs a script of `tests/` with `$GYRE_PYTHON`; its stdout is one JSON object.
fn python_script<T: serde::de::DeserializeOwned>(script: &str, args: &[&str]) -> T {
    let py = std::env::var("GYRE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(script);
    let out = Command::new(&py)
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {py}: {e}; run scripts/test.sh, or set GYRE_PYTHON to a Python with numpy and safetensors"));
    assert!(
        out.status.success(),
        "{py} {}: {}\n(run scripts/test.sh, or set GYRE_PYTHON to a Python with numpy, safetensors and torch)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn sum(t: &gyre_kernels::Tensor) -> f64 {
    t.to_dtype(DType::F64)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[test]
fn torchvision_state_dicts_go_both_ways() {
    let dir = std::env::temp_dir().join(format!("gyre-tv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dev = Device::Cpu;

    // Python → gyre.
    let file = dir.join("tv_resnet18.safetensors");
    let sums = python(&["write", file.to_str().unwrap()]);
    let net = ResNet::new(ResNetConfig::preset("resnet18", 3).unwrap(), 0, &dev).unwrap();
    let tensors = read_tensors(&file, &dev).unwrap();
    load_torchvision(net.params(), &tensors, &file).unwrap();
    assert_eq!(
        net.params().all().len(),
        sums.len() - 2,
        "every tensor but fc.*"
    );
    for p in net.params().all() {
        let want = sums[&p.name];
        let got = sum(p.var.as_tensor());
        assert!(
            (got - want).abs() <= 1e-3 * want.abs().max(1.0),
            "{}: {got} vs {want}",
            p.name
        );
    }

    // gyre → Python.
    let model = dir.join("export");
    let cfg = ResNetConfig::preset("resnet18", 3).unwrap();
    let fresh = ResNet::new(cfg.clone(), 3, &dev).unwrap();
    let pc = PretrainedConfig::new(
        "resnet18",
        &cfg,
        &[0.485, 0.456, 0.406],
        &[0.229, 0.224, 0.225],
        224,
    );
    save_pretrained(&model, &fresh, &pc, "").unwrap();
    let back = python(&["check", model.join("model.safetensors").to_str().unwrap()]);
    for p in fresh.params().all() {
        let got = back[&p.name];
        let want = sum(p.var.as_tensor());
        assert!(
            (got - want).abs() <= 1e-3 * want.abs().max(1.0),
            "{}: {got} vs {want}",
            p.name
        );
    }

    // A wrong shape is refused, naming the tensor.
    let mini = ResNet::new(ResNetConfig::preset("resnet-mini", 3).unwrap(), 0, &dev).unwrap();
    let e = load_torchvision(mini.params(), &tensors, &file)
        .unwrap_err()
        .to_string();
    assert!(e.contains("conv1.weight") && e.contains("shape"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Gives every parameter and BatchNorm statistic of `net` seeded values away from its init, so
/// that a loader that misplaced any of them (or ignored the running statistics) would show.
fn perturb(net: &ResNet, seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for p in net.params().all() {
        let t = p.var.as_tensor();
        if t.dtype() != DType::F32 {
            continue;
        }
        let v: Vec<f32> = t
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| {
                if p.name.ends_with("running_var") {
                    rng.gen_range(0.5..1.5)
                } else if p.name.ends_with("running_mean") || p.name.ends_with("bias") {
                    rng.gen_range(-0.2..0.2)
                } else {
                    x * rng.gen_range(0.8..1.2)
                }
            })
            .collect();
        p.var
            .set(&gyre_kernels::Tensor::from_vec(v, t.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
}

/// The loader in every model card, run by torch on an exported resnet-mini (CIFAR stem, one
/// channel) and resnet18 (ImageNet stem, three channels): strict loading succeeds and the
/// eval-mode features equal gyre's.
#[test]
fn the_model_cards_pytorch_loader_reproduces_gyres_features() {
    let dir = std::env::temp_dir().join(format!("gyre-card-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let loader = dir.join("load_gyre_backbone.py");
    std::fs::write(&loader, gyre_encoders::hub::PYTORCH_LOADER).unwrap();
    let dev = Device::Cpu;
    for (arch, channels, side) in [("resnet-mini", 1, 28), ("resnet18", 3, 64)] {
        let cfg = ResNetConfig::preset(arch, channels).unwrap();
        let net = ResNet::new(cfg.clone(), 11, &dev).unwrap();
        perturb(&net, 12);
        let pc = PretrainedConfig::new(
            arch,
            &cfg,
            &vec![0.5; channels],
            &vec![0.25; channels],
            side,
        );
        let model = dir.join(arch);
        save_pretrained(&model, &net, &pc, "").unwrap();
        let x = gyre_kernels::Tensor::randn(0f32, 1.0, (3, channels, side, side), &dev).unwrap();
        let features = net.forward_t(&x, false).unwrap();
        let io = dir.join(format!("{arch}-io.safetensors"));
        let tensors: HashMap<String, gyre_kernels::Tensor> =
            [("x".to_string(), x), ("features".to_string(), features)].into();
        gyre_kernels::candle::safetensors::save(&tensors, &io).unwrap();
        let r: serde_json::Value = python_script(
            "tests/pytorch_loader_check.py",
            &[
                loader.to_str().unwrap(),
                model.to_str().unwrap(),
                io.to_str().unwrap(),
            ],
        );
        assert_eq!(
            r["shape"],
            serde_json::json!([3, net.feature_dim()]),
            "{arch}: {r}"
        );
        let diff = r["max_abs_diff"].as_f64().unwrap();
        let scale = r["max_abs"].as_f64().unwrap();
        assert!(scale > 0.1, "{arch}: features too small to compare: {r}");
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "{arch}: torch differs from gyre: {r}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
