//! A trained backbone goes out as a Hub model folder and comes back, through an offline Hub cache,
//! with the same kNN top-1; its model card carries the result.

use gyre_encoders::{from_pretrained_with, HubOptions};
use gyre_kernels::Device;
use gyre_train::Recipe;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gyre-export-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gyre(args: &[&str], cwd: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_gyre"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn exported_backbone_loads_from_an_offline_hub_cache_with_the_same_knn() {
    let dir = tmp("run");
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    // A local path in the recipe, which the card must not carry.
    let out_dir = format!("train.out_dir={}", dir.join("local-runs").display());
    let summary = gyre(
        &[
            "train",
            "--quiet",
            "--run-dir",
            r,
            "--set",
            "data.subset=512",
            "--set",
            "train.epochs=1",
            "--set",
            "train.batch_size=64",
            "--set",
            "eval.knn_k=20",
            "--set",
            &out_dir,
        ],
        &dir,
    );
    let knn = summary["knn_top1"].as_f64().unwrap();
    let model = dir.join("model");
    gyre(
        &[
            "export",
            "--checkpoint",
            r,
            "--out",
            model.to_str().unwrap(),
            "--linear-epochs",
            "5",
        ],
        &dir,
    );
    let card = std::fs::read_to_string(model.join("README.md")).unwrap();
    assert!(card.starts_with("---\nlibrary_name: gyre\n"), "{card}");
    assert!(
        card.contains("model-index:") && card.contains(&format!("value: {:.2}", 100.0 * knn)),
        "{card}"
    );
    assert!(card.contains("[method]"), "the recipe is in the card");
    assert!(
        card.contains("name: linear probe on frozen L2-normalised backbone features (5 epochs)")
            && card.contains("name: top-5"),
        "{card}"
    );
    // Issue 19: the baselines of the same run beside the kNN; the PyTorch loader that works for
    // every architecture (run by torch in gyre-encoders' interop test), not torchvision's
    // resnet for a resnet-mini; no licence unless given; no local path.
    for (what, v) in [
        ("raw pixels", &summary["raw_knn_top1"]),
        ("the random-init encoder", &summary["init_knn_top1"]),
    ] {
        let v = v.as_f64().unwrap();
        assert!(
            card.contains(&format!("{what} {:.2}%", 100.0 * v)),
            "{what}: {card}"
        );
    }
    assert!(
        card.contains("name: kNN top-1 of raw pixels (baseline)"),
        "{card}"
    );
    assert!(card.contains(gyre_encoders::hub::PYTORCH_LOADER.trim_end()));
    assert!(!card.contains("license:"), "{card}");
    assert!(
        !card.contains(dir.to_str().unwrap()),
        "a local path: {card}"
    );
    gyre(
        &[
            "export",
            "--checkpoint",
            r,
            "--out",
            model.to_str().unwrap(),
            "--license",
            "apache-2.0",
            "--overwrite",
        ],
        &dir,
    );
    let card = std::fs::read_to_string(model.join("README.md")).unwrap();
    assert!(card.contains("\nlicense: apache-2.0\n"), "{card}");

    // The Hub cache layout: blobs, a snapshot of relative symlinks, refs/main (no newline).
    let cache = dir.join("hub");
    let repo = cache.join("models--gyre-ssl--resnet-mini-fmnist-test");
    let rev = "89abcdef0123456789abcdef0123456789abcdef";
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots").join(rev)).unwrap();
    for f in ["model.safetensors", "config.json", "README.md"] {
        std::fs::copy(model.join(f), repo.join("blobs").join(f)).unwrap();
        std::os::unix::fs::symlink(
            format!("../../blobs/{f}"),
            repo.join("snapshots").join(rev).join(f),
        )
        .unwrap();
    }
    std::fs::write(repo.join("refs/main"), rev).unwrap();
    let opts = HubOptions {
        cache_dir: Some(cache),
        revision: "main".into(),
        local_files_only: true,
    };
    let p = from_pretrained_with("gyre-ssl/resnet-mini-fmnist-test", &opts, &Device::Cpu).unwrap();
    assert_eq!(p.config.in_channels, 1);
    assert_eq!(p.config.image_size, 28);

    let recipe = Recipe::load(&run.join("recipe.toml"), &[]).unwrap();
    let data = gyre_train::data_setup::load(&recipe).unwrap();
    let (bank, queries) = data.eval.as_ref().unwrap();
    assert_eq!((&data.mean, &data.std), (&p.config.mean, &p.config.std));
    let again = gyre_train::eval::knn_eval(
        &gyre_encoders::Backbone::from(p.backbone),
        bank,
        queries,
        &p.config.mean,
        &p.config.std,
        recipe.eval.knn_k,
        recipe.eval.knn_t,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(again, knn);
    std::fs::remove_dir_all(&dir).ok();
}
