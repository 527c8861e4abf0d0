//! The `gyre` binary end to end: a short real training run on the embedded data, and the errors a
//! user gets for bad input (one line, exit code 1, no panic or backtrace). Every method's recipe,
//! and IRC on every method, trained CI-sized: tests/golden.rs.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn short_training_run_learns_and_writes_its_files() {
    let dir = tmp("train");
    let run = dir.join("run");
    let out = train_quiet(
        &run,
        &[
            "data.subset=1024",
            "train.epochs=2",
            "train.batch_size=128",
            "eval.knn_k=20",
        ],
        &dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    for key in [
        "recipe",
        "method",
        "encoder",
        "dataset",
        "epochs",
        "knn_top1",
        "raw_knn_top1",
        "init_knn_top1",
        "train_seconds",
        "img_per_s",
        "peak_rss_mb",
        "checkpoint",
    ] {
        assert!(!summary[key].is_null(), "summary lacks {key}: {summary}");
    }
    assert_eq!(summary["steps"], 16);
    let knn = summary["knn_top1"].as_f64().unwrap();
    assert!(knn > 0.3 && knn <= 1.0, "{summary}");
    let loss = summary["final_loss"].as_f64().unwrap();
    // NT-Xent at B = 128 starts at ln(255) ≈ 5.54 for an untrained net; two epochs must lower it.
    assert!(loss < 5.4, "{summary}");
    assert!(run.join("checkpoint.safetensors").is_file());
    assert!(run.join("checkpoint.json").is_file());
    let recipe = std::fs::read_to_string(run.join("recipe.toml")).unwrap();
    assert!(recipe.contains("subset = 1024"), "{recipe}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().any(|l| l.contains("\"kind\":\"knn\"")));
    assert!(metrics.lines().any(|l| l.contains("\"kind\":\"step\"")));

    // The checkpoint evaluates to the same kNN top-1.
    let out = gyre(
        &["eval", "--checkpoint", run.to_str().unwrap(), "--k", "20"],
        &dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii_end()).unwrap();
    assert_eq!(ev["knn_top1"].as_f64().unwrap(), knn);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unknown_key_and_negative_lr_are_one_line_errors() {
    let dir = tmp("recipe");
    let out = gyre(&["train", "--set", "optim.lr=-0.1"], &dir);
    assert_clean_error(&out, "optim.lr: must be a positive number, got -0.1");
    let text =
        gyre_train::recipe::DEFAULT_RECIPE.replace("[optim]", "[optim]\nlearning_rate = 0.1");
    std::fs::write(dir.join("r.toml"), text).unwrap();
    let out = gyre(&["train", "--recipe", "r.toml"], &dir);
    assert_clean_error(
        &out,
        "r.toml: optim.learning_rate: unknown field `learning_rate`",
    );
    let out = gyre(&["train", "--recipe", "nope.toml"], &dir);
    assert_clean_error(&out, "nope.toml: cannot read");
    // The OS error once (issue 19: it was printed twice).
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

fn fmnist_recipe(dir: &Path, root: &Path) -> PathBuf {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../recipes/simclr_resnet-mini_fmnist.toml"
    ))
    .unwrap()
    .replace("subset = 20000", &format!("root = \"{}\"", root.display()));
    let p = dir.join("fm.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn idx(magic: [u8; 4], dims: &[u32], data_len: usize) -> Vec<u8> {
    let mut v = magic.to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend(std::iter::repeat_n(7u8, data_len));
    v
}

#[test]
fn bad_data_files_are_one_line_errors() {
    let dir = tmp("data");
    let root = dir.join("fm");
    std::fs::create_dir_all(&root).unwrap();
    let recipe = fmnist_recipe(&dir, &root);
    let r = recipe.to_str().unwrap();

    // A missing folder.
    std::fs::remove_dir_all(&root).unwrap();
    assert_clean_error(&gyre(&["train", "--recipe", r], &dir), "does not exist");
    std::fs::create_dir_all(&root).unwrap();

    // A truncated image file: 3 images declared, 2.5 present.
    std::fs::write(
        root.join("train-images-idx3-ubyte"),
        idx([0, 0, 8, 3], &[3, 28, 28], 2 * 784 + 392),
    )
    .unwrap();
    std::fs::write(
        root.join("train-labels-idx1-ubyte"),
        idx([0, 0, 8, 1], &[3], 3),
    )
    .unwrap();
    assert_clean_error(&gyre(&["train", "--recipe", r], &dir), "train-images-idx3-ubyte: truncated: dimensions [3, 28, 28] need 2352 data bytes, found 1960");

    // A wrong magic number.
    std::fs::write(
        root.join("train-images-idx3-ubyte"),
        idx([0x12, 0x34, 8, 3], &[3, 28, 28], 3 * 784),
    )
    .unwrap();
    assert_clean_error(
        &gyre(&["train", "--recipe", r], &dir),
        "train-images-idx3-ubyte: wrong magic number 0x12340803",
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_diverging_run_stops_with_a_clear_error() {
    let dir = tmp("nan");
    let run = dir.join("run");
    let out = train_quiet(
        &run,
        &[
            "data.subset=256",
            "train.batch_size=128",
            "train.epochs=3",
            "optim.lr=1e30",
            "eval.baselines=false",
            "eval.knn_every=0",
        ],
        &dir,
    );
    assert_clean_error(&out, "training stopped; last good checkpoint:");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("loss became NaN") || err.contains("loss became inf"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A short SimCLR + IRC run with auto-pairing: the cycle and the auto-pairs are logged, and their
/// values are real (the cycle accuracy is a fraction, the precision is measured against labels).
#[test]
fn irc_plugin_runs_and_logs_cycle_accuracy_and_pair_precision() {
    let dir = tmp("irc");
    let run = dir.join("run");
    let out = train_quiet(
        &run,
        &[
            "data.subset=1024",
            "train.epochs=2",
            "train.batch_size=128",
            "eval.knn_k=20",
            "eval.baselines=false",
            "eval.knn_every=1",
            "irc.memory=256",
            "irc.auto_pair=true",
            "irc.ramp=0.0",
        ],
        &dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let knn: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "knn").collect();
    assert_eq!(knn.len(), 2, "{metrics}");
    for k in &knn {
        let acc = k["irc_cycle_acc"].as_f64().expect("cycle accuracy logged");
        let prec = k["irc_pair_precision"]
            .as_f64()
            .expect("pair precision logged");
        assert!(
            (0.0..=1.0).contains(&acc) && (0.0..=1.0).contains(&prec),
            "{k}"
        );
        assert!(k["irc_pairs"].as_u64().unwrap() > 0, "{k}");
    }
    // Steps with a full memory log the loss terms; the cycle loss is finite and positive.
    let step = lines
        .iter()
        .find(|l| l["kind"] == "step" && l.get("irc_cycle_loss").is_some())
        .expect("a step line with the cycle loss");
    assert!(step["irc_cycle_loss"].as_f64().unwrap() > 0.0, "{step}");
    assert!(
        step["irc_pair_loss"].as_f64().unwrap().is_finite(),
        "{step}"
    );
    // The cycle head is saved with the rest of the model.
    let recipe = std::fs::read_to_string(run.join("recipe.toml")).unwrap();
    assert!(
        recipe.contains("[irc]") && recipe.contains("auto_pair = true"),
        "{recipe}"
    );
    let bad = train_quiet(&dir.join("bad"), &["irc.memory=8"], &dir);
    assert_clean_error(&bad, "irc.memory: must hold at least one batch");
}

/// A CIFAR-10 recipe on a user's image folder (`data.kind = "image-folder"`), CI-sized, kept in
/// memory and decoded every epoch (same losses); then the same folder with a corrupt file: "skip"
/// reports it in the summary, "fail" stops naming it.
#[test]
fn cifar_recipe_runs_on_an_image_folder_and_bad_files_are_handled() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let data = image_folder("folder", 32);
    let recipe = root.join("recipes/mocov2_resnet18_cifar10.toml");
    let run = data.join("run");
    let data_root = format!("data.root={}", data.display());
    let args = |run: &Path, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "train",
            "--quiet",
            "--recipe",
            recipe.to_str().unwrap(),
            "--run-dir",
            run.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for s in [
            "data.kind=image-folder",
            data_root.as_str(),
            "encoder.arch=resnet-mini",
            "train.epochs=1",
            "train.batch_size=32",
            "method.queue=64",
            "eval.knn_k=5",
            "train.log_every=1",
        ]
        .iter()
        .chain(extra)
        {
            a.extend(["--set".to_string(), s.to_string()]);
        }
        a
    };
    let run_args = |run: &Path, extra: &[&str]| {
        let a = args(run, extra);
        gyre(&a.iter().map(String::as_str).collect::<Vec<_>>(), &data)
    };
    let out = run_args(&run, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(summary["dataset"], "image-folder");
    assert_eq!(summary["steps"], 4);
    // Four colours are trivially separable: raw pixels already classify the test split.
    assert!(summary["raw_knn_top1"].as_f64().unwrap() > 0.9, "{summary}");
    assert!(summary["knn_top1"].as_f64().unwrap() > 0.5, "{summary}");
    assert_eq!(summary["bad_samples"]["count"], 0);

    // Decoded every epoch instead of kept in memory: the same run, loss for loss.
    let out = run_args(&data.join("run-disk"), &["data.residency=disk"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let disk: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(step_losses(&run).len(), 4);
    assert_eq!(step_losses(&data.join("run-disk")), step_losses(&run));
    assert_eq!(disk["knn_top1"], summary["knn_top1"]);

    let bad = data.join("train/class2/0003.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let out = run_args(&data.join("run-skip"), &["data.on_bad_sample=skip"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(summary["bad_samples"]["count"], 1, "{summary}");
    let first = summary["bad_samples"]["first"][0].as_str().unwrap();
    assert!(
        first.contains("class2/0003.png: not a readable image"),
        "{first}"
    );
    let out = run_args(&data.join("run-fail"), &[]);
    assert_clean_error(&out, "class2/0003.png: not a readable image");
    std::fs::remove_dir_all(&data).ok();
}

/// An interrupted (kill -9, mid-epoch) and resumed run logs exactly the losses of the
/// uninterrupted run at every step, for SimCLR, for MoCo v2 (whose teacher and queue are
/// part of the checkpoint) and for DINO on a ViT with stochastic depth (drawn from the seed and
/// the step); the kill may land anywhere, a checkpoint write included.
#[test]
fn killed_and_resumed_runs_match_the_uninterrupted_run_step_for_step() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tmp("resume");
    let moco = root.join("recipes/mocov2_resnet-mini_fmnist.toml");
    let dino = root.join("recipes/dino_vit-micro-4_fmnist.toml");
    for (name, recipe, extra) in [
        ("simclr", None, &[][..]),
        ("mocov2", Some(moco), &["method.queue=256"][..]),
        ("dino-vit", Some(dino), &["encoder.drop_path_rate=0.2"][..]),
    ] {
        let args = |run: &Path| -> Vec<String> {
            let mut a: Vec<String> = vec![
                "--threads".into(),
                "2".into(),
                "train".into(),
                "--quiet".into(),
            ];
            if let Some(r) = &recipe {
                a.extend(["--recipe".into(), r.display().to_string()]);
            }
            a.extend(["--run-dir".into(), run.display().to_string()]);
            for s in [
                "data.kind=fashion-mnist-embedded",
                "data.knn_bank=pretrain",
                "data.subset=512",
                "train.epochs=2",
                "train.batch_size=64",
                "train.log_every=1",
                "train.checkpoint_every_steps=3",
                "eval.baselines=false",
                "eval.knn_k=20",
            ] {
                a.extend(["--set".into(), s.into()]);
            }
            for s in extra {
                a.extend(["--set".into(), s.to_string()]);
            }
            a
        };
        let full = dir.join(format!("{name}-full"));
        let out = Command::new(env!("CARGO_BIN_EXE_gyre"))
            .args(args(&full))
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cut = dir.join(format!("{name}-cut"));
        train_and_kill_at(&args(&cut), &cut, 11, &dir);
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(cut.join("checkpoint.json")).unwrap())
                .unwrap();
        assert!(state["step"].as_u64().unwrap() >= 9, "{state}");
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
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (a, b) = (step_losses(&full), step_losses(&cut));
        assert_eq!(a.len(), 16, "{name}");
        assert_eq!(a, b, "{name}: resumed losses differ");
        if name == "dino-vit" {
            // The drop path is live in training: without it, the first step's loss (the same
            // initial weights and batch) is another.
            let plain = dir.join("dino-vit-plain");
            let plain_args: Vec<String> = args(&plain)
                .into_iter()
                .map(|a| match a.as_str() {
                    "encoder.drop_path_rate=0.2" => "encoder.drop_path_rate=0.0".into(),
                    "train.epochs=2" => "train.epochs=1".into(),
                    _ => a,
                })
                .collect();
            let plain_args: Vec<&str> = plain_args.iter().map(String::as_str).collect();
            let out = gyre(&plain_args, &dir);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let c = step_losses(&plain);
            assert_eq!(c.len(), 8);
            assert_ne!(c[0], a[0], "stochastic depth changed nothing");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Killed at random moments while it checkpoints every step, a run always leaves a checkpoint
/// that loads (the previous one, or the new one, never a torn file).
#[test]
fn kill_during_checkpoint_writes_leaves_a_loadable_checkpoint() {
    let dir = tmp("kill");
    let run = dir.join("run");
    let mut args: Vec<String> = vec!["train".into(), "--quiet".into(), "--run-dir".into()];
    args.push(run.display().to_string());
    for s in [
        "data.subset=1024",
        "train.epochs=1",
        "train.batch_size=64",
        "train.log_every=1",
        "train.checkpoint_every_steps=1",
        "eval.baselines=false",
    ] {
        args.extend(["--set".into(), s.into()]);
    }
    for kill_at in [2u64, 5, 9] {
        std::fs::remove_dir_all(&run).ok();
        train_and_kill_at(&args, &run, kill_at, &dir);
        // Killed right after a step line: possibly inside that step's checkpoint write.
        let out = gyre(
            &["eval", "--checkpoint", run.to_str().unwrap(), "--k", "20"],
            &dir,
        );
        assert!(
            out.status.success(),
            "kill at {kill_at}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint.json")).unwrap())
                .unwrap();
        assert!(state["step"].as_u64().unwrap() + 1 >= kill_at, "{state}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
