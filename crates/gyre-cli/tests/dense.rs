//! `gyre eval --dense`: the dense protocols through the binary, on the embedded data (and the
//! real ground truth `scripts/test.sh` fetches), and its bad input.

mod common;

use common::*;
use std::path::Path;

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[test]
fn raw_pixel_baseline_scores_scenes_and_the_real_ground_truth() {
    let dir = tmp("dense-raw");
    let gt = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/dense-gt");
    let out = gyre(
        &[
            "eval",
            "--dense",
            "--baseline",
            "raw-pixels",
            "--clips",
            "3",
            "--probe-clips",
            "3",
            "--dense-gt",
            gt.to_str().unwrap(),
        ],
        &dir,
    );
    let rows = json_lines(&out);
    let kinds: Vec<&str> = rows
        .iter()
        .map(|r| {
            r["data"]
                .as_str()
                .or(r["labels"].as_str())
                .unwrap_or("propagation")
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "scenes, frames 1 apart",
            "scenes, frames 4 apart",
            "propagation",
            "classes",
            "kinds",
            "middlebury-aloe",
            "middlebury-motorcycle",
            "oxford-graffiti-1-3"
        ]
    );
    for r in &rows {
        if let Some(pck) = r["pck"].as_array() {
            let v: Vec<f64> = pck.iter().map(|p| p.as_f64().unwrap()).collect();
            assert!(
                v.windows(2).all(|w| w[0] <= w[1]),
                "PCK grows with the threshold: {r}"
            );
            assert!(
                v.iter().all(|p| (0.0..=1.0).contains(p)) && r["points"].as_u64().unwrap() > 100,
                "{r}"
            );
        }
    }
    let j = &rows[2];
    for key in [
        "j_mean",
        "j_first_mask_kept",
        "j_true_masks_through_the_grid",
    ] {
        let v = j[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{key}: {j}");
    }
    assert!(j["objects"].as_u64().unwrap() >= 6);
    // The pixel probes: 3 training clips of 8 frames at 8×8 cells, 3 held-out clips at 64×64
    // pixels; the kinds are background, garment and tile.
    for probe in &rows[3..5] {
        assert_eq!(probe["train_cells"], 3 * 8 * 64, "{probe}");
        assert_eq!(probe["test_pixels"], 3 * 8 * 64 * 64, "{probe}");
        for key in ["miou", "pixel_accuracy"] {
            let v = probe[key].as_f64().unwrap();
            assert!(v > 0.0 && v <= 1.0, "{key}: {probe}");
        }
    }
    let kinds: Vec<&str> = rows[4]["iou"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[0].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["background", "garment", "tile"]);
    assert_eq!(rows[3]["iou"].as_array().unwrap().len(), 21);
    // The same clips, the same numbers.
    let again = json_lines(&gyre(
        &[
            "eval",
            "--dense",
            "--baseline",
            "raw-pixels",
            "--clips",
            "3",
            "--probe-clips",
            "3",
        ],
        &dir,
    ));
    assert_eq!(again[0]["pck"], rows[0]["pck"]);
    assert_eq!(again[3]["miou"], rows[3]["miou"]);
    assert_eq!(again[2]["j_mean"], rows[2]["j_mean"]);
}

#[test]
fn bad_dense_eval_input_is_a_one_line_error() {
    let dir = tmp("dense-bad");
    let out = gyre(&["eval", "--dense", "--baseline", "nope"], &dir);
    assert_clean_error(&out, "--baseline nope: expected raw-pixels or random-init");
    let out = gyre(
        &[
            "eval",
            "--dense",
            "--baseline",
            "raw-pixels",
            "--scenes-from",
            "/no/such/folder",
        ],
        &dir,
    );
    assert_clean_error(&out, "/no/such/folder");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let dense = |extra: &[&str]| {
        let mut a = vec!["eval", "--dense", "--clips", "1"];
        a.extend_from_slice(extra);
        gyre(&a, &dir)
    };
    let out = dense(&[
        "--baseline",
        "raw-pixels",
        "--dense-gt",
        empty.to_str().unwrap(),
    ]);
    assert_clean_error(&out, "cargo xtask data dense-gt");
    let out = dense(&["--baseline", "random-init", "--arch", "resnet7"]);
    assert_clean_error(&out, "resnet7");
    let out = dense(&["--baseline", "raw-pixels", "--probe-lr=-1"]);
    assert_clean_error(&out, "--probe-lr");
}

/// Every `recipes/*_scenes.toml` trains CI-sized on embedded-source clips (a clip method on
/// clips of 8 frames), and `eval --dense` scores its checkpoint; every clip method of the
/// registry has such a recipe; a clip method on images and IRC on a clip method are refused.
#[test]
fn every_scene_recipe_trains_ci_sized_and_scores_dense() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tmp("dense-scenes");
    let mut recipes: Vec<_> = std::fs::read_dir(root.join("recipes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("_scenes.toml"))
        .collect();
    recipes.sort();
    // One `gyre` per core at a time, each on one thread.
    let methods = par_map(recipes.iter().collect(), |recipe, one_thread| {
        let threads: &[&str] = if one_thread { &["--threads", "1"] } else { &[] };
        let name = recipe.file_stem().unwrap().to_string_lossy().to_string();
        // `<method>[-variant]_…`: mocov2-irc-dense is MoCo v2 with the plug-in.
        let method = name.split(['_', '-']).next().unwrap().to_string();
        let entry = gyre_train::method::lookup(&method).unwrap();
        let clips = entry.clips.is_some();
        let run = dir.join(&name);
        let batch = if clips {
            "train.batch_size=2"
        } else {
            "train.batch_size=8"
        };
        let mut sets = vec![
            "data.scenes.sources=embedded",
            "data.scenes.clips=16",
            "train.epochs=1",
            "train.log_every=1",
            batch,
        ];
        if (entry.keys)().contains(&"queue") {
            sets.push("method.queue=256");
        }
        if one_thread {
            sets.push("train.threads=1");
        }
        let out = train_recipe(recipe, &run, &sets, &dir);
        assert_ok(&out, &name);
        let losses: Vec<f64> = step_losses(&run).into_iter().map(|s| s.1).collect();
        // 16 clips: 8 steps of 2 clips, or 128 frames in 16 steps of 8.
        assert_eq!(
            losses.len(),
            if clips { 8 } else { 16 },
            "{name}: {losses:?}"
        );
        assert!(losses.iter().all(|l| l.is_finite()), "{name}: {losses:?}");
        if name.contains("irc-dense") {
            // The dense level logs its walk and its auto-pairs' precision against the hidden
            // flow and classes (diagnostics only) on every step.
            let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
            let steps: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .filter(|v: &serde_json::Value| v["kind"] == "step")
                .collect();
            for key in [
                "irc_cycle_acc",
                "irc_pair_precision_flow",
                "irc_match_precision_flow",
                "irc_pair_precision_class",
            ] {
                for v in &steps {
                    let x = v[key]
                        .as_f64()
                        .unwrap_or_else(|| panic!("{name}: no {key} in {v}"));
                    assert!((0.0..=1.0).contains(&x), "{name}: {key} = {x}");
                }
            }
            // The auto-pair term (from step 1: the ramp starts at 0) only with auto_pair.
            assert_eq!(
                steps.iter().any(|v| !v["irc_pair_loss"].is_null()),
                name.ends_with("-ap_resnet-mini_scenes"),
                "{name}"
            );
        }
        let summary = summary(&out);
        assert!(
            summary["knn_top1"].is_null(),
            "unlabelled frames: {summary}"
        );
        let rows = json_lines(&gyre(
            &[
                "eval",
                "--dense",
                "--checkpoint",
                run.to_str().unwrap(),
                "--clips",
                "2",
                "--probe-clips",
                "2",
            ]
            .iter()
            .chain(threads)
            .copied()
            .collect::<Vec<_>>(),
            &dir,
        ));
        assert_eq!(rows.len(), 5, "{name}: {rows:?}");
        let pck = rows[0]["pck"].as_array().unwrap();
        assert!(pck
            .iter()
            .all(|p| (0.0..=1.0).contains(&p.as_f64().unwrap())));
        assert!((0.0..=1.0).contains(&rows[2]["j_mean"].as_f64().unwrap()));
        eprintln!(
            "{name}: loss {:.4} → {:.4}, {}",
            losses[0],
            losses[losses.len() - 1],
            rows[2]["j_mean"]
        );
        if clips {
            // The dense plots of a scenes run, and its loss chart: PNGs of the expected sizes.
            let mut args = vec!["plot", run.to_str().unwrap()];
            args.extend(threads);
            let out = gyre(&args, &dir);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            for (file, w) in [
                ("dense_matches.png", 2 * 64 * 6 + 24),
                ("dense_propagation.png", 110 + 4 * (256 + 8)),
                ("loss.png", 1000),
            ] {
                let img = image::open(run.join("plots").join(file)).unwrap();
                assert_eq!(img.width() as usize, w, "{file}");
            }
        }
        method
    });
    for e in gyre_train::method::REGISTRY
        .iter()
        .filter(|e| e.clips.is_some())
    {
        assert!(
            methods.iter().any(|m| m == e.name),
            "no scenes recipe for {}",
            e.name
        );
    }
    // A clip method needs clips; IRC needs a pair of views.
    let crw = root.join("recipes/crw_resnet-mini_scenes.toml");
    let text = std::fs::read_to_string(&crw).unwrap();
    let scenes = "[data]\nkind = \"scenes\"\n\n[data.scenes]\nsources = \"real\"\nclips = 1000\n";
    assert!(text.contains(scenes));
    let on_images = dir.join("crw-images.toml");
    std::fs::write(
        &on_images,
        text.replace(scenes, "[data]\nkind = \"fashion-mnist-embedded\"\n"),
    )
    .unwrap();
    let dry = |recipe: &Path, extra: &[&str]| {
        let mut a = vec!["train", "--dry-run", "--recipe", recipe.to_str().unwrap()];
        a.extend_from_slice(extra);
        gyre(&a, &dir)
    };
    assert_clean_error(&dry(&on_images, &[]), "data.kind: crw trains on clips");
    assert_clean_error(
        &dry(&crw, &["--set", "data.kind=fashion-mnist-embedded"]),
        "data.scenes: only kind = \"scenes\" reads it",
    );
    let overlay = root.join("recipes/overlays/irc.toml");
    assert_clean_error(
        &dry(&crw, &["--overlay", overlay.to_str().unwrap()]),
        "irc: crw trains on clips",
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `gyre bench --recipe` times a recipe's own step at its shapes: a clip recipe takes one view
/// per frame.
#[test]
fn bench_times_a_recipes_own_step() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tmp("dense-bench");
    let crw = root.join("recipes/crw_resnet-mini_scenes.toml");
    let rows = json_lines(&gyre(
        &[
            "bench",
            "--recipe",
            crw.to_str().unwrap(),
            "--steps",
            "1",
            "--warmup",
            "0",
        ],
        &dir,
    ));
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r["bench"], "recipe-step");
    assert_eq!(r["method"], "crw");
    assert_eq!(
        (r["batch"].as_u64(), r["views"].as_u64()),
        (Some(16), Some(8))
    );
    assert_eq!(r["images_per_step"], 128);
    assert!(
        r["img_per_s"].as_f64().unwrap() > 0.0 && r["final_loss"].as_f64().unwrap().is_finite()
    );
    // `--set` changes the benched recipe: the three-hop dense walk takes a fourth view.
    let dense = root.join("recipes/mocov2-irc-dense_resnet-mini_scenes.toml");
    let rows = json_lines(&gyre(
        &[
            "bench",
            "--recipe",
            dense.to_str().unwrap(),
            "--set",
            "train.batch_size=8",
            "--set",
            "irc.hops=3",
            "--set",
            "method.views=[\"strong\", \"strong\", \"strong\", \"strong\"]",
            "--steps",
            "1",
            "--warmup",
            "0",
        ],
        &dir,
    ));
    assert_eq!(
        (rows[0]["batch"].as_u64(), rows[0]["views"].as_u64()),
        (Some(8), Some(4)),
        "{rows:?}"
    );
    assert!(rows[0]["final_loss"].as_f64().unwrap().is_finite());
}

/// The video recipes (IRC dense on frame pairs among them) train on frame folders laid out as `cargo xtask data opencv-video` writes
/// them (here small generated frames, so CI needs no decoder): the clips are cut as
/// `[data.video]` says; a missing video folder is a one-line error naming the fix.
#[test]
fn video_recipes_train_on_frame_folders() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tmp("dense-video");
    let videos = dir.join("opencv-video");
    for (v, n) in [("vtest", 24u32), ("megamind", 20), ("tree", 12)] {
        let d = videos.join(v);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..n {
            image::RgbImage::from_fn(48, 36, |x, y| {
                image::Rgb([(x * 5 + i * 3) as u8, (y * 7) as u8, (x + y + i) as u8])
            })
            .save(d.join(format!("{i:05}.png")))
            .unwrap();
        }
    }
    let root_set = format!("data.root={}", videos.display());
    for (m, batch, steps) in [("crw", 2, 5), ("densecl", 8, 5), ("mocov2-irc-dense", 8, 5)] {
        let recipe = root.join(format!("recipes/{m}_resnet-mini_video.toml"));
        let run = dir.join(m);
        let batch = format!("train.batch_size={batch}");
        let mut sets = vec![
            root_set.as_str(),
            "data.video.clip_frames=4",
            "data.video.clip_stride=4",
            "train.epochs=1",
            "train.log_every=1",
            batch.as_str(),
        ];
        if m != "crw" {
            sets.push("method.queue=64");
        }
        let out = train_recipe(&recipe, &run, &sets, &dir);
        assert_ok(&out, m);
        let summary = summary(&out);
        // Clips of 4 frames 2 apart span 7 frames, one every 4: 5 + 4 + 2 = 11 clips, 44 frames.
        let data = summary["data"].as_str().unwrap();
        assert!(
            data.contains("11 clips × 4 frames 2 apart, 64 px"),
            "{data}"
        );
        assert!(data.contains("(44 images)"), "{data}");
        assert_eq!(summary["steps"], steps, "{summary}");
    }
    std::fs::remove_dir_all(videos.join("tree")).unwrap();
    let recipe = root.join("recipes/crw_resnet-mini_video.toml");
    let out = gyre(
        &[
            "train",
            "--recipe",
            recipe.to_str().unwrap(),
            "--set",
            &root_set,
            "--run-dir",
            dir.join("missing").to_str().unwrap(),
        ],
        &dir,
    );
    assert_clean_error(&out, "cargo xtask data opencv-video");
    std::fs::remove_dir_all(&dir).ok();
}
