//! Interoperability with torchvision, checked by Python with numpy and safetensors only (no
//! torch): a ResNet-18 state dict written by Python with torchvision's exact names, shapes and
//! dtypes loads into gyre's resnet18 (the `fc` classifier is dropped), and gyre's export reads
//! back in Python as exactly torchvision's state dict without `fc`.
//!
//! Python: `$GYRE_PYTHON` (set by `scripts/test.sh`, which makes a venv with numpy and
//! safetensors), else `python3`.

use gyre_encoders::hub::{save_pretrained, PretrainedConfig};
use gyre_encoders::weights::{load_torchvision, read_tensors};
use gyre_encoders::{ResNet, ResNetConfig};
use gyre_kernels::{DType, Device};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

fn python(args: &[&str]) -> HashMap<String, f64> {
    let py = std::env::var("GYRE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/torchvision_resnet18.py");
    let out = Command::new(&py)
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {py}: {e}; run scripts/test.sh, or set GYRE_PYTHON to a Python with numpy and safetensors"));
    assert!(
        out.status.success(),
        "{py} {}: {}\n(run scripts/test.sh, or set GYRE_PYTHON to a Python with numpy and safetensors)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON of tensor sums")
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
