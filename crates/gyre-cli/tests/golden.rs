//! Nothing learned changes: every FMNIST recipe (and the default one), CI-sized on the embedded
//! split, logs exactly the values recorded in `tests/golden/fmnist_recipes.json` — every step
//! line's loss and logged terms, and the final kNN line — bit for bit.
//!
//! Floating-point results repeat exactly on one kind of CPU at any thread count, but the `gemm`
//! crate picks its microkernel (and so its cache blocking over k) from the CPU at run time, so the
//! file holds one record per kernel family: `avx512` (x86-64 with AVX-512F) and `avx2`. Record
//! them with `GYRE_BLESS=1 cargo test --release --test golden` (and, for the other family,
//! `GYRE_GOLDEN_ISA=avx2` in a build whose `gemm` lacks its `x86-v4` feature); the file says
//! which commit recorded each.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The kernel family this process's `gemm` runs (see the module doc).
fn isa() -> String {
    if let Ok(v) = std::env::var("GYRE_GOLDEN_ISA") {
        return v;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return "avx512".into();
    }
    "avx2".into()
}

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/fmnist_recipes.json")
}

/// The recipes held to the record: the default and every `*_fmnist.toml` but the language level's
/// (recorded after the redesign; `tests/language.rs` trains them CI-sized on their text side).
fn recipes() -> Vec<(String, Option<PathBuf>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
    let mut v: Vec<(String, Option<PathBuf>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.to_string_lossy();
            n.ends_with("_fmnist.toml") && !n.contains("-irc-language")
        })
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().to_string(),
                Some(p),
            )
        })
        .collect();
    v.sort();
    v.insert(0, ("default".into(), None));
    v
}

/// The CI-sized run of one recipe: 256 embedded images, batch 64, two epochs of 4 steps (so
/// InterCLR's inter term runs in the second), kNN at the end only; queues and memories small
/// enough to fill.
fn run(name: &str, recipe: Option<&Path>, dir: &Path) -> serde_json::Value {
    let run = dir.join(name);
    let mut args: Vec<String> = vec!["train".into(), "--quiet".into()];
    if let Some(r) = recipe {
        args.extend(["--recipe".into(), r.display().to_string()]);
    }
    args.extend(["--run-dir".into(), run.display().to_string()]);
    let mut sets = vec![
        "data.kind=fashion-mnist-embedded",
        "data.knn_bank=pretrain",
        "data.subset=256",
        "train.batch_size=64",
        "train.epochs=2",
        "train.log_every=1",
        "eval.baselines=false",
        "eval.knn_every=0",
        "eval.knn_k=20",
    ];
    let method = name.split(['_', '-']).next().unwrap();
    if ["mocov2", "ressl", "reco", "interclr"].contains(&method) {
        sets.push("method.queue=256");
    }
    if method == "interclr" {
        sets.extend([
            "method.clusters=8",
            "method.pool=100",
            "method.negatives=32",
        ]);
    }
    if name.contains("-irc") {
        sets.push("irc.memory=128");
    }
    for s in sets {
        args.extend(["--set".into(), s.into()]);
    }
    let out = gyre(&args.iter().map(String::as_str).collect::<Vec<_>>(), dir);
    assert_ok(&out, name);
    // Every logged value but the clock and the memory.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "step" || v["kind"] == "knn")
        .map(|mut v| {
            let o = v.as_object_mut().unwrap();
            o.remove("img_per_s");
            o.remove("peak_rss_mb");
            v
        })
        .collect();
    serde_json::Value::Array(lines)
}

#[test]
fn every_fmnist_recipe_logs_its_recorded_values() {
    let dir = tmp("golden");
    let isa = isa();
    let mut got = BTreeMap::new();
    for (name, recipe) in recipes() {
        got.insert(name.clone(), run(&name, recipe.as_deref(), &dir));
    }
    let path = golden_path();
    let mut file: serde_json::Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    if std::env::var("GYRE_BLESS").is_ok_and(|v| v == "1") {
        file[&isa] = serde_json::json!({
            "recorded_at": std::env::var("GYRE_BLESS_COMMIT").unwrap_or_default(),
            "recipes": got,
        });
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&file).unwrap() + "\n").unwrap();
        eprintln!("golden: recorded {} recipes for {isa}", got.len());
        return;
    }
    let want = file[&isa]["recipes"]
        .as_object()
        .unwrap_or_else(|| panic!("{}: no record for {isa}", path.display()));
    // Every recorded recipe is still here and logs the same; recipes added since (a new method)
    // have no record to hold them to.
    for name in want.keys() {
        assert!(got.contains_key(name), "{name}: recorded, now gone");
    }
    for (name, lines) in got.iter().filter(|(n, _)| want.contains_key(*n)) {
        let w = want[name].as_array().unwrap();
        let g = lines.as_array().unwrap();
        assert_eq!(w.len(), g.len(), "{name}: logged lines");
        for (a, b) in w.iter().zip(g) {
            assert_eq!(a, b, "{name}: recorded vs now");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
