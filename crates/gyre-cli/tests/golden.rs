//! Nothing learned changes: every FMNIST recipe (and the default one), CI-sized on the embedded
//! split, logs exactly the values recorded in `tests/golden/fmnist_recipes.json` — every step
//! line's loss and logged terms, and the final kNN line — bit for bit.
//!
//! The same runs are also held to what learning looks like, record or not (so a new method, or a
//! re-recorded file, cannot pass by matching garbage): every registered image method has a base
//! and an IRC recipe here; every step's loss is finite and its collapse gauge in (0, 1/√2]; the
//! kNN monitor is far above chance; where eight steps show it, the loss falls; a base recipe's
//! checkpoint evaluates to the kNN it logged; an IRC recipe logs its cycle and pair diagnostics
//! in range and saves its memory in the checkpoint.
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

/// Whether a run's name (a recipe's, or a base recipe's with `+irc-ap` for the overlay) has IRC.
fn with_irc(name: &str) -> bool {
    name.contains("-irc") || name.ends_with("+irc-ap")
}

/// The CI-sized run of one recipe: 256 embedded images, batch 64, two epochs of 4 steps (so
/// InterCLR's inter term runs in the second), kNN at the end only; queues and memories small
/// enough to fill. `one_thread`: the run and its evaluation get `--threads 1`.
fn run(
    name: &str,
    recipe: Option<&Path>,
    overlay: Option<&Path>,
    dir: &Path,
    one_thread: bool,
) -> serde_json::Value {
    let run = dir.join(name);
    let threads: &[&str] = if one_thread { &["--threads", "1"] } else { &[] };
    let mut args: Vec<String> = vec!["train".into(), "--quiet".into()];
    args.extend(threads.iter().map(|a| a.to_string()));
    if let Some(r) = recipe {
        args.extend(["--recipe".into(), r.display().to_string()]);
    }
    if let Some(o) = overlay {
        args.extend(["--overlay".into(), o.display().to_string()]);
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
    // A queue small enough to hold only real keys after a few steps, for every method with one.
    if gyre_train::method::lookup(method).is_some_and(|e| (e.keys)().contains(&"queue")) {
        sets.push("method.queue=256");
    }
    if method == "interclr" {
        sets.extend([
            "method.clusters=8",
            "method.pool=100",
            "method.negatives=32",
        ]);
    }
    if with_irc(name) {
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
    check_learning(name, &run, &lines, &summary(&out), dir, threads);
    serde_json::Value::Array(lines)
}

/// What a CI-sized run of a recipe must show whatever the record says (the module doc).
fn check_learning(
    name: &str,
    run: &Path,
    lines: &[serde_json::Value],
    summary: &serde_json::Value,
    dir: &Path,
    threads: &[&str],
) {
    let steps: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "step").collect();
    assert_eq!(steps.len(), 8, "{name}: step lines");
    let losses: Vec<f64> = steps.iter().map(|l| l["loss"].as_f64().unwrap()).collect();
    assert!(losses.iter().all(|l| l.is_finite()), "{name}: {losses:?}");
    for l in &steps {
        // Normalised rows: the per-dimension spread is in (0, 1/√2]; 0 is collapse.
        let std = l["embed_std"].as_f64().unwrap_or(f64::NAN);
        assert!(std > 0.0 && std <= 0.7072, "{name}: embed_std {std} in {l}");
    }
    let knn = lines
        .iter()
        .rfind(|l| l["kind"] == "knn")
        .expect("a kNN line");
    let top1 = knn["knn_top1"].as_f64().unwrap();
    // Ten classes: chance is 0.1, a collapsed encoder scores about that; random init ~0.45.
    assert!(top1 > 0.3, "{name}: kNN {top1}");
    assert_eq!(summary["knn_top1"].as_f64(), Some(top1), "{name}: summary");
    let method = name.split(['_', '-']).next().unwrap();
    if !with_irc(name) {
        // The first step from which the loss is comparable: a queue of 256 starts as noise (the
        // loss near 0) and holds only real keys after 2 steps of 128 (MoCo v2), 4 of 64
        // (InterCLR). ReSSL's relational loss and ReCo's global term rise towards ln K while
        // real embeddings replace the noise, so eight steps do not show them learning (their
        // FMNIST-20k rows in docs/results.md do).
        let from = match method {
            "default" | "simclr" | "byol" | "simsiam" => Some(0),
            "mocov2" => Some(2),
            "interclr" => Some(4),
            _ => None,
        };
        if let Some(from) = from {
            let (first, last) = (losses[from], losses[7]);
            assert!(last < first, "{name}: loss {first} → {last}: {losses:?}");
        }
        // The checkpoint evaluates to the kNN the run logged.
        let mut args = vec!["eval", "--checkpoint", run.to_str().unwrap(), "--k", "20"];
        args.extend(threads);
        let out = gyre(&args, dir);
        assert_ok(&out, name);
        let ev: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii_end()).unwrap();
        assert_eq!(ev["knn_top1"].as_f64(), Some(top1), "{name}: eval");
        return;
    }
    for key in ["irc_cycle_acc", "irc_pair_precision"] {
        let v = knn[key].as_f64().unwrap_or(f64::NAN);
        assert!((0.0..=1.0).contains(&v), "{name}: {key} {v} in {knn}");
    }
    assert!(
        steps
            .iter()
            .any(|l| l["irc_cycle_loss"].as_f64().is_some_and(|c| c > 0.0)),
        "{name}: no step with a positive cycle loss"
    );
    if name.contains("-irc-ap") || name.ends_with("+irc-ap") {
        assert!(
            steps
                .iter()
                .any(|l| l["irc_pair_loss"].as_f64().is_some_and(f64::is_finite)),
            "{name}: no step with an auto-pair loss"
        );
    }
    let ck = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    let needle = b"state.irc.memory.field0";
    assert!(
        ck.windows(needle.len()).any(|w| w == needle),
        "{name}: memory not saved"
    );
}

#[test]
fn every_fmnist_recipe_logs_its_recorded_values() {
    let dir = tmp("golden");
    let isa = isa();
    let mut runs: Vec<(String, Option<PathBuf>, Option<PathBuf>)> = recipes()
        .into_iter()
        .map(|(name, recipe)| (name, recipe, None))
        .collect();
    // Every registered image method is trained here, from the registry, base and with IRC: a new
    // method needs its base recipe and no edit; without an IRC recipe of its own, the base runs
    // again under `overlays/irc-ap.toml` (clip methods: tests/dense.rs).
    let overlay = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/overlays/irc-ap.toml");
    for entry in gyre_train::method::REGISTRY
        .iter()
        .filter(|e| e.clips.is_none())
    {
        let base = format!("{}_resnet-mini_fmnist", entry.name);
        let recipe = runs
            .iter()
            .find(|(n, _, _)| *n == base)
            .and_then(|(_, r, _)| r.clone())
            .unwrap_or_else(|| panic!("recipes/{base}.toml: missing for a registered method"));
        let irc = format!("{}-irc-ap_resnet-mini_fmnist", entry.name);
        if !runs.iter().any(|(n, _, _)| *n == irc) {
            runs.push((
                format!("{base}+irc-ap"),
                Some(recipe),
                Some(overlay.clone()),
            ));
        }
    }
    // The runs are independent processes: one per core at a time, each on one thread (the
    // record holds at any thread count, so this also checks that).
    let got: BTreeMap<String, serde_json::Value> =
        par_map(runs, |(name, recipe, overlay), one_thread| {
            let v = run(
                &name,
                recipe.as_deref(),
                overlay.as_deref(),
                &dir,
                one_thread,
            );
            (name, v)
        })
        .into_iter()
        .collect();
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
