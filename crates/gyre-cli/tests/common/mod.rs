//! Helpers shared by the binary's integration tests: running `gyre`, temp folders, the one-line
//! error check, reading a run's log, stopping a run at a step, a small image folder.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn gyre(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gyre"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run gyre")
}

/// `gyre train --quiet --run-dir RUN --set S…` on the default recipe.
pub fn train_quiet(run: &Path, sets: &[&str], cwd: &Path) -> Output {
    let mut args = vec!["train", "--quiet", "--run-dir", run.to_str().unwrap()];
    for s in sets {
        args.extend(["--set", s]);
    }
    gyre(&args, cwd)
}

/// `gyre train --quiet --recipe RECIPE --run-dir RUN --set S…`.
pub fn train_recipe(recipe: &Path, run: &Path, sets: &[&str], cwd: &Path) -> Output {
    let mut args = vec![
        "train",
        "--quiet",
        "--recipe",
        recipe.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    gyre(&args, cwd)
}

pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gyre-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Asserts a clean failure whose single stderr line contains `needle`.
pub fn assert_clean_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("stack backtrace"),
        "{err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line: {err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "'{needle}' not in: {err}"
    );
}

/// Writes a small labelled image folder `root/{train,test}/<class>/NNNN.png` (32×32 RGB; each
/// class a different colour, with noise) and returns its root.
pub fn image_folder(name: &str, per_class: usize) -> PathBuf {
    let root = tmp(name);
    let mut state = 12345u32;
    let mut noise = move || {
        state = state.wrapping_mul(1664525).wrapping_add(1013904223);
        (state >> 24) as u8 / 4
    };
    for (split, n) in [("train", per_class), ("test", per_class / 2)] {
        for c in 0..4u8 {
            let dir = root.join(split).join(format!("class{c}"));
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let img = image::RgbImage::from_fn(32, 32, |x, _| {
                    let base = [60 * c, 255 - 60 * c, if x < 16 { 40 } else { 200 }];
                    image::Rgb(base.map(|b| b.saturating_add(noise())))
                });
                img.save(dir.join(format!("{i:04}.png"))).unwrap();
            }
        }
    }
    root
}

/// `(step, loss)` of every step line of a run's log.
pub fn step_losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "step")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

/// Starts `gyre ARGS` (stdout null, stderr captured) and waits until the run's log shows `step`.
pub fn start_and_wait_for_step(
    args: &[String],
    run: &Path,
    step: u64,
    cwd: &Path,
) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gyre"))
        .args(args)
        .current_dir(cwd)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    loop {
        let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
        let reached = log.lines().any(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v["kind"] == "step" && v["step"].as_u64() >= Some(step))
        });
        if reached {
            return child;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "run ended before step {step}"
        );
        assert!(t0.elapsed().as_secs() < 600, "step {step} never came");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Starts `gyre train`, waits until its log shows `step`, and kills it with SIGKILL.
pub fn train_and_kill_at(args: &[String], run: &Path, step: u64, cwd: &Path) {
    let mut child = start_and_wait_for_step(args, run, step, cwd);
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
}

/// Sends `signal` (`TERM`, `INT`, …) to a process, with the system's `kill`.
pub fn send_signal(child: &std::process::Child, signal: &str) {
    let st = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -{signal} failed");
}

/// The last stdout line of a run, as JSON (the summary).
pub fn summary(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_else(|| {
        panic!(
            "no stdout; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(last).unwrap()
}

/// Asserts that `out` succeeded, with its stderr in the message.
pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How many `gyre` processes a test that trains many recipes runs at once: `GYRE_TEST_JOBS`,
/// else one per core.
pub fn jobs() -> usize {
    std::env::var("GYRE_TEST_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// `f` over `items` on [`jobs`] threads, results in the items' order. `f`'s flag says whether
/// jobs share the machine, so that each `gyre` it starts should take `--threads 1` (results
/// repeat at any thread count). A panic in `f` fails the test once the other jobs end.
pub fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T, bool) -> R + Sync) -> Vec<R> {
    let jobs = jobs().min(items.len()).max(1);
    let n = items.len();
    let queue = std::sync::Mutex::new(items.into_iter().enumerate());
    let done = std::sync::Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let Some((i, item)) = queue.lock().unwrap().next() else {
                    break;
                };
                let r = f(item, jobs > 1);
                done.lock().unwrap().push((i, r));
            });
        }
    });
    let mut done = done.into_inner().unwrap();
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}
