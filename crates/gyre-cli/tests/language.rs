//! IRC's language level through the binary, CI-sized: the four shipped FMNIST recipes (SimCLR and
//! MoCo v2, cycle only and with auto-pairs) train on 512 embedded images and 300 WordNet glosses
//! (MiniLM from the local Hub cache `scripts/test.sh` lays out), their walk's loss falls, the
//! auto-pair term appears only where asked; `gyre text embed` reports the cache; bad input.

mod common;

use common::*;
use std::path::Path;

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn steps(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "step")
        .collect()
}

#[test]
fn every_language_recipe_trains_ci_sized_and_its_walk_learns() {
    let dir = tmp("language");
    let cache = dir.join("text-cache");
    let data = root().join("data");
    let sets_owned = [
        "data.kind=fashion-mnist-embedded".to_string(),
        "data.subset=512".into(),
        "train.batch_size=64".into(),
        "train.epochs=2".into(),
        "train.log_every=1".into(),
        "eval.baselines=false".into(),
        "eval.knn_every=0".into(),
        "method.queue=256".into(),
        "text.corpus_size=300".into(),
        format!("text.cache=\"{}\"", cache.display()),
        format!("text.hub_cache=\"{}\"", data.join("hf/hub").display()),
        format!("text.wordnet=\"{}\"", data.join("wordnet").display()),
    ];
    // The corpus is embedded once, before the runs (which then share the cache, so that they can
    // run side by side): `gyre text embed` builds it.
    let text_sets: Vec<String> = sets_owned[8..].to_vec();
    let embed = || {
        let mut args = vec![
            "text",
            "embed",
            "--quiet",
            "--recipe",
            "../../recipes/simclr-irc-language_resnet-mini_fmnist.toml",
        ];
        for s in &text_sets {
            args.extend(["--set", s]);
        }
        let out = gyre(&args, &root().join("crates/gyre-cli"));
        assert_ok(&out, "text embed");
        let v: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
        assert_eq!(v["meta"]["texts"], 300, "{v}");
        assert_eq!(v["meta"]["truncated"], 0, "{v}");
        v["outcome"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(embed(), "Built");
    let names: Vec<String> = ["simclr", "mocov2"]
        .iter()
        .flat_map(|m| ["", "-ap"].map(|v| format!("{m}-irc-language{v}_resnet-mini_fmnist")))
        .collect();
    // One `gyre` per core at a time, each on one thread.
    par_map(names, |name, one_thread| {
        let recipe = root().join(format!("recipes/{name}.toml"));
        let mocov2 = name.starts_with("mocov2");
        let mut sets: Vec<&str> = sets_owned
            .iter()
            .map(String::as_str)
            .filter(|s| mocov2 || !s.starts_with("method.queue"))
            .collect();
        if one_thread {
            sets.push("train.threads=1");
        }
        let run = dir.join(&name);
        let out = train_recipe(&recipe, &run, &sets, &dir);
        assert_ok(&out, &name);
        let steps = steps(&run);
        assert_eq!(steps.len(), 16, "{name}");
        let cyc: Vec<f64> = steps
            .iter()
            .map(|s| {
                s["irc_cycle_loss"]
                    .as_f64()
                    .expect("a cycle loss every step")
            })
            .collect();
        // 300 texts: a walk that learns nothing returns with p ≈ 1/64 or worse.
        let head: f64 = cyc[..4].iter().sum::<f64>() / 4.0;
        let tail: f64 = cyc[12..].iter().sum::<f64>() / 4.0;
        assert!(tail < head, "{name}: cycle loss {cyc:?}");
        for s in &steps {
            let d = s["lang_distinct_top1"].as_f64().unwrap();
            assert!(d > 0.0 && d <= 1.0, "{name}: {s}");
        }
        assert_eq!(
            steps.iter().any(|s| !s["irc_pair_loss"].is_null()),
            name.contains("-ap"),
            "{name}"
        );
        eprintln!("{name}: cycle loss {head:.3} → {tail:.3}");
    });
    // The evaluations of a run: every row in range, no pair used.
    let run = dir.join("simclr-irc-language-ap_resnet-mini_fmnist");
    let grid = dir.join("grid.png");
    let out = gyre(
        &[
            "eval",
            "--language",
            "--checkpoint",
            run.to_str().unwrap(),
            "--grid",
            grid.to_str().unwrap(),
        ],
        &dir,
    );
    assert_ok(&out, "eval --language");
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds = |k: &str| rows.iter().filter(|r| r["kind"] == k).count();
    assert_eq!(
        [
            kinds("cluster_ceiling"),
            kinds("zero_shot"),
            kinds("kmeans_hungarian"),
            kinds("auto_pair_precision")
        ],
        [1, 6, 2, 2],
        "{rows:?}"
    );
    assert_eq!(kinds("top_texts"), 20, "two test images per class");
    // Two columns of ten images with their texts.
    let png = image::open(&grid).unwrap();
    assert_eq!((png.width(), png.height()), (1520, 1400));
    for r in &rows {
        for key in ["top1", "precision", "chance"] {
            if let Some(x) = r[key].as_f64() {
                assert!((0.0..=1.0).contains(&x), "{r}");
            }
        }
    }
    // The runs used the cache and left it whole: `gyre text embed` finds it.
    assert_eq!(embed(), "Hit");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_language_recipes_are_one_line_errors() {
    let dir = tmp("language-bad");
    let recipe = root().join("recipes/simclr-irc-language_resnet-mini_fmnist.toml");
    let r = recipe.to_str().unwrap();
    let dry = |sets: &[&str]| {
        let mut a = vec!["train", "--dry-run", "--recipe", r];
        for s in sets {
            a.extend(["--set", s]);
        }
        gyre(&a, &dir)
    };
    // The overlay's language keys are refused at instance level, by name.
    assert_clean_error(&dry(&["irc.level=\"instance\""]), "reads it");
    assert_clean_error(&dry(&["irc.text_sample=0"]), "irc.text_sample");
    assert_clean_error(&dry(&["irc.hops=3"]), "irc.hops");
    assert_clean_error(&dry(&["text.corpus_size=0"]), "text.corpus_size");
    // A missing model: the run says how to fetch it, before any training.
    let empty = dir.join("no-hub");
    std::fs::create_dir_all(&empty).unwrap();
    let run = dir.join("r");
    let out = train_recipe(
        &recipe,
        &run,
        &[&format!("text.hub_cache=\"{}\"", empty.display())],
        &dir,
    );
    assert_clean_error(&out, "cargo xtask data minilm");
    // An empty corpus folder.
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    std::fs::write(corpus.join("a.txt"), "\n\n").unwrap();
    let hub = root().join("data/hf/hub");
    let out = train_recipe(
        &recipe,
        &run,
        &[
            &format!("text.hub_cache=\"{}\"", hub.display()),
            &format!("text.corpus=\"{}\"", corpus.display()),
        ],
        &dir,
    );
    assert_clean_error(&out, "text.corpus: no texts");
    std::fs::remove_dir_all(&dir).ok();
}
