//! The `gyre` binary against what a new user runs into (issue 19): the ImageNet stem, image
//! folders whose splits differ, bad evaluation flags, run folders that already hold a run,
//! truncated JPEGs, Ctrl-C and SIGTERM, grey images, bad `--set` keys and TOML, resuming a
//! finished run — and a fuzz of every shipped recipe and of `gyre eval`'s flags. Each test failed
//! before its fix.

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

/// `--set` arguments as `train` flags.
fn with_sets(mut args: Vec<String>, sets: &[&str]) -> Vec<String> {
    for s in sets {
        args.extend(["--set".into(), s.to_string()]);
    }
    args
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Item 1: ResNet-18 with its own (ImageNet) stem trains; it stopped at the first backward.
#[test]
fn resnet18_trains_with_its_imagenet_stem() {
    let dir = tmp("imagenet-stem");
    let out = train_quiet(
        &dir.join("run"),
        &[
            "encoder.arch=resnet18",
            "data.subset=128",
            "train.batch_size=32",
            "train.epochs=1",
            "train.log_every=1",
            "eval.baselines=false",
            "eval.knn_k=5",
        ],
        &dir,
    );
    assert_ok(&out, "resnet18");
    let s = summary(&out);
    assert_eq!(s["encoder"], "resnet18");
    assert_eq!(s["steps"], 4);
    let recipe = std::fs::read_to_string(dir.join("run/recipe.toml")).unwrap();
    assert!(!recipe.contains("stem"), "the preset's own stem: {recipe}");
    assert!(step_losses(&dir.join("run"))
        .iter()
        .all(|(_, l)| l.is_finite()));
    std::fs::remove_dir_all(&dir).ok();
}

/// Item 2 (and item 9's run name and normalisation): an image folder whose `test/` lacks a
/// training class labels both splits with one class list (kNN was 0.028 before: each split
/// numbered its own folders), warns naming the class, and a class only in `test/` is an error.
/// With the default recipe the run is named after the folder kind and normalised with the
/// images' own statistics; a grey image in the RGB folder is converted and counted.
#[test]
fn splits_with_different_classes_share_the_training_class_list() {
    let data = image_folder("splits", 16);
    std::fs::remove_dir_all(data.join("test/class1")).unwrap();
    // A grey image among the RGB ones (its class's colour as grey levels).
    image::GrayImage::from_pixel(32, 32, image::Luma([120]))
        .save(data.join("train/class3/grey.png"))
        .unwrap();
    let root = format!("data.root={}", data.display());
    let sets = [
        "data.kind=image-folder",
        root.as_str(),
        "train.epochs=1",
        "train.batch_size=16",
        "eval.knn_k=5",
        "augment.strong.size=32",
    ];
    let out = train_quiet(&data.join("run"), &sets, &data);
    assert_ok(&out, "folder run");
    let s = summary(&out);
    // Four colours, trivially separable: the raw-pixel baseline classifies the queries.
    assert!(s["raw_knn_top1"].as_f64().unwrap() > 0.9, "{s}");
    let warnings = s["warnings"].to_string();
    assert!(warnings.contains("no folder for class 'class1'"), "{s}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning:") && err.contains("class1"), "{err}");
    assert_eq!(s["recipe"], "simclr_resnet-mini_image-folder");
    assert_eq!(s["grey_to_rgb"], 1);
    let norm = &s["normalisation"];
    assert!(
        norm["source"]
            .as_str()
            .unwrap()
            .starts_with("computed from 65 images"),
        "{s}"
    );
    assert_eq!(norm["mean"].as_array().unwrap().len(), 3);
    // The run's recipe records what it used; evaluation reads it back and agrees.
    let recipe = std::fs::read_to_string(data.join("run/recipe.toml")).unwrap();
    assert!(recipe.contains("mean = ["), "{recipe}");
    let ev = gyre(
        &[
            "eval",
            "--checkpoint",
            data.join("run").to_str().unwrap(),
            "--k",
            "5",
        ],
        &data,
    );
    assert_ok(&ev, "eval");
    let line: serde_json::Value = serde_json::from_slice(ev.stdout.trim_ascii_end()).unwrap();
    assert_eq!(line["knn_top1"], s["knn_top1"]);

    std::fs::create_dir_all(data.join("test/zebra")).unwrap();
    std::fs::copy(
        data.join("test/class0/0000.png"),
        data.join("test/zebra/0000.png"),
    )
    .unwrap();
    let out = train_quiet(&data.join("run2"), &sets, &data);
    assert_clean_error(&out, "test/zebra: class 'zebra' has no folder in");
    std::fs::remove_dir_all(&data).ok();
}

/// A tiny trained run for the evaluation tests; returns (dir, run).
fn tiny_run(name: &str) -> (PathBuf, PathBuf) {
    let dir = tmp(name);
    let run = dir.join("run");
    let out = train_quiet(
        &run,
        &[
            "data.subset=256",
            "train.epochs=1",
            "train.batch_size=128",
            "eval.baselines=false",
            "eval.knn_k=20",
        ],
        &dir,
    );
    assert_ok(&out, "tiny run");
    (dir, run)
}

/// Items 3 and 4: `--k 0` panicked (exit 101); `--t 0`, `--t -1` and `--linear-epochs 0`
/// returned numbers. Each is now the one-line error a recipe gets for the same value, and a k
/// larger than the bank reports the k the vote used.
#[test]
fn eval_flags_get_the_recipes_checks() {
    let (dir, run) = tiny_run("eval-flags");
    let r = run.to_str().unwrap();
    for (flags, needle) in [
        (&["--k", "0"][..], "--k 0: must be at least 1 neighbour"),
        (&["--k", "20,0"][..], "--k 0: must be at least 1 neighbour"),
        (&["--t", "0"][..], "--t 0: must be a positive number"),
        (&["--t=-1"][..], "--t -1: must be a positive number"),
        (&["--t", "NaN"][..], "--t NaN: must be a positive number"),
        (
            &["--linear", "--linear-epochs", "0"][..],
            "--linear-epochs: must be at least 1",
        ),
        (
            &["--linear", "--linear-lr", "0"][..],
            "--linear-lr: must be a positive number",
        ),
    ] {
        let args: Vec<&str> = ["eval", "--checkpoint", r]
            .iter()
            .copied()
            .chain(flags.iter().copied())
            .collect();
        assert_clean_error(&gyre(&args, &dir), needle);
    }
    // The recipe path: the same message for the same value.
    let out = train_quiet(&dir.join("x"), &["eval.knn_t=0"], &dir);
    assert_clean_error(&out, "eval.knn_t: must be a positive number, got 0");
    // The bank holds 256 images: k = 1000 votes with 256, and says so.
    let out = gyre(&["eval", "--checkpoint", r, "--k", "1000"], &dir);
    assert_ok(&out, "large k");
    let line: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii_end()).unwrap();
    assert_eq!(
        (line["k"].as_u64(), line["k_asked"].as_u64()),
        (Some(256), Some(1000))
    );
    // In training too: the summary reports the k used, with a warning.
    let out = train_quiet(
        &dir.join("big-k"),
        &[
            "data.subset=128",
            "train.epochs=1",
            "train.batch_size=64",
            "eval.baselines=false",
        ],
        &dir,
    );
    assert_ok(&out, "big k run");
    let s = summary(&out);
    assert_eq!(s["knn_k"], 128, "{s}");
    assert!(
        s["warnings"]
            .to_string()
            .contains("eval.knn_k: 200 neighbours asked"),
        "{s}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Item 5: a `--run-dir` holding a run is refused (it was overwritten and its log appended to),
/// unless `--resume` or `--overwrite`; `gyre export` into a non-empty folder likewise. Item 9:
/// resuming a finished run reports no rate (it printed 8191999999999.999 images/s).
#[test]
fn an_occupied_run_folder_is_refused_unless_asked() {
    let (dir, run) = tiny_run("occupied");
    let r = run.to_str().unwrap();
    let before = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let again = |extra: &[&str]| {
        let mut a = vec![
            "train",
            "--quiet",
            "--run-dir",
            r,
            "--set",
            "data.subset=256",
        ];
        a.extend_from_slice(&["--set", "train.epochs=1", "--set", "train.batch_size=128"]);
        a.extend_from_slice(&["--set", "eval.baselines=false", "--set", "eval.knn_k=20"]);
        a.extend_from_slice(extra);
        gyre(&a, &dir)
    };
    assert_clean_error(&again(&[]), "the run folder is not empty");
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl")).unwrap(),
        before
    );
    let out = again(&["--overwrite"]);
    assert_ok(&out, "--overwrite");
    let steps: Vec<u64> = step_losses(&run).iter().map(|s| s.0).collect();
    assert_eq!(steps, [2], "one run's log, not two: {steps:?}");

    let out = gyre(&["train", "--quiet", "--resume", r], &dir);
    assert_ok(&out, "resume a finished run");
    let s = summary(&out);
    assert_eq!(s["steps"], 2);
    assert!(s["img_per_s"].is_null(), "{s}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.is_empty(), "quiet: {err}");

    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("notes.txt"), "mine").unwrap();
    let out = gyre(
        &[
            "export",
            "--checkpoint",
            r,
            "--out",
            model.to_str().unwrap(),
        ],
        &dir,
    );
    assert_clean_error(&out, "model: the folder is not empty");
    let out = gyre(
        &[
            "export",
            "--checkpoint",
            r,
            "--out",
            model.to_str().unwrap(),
            "--overwrite",
        ],
        &dir,
    );
    assert_ok(&out, "export --overwrite");
    assert_eq!(
        std::fs::read_to_string(model.join("notes.txt")).unwrap(),
        "mine"
    );
    assert!(model.join("model.safetensors").is_file());
    std::fs::remove_dir_all(&dir).ok();
}

/// A JPEG of noise, `side`² pixels (big enough that 70% of its bytes ends inside the scan).
fn noise_jpeg(side: u32, seed: u32) -> Vec<u8> {
    let mut s = seed;
    let img = image::RgbImage::from_fn(side, side, |_, _| {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        image::Rgb([(s >> 24) as u8, (s >> 16) as u8, (s >> 8) as u8])
    });
    let mut v = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Jpeg)
        .unwrap();
    v
}

/// Item 6: a JPEG cut to 70% of its bytes counted as good (the decoder fills the rest); it is a
/// bad sample now, under `fail` and `skip`, as PIL's "image file is truncated".
#[test]
fn a_truncated_jpeg_is_a_bad_sample() {
    let data = image_folder("cut-jpeg", 8);
    let whole = noise_jpeg(32, 5);
    let cut = &whole[..whole.len() * 7 / 10];
    assert!(
        image::load_from_memory(cut).is_ok(),
        "the decoder alone accepts the cut file"
    );
    std::fs::write(data.join("train/class2/cut.jpg"), cut).unwrap();
    std::fs::write(data.join("train/class2/whole.jpg"), &whole).unwrap();
    let root = format!("data.root={}", data.display());
    let sets = |policy: &'static str| {
        vec![
            "data.kind=image-folder".to_string(),
            root.clone(),
            format!("data.on_bad_sample={policy}"),
            "train.epochs=1".into(),
            "train.batch_size=16".into(),
            "eval.knn_k=5".into(),
            "eval.baselines=false".into(),
            "augment.strong.size=32".into(),
        ]
    };
    let run = |policy: &'static str, name: &str| {
        let args = with_sets(
            vec![
                "train".into(),
                "--quiet".into(),
                "--run-dir".into(),
                data.join(name).display().to_string(),
            ],
            &strs(&sets(policy)),
        );
        gyre(&strs(&args), &data)
    };
    let out = run("skip", "skip");
    assert_ok(&out, "skip");
    let s = summary(&out);
    assert_eq!(s["bad_samples"]["count"], 1, "{s}");
    let first = s["bad_samples"]["first"][0].as_str().unwrap();
    assert!(first.contains("class2/cut.jpg: truncated JPEG"), "{first}");
    assert_clean_error(&run("fail", "fail"), "class2/cut.jpg: truncated JPEG");
    std::fs::remove_dir_all(&data).ok();
}

fn signal_args(run: &Path, batch: &str, threads: &str) -> Vec<String> {
    with_sets(
        vec![
            "--threads".into(),
            threads.into(),
            "train".into(),
            "--quiet".into(),
            "--run-dir".into(),
            run.display().to_string(),
        ],
        &[
            "data.subset=512",
            "train.epochs=2",
            &format!("train.batch_size={batch}"),
            "train.log_every=1",
            "eval.baselines=false",
            "eval.knn_k=20",
            "eval.knn_every=1",
        ],
    )
}

/// Item 7: SIGTERM (and Ctrl-C) lost the work; now the run finishes its step, writes a
/// checkpoint, prints the `--resume` command and exits 128 + signal, and the resumed run logs
/// exactly the uninterrupted run's losses. A second signal exits at once, without the
/// checkpoint.
#[test]
fn a_signal_ends_the_run_with_a_checkpoint_it_resumes_from() {
    let dir = tmp("signals");
    let full = dir.join("full");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gyre"))
        .args(signal_args(&full, "64", "2"))
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_ok(&out, "uninterrupted");
    let cut = dir.join("cut");
    // No step checkpoints: mid-epoch 1, only the signal writes one.
    let child = start_and_wait_for_step(&signal_args(&cut, "64", "2"), &cut, 3, &dir);
    send_signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("continue with: gyre train --resume"), "{err}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cut.join("checkpoint.json")).unwrap())
            .unwrap();
    let at = state["step"].as_u64().unwrap();
    assert!(
        (3..8).contains(&at) && state["epoch"] == 0,
        "mid-epoch 1: {state}"
    );
    let out = gyre(
        &[
            "--threads",
            "2",
            "train",
            "--quiet",
            "--resume",
            cut.to_str().unwrap(),
        ],
        &dir,
    );
    assert_ok(&out, "resume");
    let (a, b) = (step_losses(&full), step_losses(&cut));
    assert_eq!(a.len(), 16);
    assert_eq!(a, b, "resumed losses differ");

    // Two Ctrl-C in a row: the second exits at once (status 130), no checkpoint, no message.
    // One thread and 256 images a view make the step last seconds; the pause lets the first
    // signal be handled before the second arrives (the kernel merges two pending ones).
    let twice = dir.join("twice");
    let child = start_and_wait_for_step(&signal_args(&twice, "256", "1"), &twice, 1, &dir);
    send_signal(&child, "INT");
    std::thread::sleep(std::time::Duration::from_millis(300));
    send_signal(&child, "INT");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(!err.contains("interrupted"), "{err}");
    assert!(!twice.join("checkpoint.safetensors").exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// Item 9: `--set bogus.x=3` was reported under `[augment.strong]`; invalid TOML had no line
/// and column.
#[test]
fn bad_keys_and_bad_toml_name_what_and_where() {
    let dir = tmp("where");
    let out = gyre(&["train", "--dry-run", "--set", "bogus.x=3"], &dir);
    assert_clean_error(&out, "default.toml: bogus: unknown field `bogus`");
    let text = gyre_train::recipe::DEFAULT_RECIPE.replace("epochs = 4", "epochs = [4,");
    let line = text
        .lines()
        .position(|l| l.starts_with("epochs = [4,"))
        .unwrap()
        + 1;
    std::fs::write(dir.join("r.toml"), text).unwrap();
    let out = gyre(&["train", "--dry-run", "--recipe", "r.toml"], &dir);
    assert_clean_error(&out, &format!("r.toml:{}:", line + 1));
    std::fs::remove_dir_all(&dir).ok();
}

// ---- Fuzz: every shipped recipe, mutated, through `--dry-run`; `gyre eval`'s flags. ----

fn shipped_recipes() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    v
}

/// Every (dotted path, value) leaf of a TOML table.
fn leaves(t: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in t {
        let p = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => leaves(t, &p, out),
            _ => out.push(p),
        }
    }
}

fn table_at<'a>(t: &'a mut toml::Table, path: &[&str]) -> Option<&'a mut toml::Table> {
    let mut cur = t;
    for p in path {
        cur = cur.get_mut(*p)?.as_table_mut()?;
    }
    Some(cur)
}

/// Replacement values: wrong types, zeros, negatives, huge, non-finite, empty.
fn odd_value(rng: &mut rand::rngs::StdRng) -> toml::Value {
    use toml::Value as V;
    match rng.gen_range(0..14) {
        0 => V::String("x".into()),
        1 => V::Integer(0),
        2 => V::Integer(-1),
        3 => V::Integer(i64::MAX),
        4 => V::Float(-0.5),
        5 => V::Float(f64::NAN),
        6 => V::Float(f64::INFINITY),
        7 => V::Float(1e30),
        8 => V::Boolean(true),
        9 => V::Array(vec![]),
        10 => V::Array(vec![V::Float(0.0), V::Float(-1.0)]),
        11 => V::Table(toml::Table::new()),
        12 => V::Integer(rng.gen_range(1..5000)),
        _ => V::Float(rng.gen_range(0.0..2.0)),
    }
}

/// One to three random mutations of a recipe: a value replaced, a key removed or misspelt, a
/// section removed, an unknown key or section added, a value moved to another key.
fn mutate(mut t: toml::Table, rng: &mut rand::rngs::StdRng) -> toml::Table {
    for _ in 0..rng.gen_range(1..=3) {
        let mut paths = Vec::new();
        leaves(&t, "", &mut paths);
        if paths.is_empty() {
            break;
        }
        let path = paths[rng.gen_range(0..paths.len())].clone();
        let parts: Vec<&str> = path.split('.').collect();
        let (parent, key) = parts.split_at(parts.len() - 1);
        let key = key[0];
        match rng.gen_range(0..7) {
            0 | 1 => {
                let v = odd_value(rng);
                table_at(&mut t, parent).unwrap().insert(key.into(), v);
            }
            2 => {
                table_at(&mut t, parent).unwrap().remove(key);
            }
            3 => {
                let tab = table_at(&mut t, parent).unwrap();
                let v = tab.remove(key).unwrap();
                tab.insert(format!("{key}x"), v);
            }
            4 => {
                if let Some(first) = parent.first() {
                    t.remove(*first);
                }
            }
            5 => {
                let v = odd_value(rng);
                let tab = if rng.gen_bool(0.5) {
                    table_at(&mut t, parent).unwrap()
                } else {
                    &mut t
                };
                tab.insert("bogus".into(), v);
            }
            _ => {
                let other = paths[rng.gen_range(0..paths.len())].clone();
                let op: Vec<&str> = other.split('.').collect();
                let (opar, okey) = op.split_at(op.len() - 1);
                let v = table_at(&mut t, opar).unwrap()[okey[0]].clone();
                table_at(&mut t, parent).unwrap().insert(key.into(), v);
            }
        }
    }
    t
}

/// Library level, many cases: a mutated recipe parses to a one-line error naming the file, or
/// to a valid recipe whose method then builds — never a panic.
#[test]
fn mutated_recipes_are_errors_or_valid_plans_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let (mut errors, mut valid) = (0, 0);
    for path in shipped_recipes() {
        let base: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for case in 0..40 {
            let text = toml::to_string(&mutate(base.clone(), &mut rng)).unwrap();
            let what = format!("{} case {case}:\n{text}", path.display());
            let r = std::panic::catch_unwind(|| {
                gyre_train::Recipe::parse(&text, "fuzz.toml", &[]).map(|r| {
                    // A valid plan allocates: the method builds from it (for 20000 images, the
                    // FMNIST protocol's), or says in one line why it cannot.
                    let c = r.in_channels().unwrap_or(3);
                    r.build_method(c, 20_000, &gyre_kernels::Device::Cpu)
                        .map(|_| ())
                        .map_err(|e| format!("{e:#}"))
                })
            });
            match r {
                Err(_) => panic!("panicked on {what}"),
                Ok(Err(e)) => {
                    let e = e.to_string();
                    assert!(
                        e.starts_with("fuzz.toml") && !e.contains('\n'),
                        "{e} on {what}"
                    );
                    errors += 1;
                }
                Ok(Ok(Err(e))) => {
                    assert!(!e.contains('\n'), "{e} on {what}");
                    errors += 1;
                }
                Ok(Ok(Ok(()))) => valid += 1,
            }
        }
    }
    // Both outcomes occur: the mutations exercise the checks and still leave valid recipes.
    assert!(errors > 100 && valid > 20, "{errors} errors, {valid} valid");
}

/// The boundary values at every key of every shipped recipe, one at a time: the largest integer
/// (a size that would not allocate), zero, −1, a string. Each is an error or a plan whose method
/// builds; none panics or aborts allocating.
#[test]
fn boundary_values_at_every_key_are_errors_or_valid_plans() {
    let values = [
        toml::Value::Integer(i64::MAX),
        toml::Value::Integer(0),
        toml::Value::Integer(-1),
        toml::Value::String("x".into()),
    ];
    let mut cases = 0;
    // Every key set once: the cycle-only IRC recipes have the keys of the auto-pair ones, and
    // the CIFAR recipes those of their FMNIST twins (one CIFAR recipe stands for them).
    let distinct = shipped_recipes().into_iter().filter(|p| {
        let n = p.file_name().unwrap().to_string_lossy().to_string();
        !n.contains("-irc_") && (!n.contains("cifar10") || n.starts_with("mocov2_"))
    });
    for path in distinct {
        let base: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut paths = Vec::new();
        leaves(&base, "", &mut paths);
        for leaf in &paths {
            let parts: Vec<&str> = leaf.split('.').collect();
            let (parent, key) = parts.split_at(parts.len() - 1);
            for v in &values {
                let mut t = base.clone();
                table_at(&mut t, parent)
                    .unwrap()
                    .insert(key[0].into(), v.clone());
                let text = toml::to_string(&t).unwrap();
                let what = format!("{}: {leaf} = {v}", path.display());
                let r = std::panic::catch_unwind(|| {
                    gyre_train::Recipe::parse(&text, "edge.toml", &[]).map(|r| {
                        let c = r.in_channels().unwrap_or(3);
                        r.build_method(c, 20_000, &gyre_kernels::Device::Cpu)
                            .map(|_| ())
                            .map_err(|e| format!("{e:#}"))
                    })
                });
                match r {
                    Err(_) => panic!("panicked on {what}"),
                    Ok(Err(e)) => assert!(!e.to_string().contains('\n'), "{e} on {what}"),
                    Ok(Ok(Err(e))) => assert!(!e.contains('\n'), "{e} on {what}"),
                    Ok(Ok(Ok(()))) => {}
                }
                cases += 1;
            }
        }
    }
    assert!(cases > 1000, "{cases}");
}

/// Binary level: `gyre train --dry-run` on mutated recipes prints a recipe (exit 0) or one
/// error line (exit 1); never a panic or a multi-line message.
#[test]
fn dry_run_of_mutated_recipes_prints_a_plan_or_one_line() {
    let dir = tmp("fuzz-dry");
    let mut rng = rand::rngs::StdRng::seed_from_u64(1919);
    for path in shipped_recipes() {
        let base: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for case in 0..3 {
            let text = toml::to_string(&mutate(base.clone(), &mut rng)).unwrap();
            let file = dir.join("m.toml");
            std::fs::write(&file, &text).unwrap();
            let out = gyre(
                &["train", "--dry-run", "--recipe", file.to_str().unwrap()],
                &dir,
            );
            let what = format!("{} case {case}:\n{text}", path.display());
            match out.status.code() {
                Some(0) => {
                    let plan = String::from_utf8_lossy(&out.stdout);
                    assert!(
                        gyre_train::Recipe::parse(&plan, "plan", &[]).is_ok(),
                        "{what}"
                    );
                }
                Some(1) => assert_clean_error(&out, "m.toml"),
                c => panic!(
                    "exit {c:?}: {} on {what}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `gyre eval` with random flag values: JSON lines (exit 0), or one error line (exit 1, or 2 for
/// a value clap cannot parse); never a panic.
#[test]
fn eval_flag_fuzz_gives_results_or_one_line() {
    let (dir, run) = tiny_run("fuzz-eval");
    let r = run.to_str().unwrap().to_string();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let ks = [
        "0", "1", "5", "300", "100000", "-1", "x", "1,0", "20,200", "",
    ];
    let ts = ["0", "-1", "NaN", "inf", "1e-30", "0.07", "x", "1e300"];
    let epochs = ["0", "1", "2", "-3", "x"];
    let lrs = ["0", "-1", "NaN", "0.1", "1e9"];
    for case in 0..24 {
        let mut args = vec!["eval".to_string(), "--checkpoint".into(), r.clone()];
        if rng.gen_bool(0.7) {
            args.push(format!("--k={}", ks[rng.gen_range(0..ks.len())]));
        }
        if rng.gen_bool(0.7) {
            args.push(format!("--t={}", ts[rng.gen_range(0..ts.len())]));
        }
        if rng.gen_bool(0.4) {
            args.push("--linear".into());
            args.push(format!(
                "--linear-epochs={}",
                epochs[rng.gen_range(0..epochs.len())]
            ));
            if rng.gen_bool(0.5) {
                args.push(format!("--linear-lr={}", lrs[rng.gen_range(0..lrs.len())]));
            }
        }
        let out = gyre(&strs(&args), &dir);
        let err = String::from_utf8_lossy(&out.stderr);
        let what = format!("case {case}: {args:?}: {err}");
        assert!(!err.contains("panicked"), "{what}");
        match out.status.code() {
            Some(0) => {
                for l in String::from_utf8_lossy(&out.stdout).lines() {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    let ok = v["knn_top1"]
                        .as_f64()
                        .is_some_and(|a| (0.0..=1.0).contains(&a))
                        || v["linear"]["top1"]
                            .as_f64()
                            .is_some_and(|a| (0.0..=1.0).contains(&a));
                    assert!(ok, "{l} in {what}");
                }
            }
            Some(1) | Some(2) => {
                let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
                assert_eq!(lines.len(), 1, "{what}");
                assert!(lines[0].starts_with("error: "), "{what}");
            }
            c => panic!("exit {c:?}: {what}"),
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Issue 20 through the binary: an overlay composes onto any recipe, `--print-recipe` shows the
/// composed recipe with every default, and a misspelt key in an overlay, a key of another
/// method, an `extends` cycle and a missing file are each one line naming the file and the key.
#[test]
fn overlays_compose_and_their_errors_name_the_file() {
    let dir = tmp("overlays");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
    let irc = root.join("overlays/irc-ap.toml");
    let moco = root.join("mocov2_resnet-mini_fmnist.toml");
    let out = gyre(
        &[
            "train",
            "--print-recipe",
            "--recipe",
            moco.to_str().unwrap(),
            "--overlay",
            irc.to_str().unwrap(),
        ],
        &dir,
    );
    assert_ok(&out, "print-recipe");
    let plan = String::from_utf8_lossy(&out.stdout);
    for line in [
        "[irc]",
        "auto_pair = true",
        "memory_size = 4096",
        "queue = 4096",
        "symmetric = true",
    ] {
        assert!(plan.contains(line), "{line} in {plan}");
    }
    // The same as the shipped composed recipe.
    let shipped = gyre(
        &[
            "train",
            "--print-recipe",
            "--recipe",
            root.join("mocov2-irc-ap_resnet-mini_fmnist.toml")
                .to_str()
                .unwrap(),
        ],
        &dir,
    );
    assert_eq!(
        String::from_utf8_lossy(&shipped.stdout).replace(
            "mocov2-irc-ap_resnet-mini_fmnist",
            "mocov2_resnet-mini_fmnist"
        ),
        plan
    );
    std::fs::write(dir.join("typo.toml"), "[irc]\nwieght = 2.0\n").unwrap();
    let out = gyre(&["train", "--print-recipe", "--overlay", "typo.toml"], &dir);
    assert_clean_error(&out, "typo.toml: irc.wieght: unknown field `wieght`");
    std::fs::write(dir.join("queue.toml"), "[method]\nqueue = 512\n").unwrap();
    let out = gyre(
        &["train", "--print-recipe", "--overlay", "queue.toml"],
        &dir,
    );
    assert_clean_error(
        &out,
        "queue.toml: method.queue: simclr does not use it (it reads: temperature)",
    );
    std::fs::write(dir.join("a.toml"), "extends = \"b.toml\"\n").unwrap();
    std::fs::write(dir.join("b.toml"), "extends = [\"a.toml\"]\n").unwrap();
    assert_clean_error(
        &gyre(&["train", "--print-recipe", "--recipe", "a.toml"], &dir),
        "extends: a cycle",
    );
    std::fs::write(dir.join("c.toml"), "extends = \"gone.toml\"\n").unwrap();
    assert_clean_error(
        &gyre(&["train", "--print-recipe", "--recipe", "c.toml"], &dir),
        "c.toml: extends: cannot read",
    );
    std::fs::remove_dir_all(&dir).ok();
}
