//! The training loop every method shares: data, views, loss, backward, optimiser, schedule, the
//! kNN monitor, logs and checkpoints; it ends with a one-line JSON summary.

use crate::checkpoint::{self, CheckpointState};
use crate::data_setup::{self, RunData};
use crate::eval::{knn_eval, pixel_features};
use crate::knn::{effective_k, knn_top1};
use crate::method::Method;
use crate::metrics::{embedding_std, peak_rss_mb, utc_stamp, MetricsLog};
use crate::optim::{OptimSettings, Optimizer};
use crate::recipe::Recipe;
use crate::schedule::LrSchedule;
use crate::step::StepContext;
use anyhow::Context;
use gyre_data::{Loader, LoaderConfig, ViewPipeline};
use gyre_kernels::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How to run (not what to learn: that is the recipe).
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Use this run folder instead of `<out_dir>/<name>-<UTC stamp>`.
    pub run_dir: Option<PathBuf>,
    /// No progress bar.
    pub quiet: bool,
    /// Continue the run in `run_dir` from its checkpoint.
    pub resume: bool,
    /// Start afresh in a `run_dir` that holds another run (its run files are removed first);
    /// without it such a folder is refused.
    pub overwrite: bool,
    /// A stop request: the number of the signal that asked (SIGINT, SIGTERM), 0 while none.
    /// When it becomes non-zero the run finishes its step, writes a checkpoint and returns
    /// [`Interrupted`].
    pub stop: Option<Arc<AtomicUsize>>,
}

/// A run stopped on request ([`TrainOptions::stop`]) after writing its checkpoint; continue it
/// with `gyre train --resume <run_dir>`.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted by signal {signal} at step {step}: checkpoint written to {}; continue with: gyre train --resume {}",
    checkpoint.display(),
    run_dir.display()
)]
pub struct Interrupted {
    pub signal: usize,
    pub step: u64,
    pub checkpoint: PathBuf,
    pub run_dir: PathBuf,
}

/// The files a run writes into its folder (what `overwrite` removes).
const RUN_FILES: &[&str] = &[
    "recipe.toml",
    "metrics.jsonl",
    "metrics.jsonl.tmp",
    "checkpoint.safetensors",
    "checkpoint.safetensors.tmp",
    "checkpoint.json",
    "checkpoint.json.tmp",
    "checkpoint-best.safetensors",
    "checkpoints",
    "plots",
];

/// The end-of-run summary (also the last line on stdout).
pub type Summary = serde_json::Value;

/// The run folder: created, or — resuming — the existing one. A folder that already holds files
/// is refused (its run would be overwritten and its log appended to) unless `overwrite` is set,
/// which removes the run files first.
fn make_run_dir(recipe: &Recipe, opts: &TrainOptions) -> anyhow::Result<PathBuf> {
    let dir = match &opts.run_dir {
        Some(d) => d.clone(),
        None => recipe
            .train
            .out_dir
            .join(format!("{}-{}", recipe.name, utc_stamp())),
    };
    if opts.resume {
        if !checkpoint::weights_path(&dir).is_file() {
            anyhow::bail!(
                "{}: no checkpoint.safetensors to resume from",
                dir.display()
            );
        }
        return Ok(dir);
    }
    let occupied = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some());
    if occupied {
        if !opts.overwrite {
            anyhow::bail!(
                "{}: the run folder is not empty (another run?): continue that run with --resume, \
                 start afresh in it with --overwrite, or choose another --run-dir",
                dir.display()
            );
        }
        for f in RUN_FILES {
            let p = dir.join(f);
            let removed = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else if p.exists() {
                std::fs::remove_file(&p)
            } else {
                Ok(())
            };
            removed.with_context(|| format!("{}: cannot remove (--overwrite)", p.display()))?;
        }
    }
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("{}: cannot create the run folder", dir.display()))?;
    Ok(dir)
}

/// Writes `text` to `path` through a temp file and a rename: a crash leaves the old file or the
/// new one, never half of one.
fn write_atomic(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot rename", path.display()))?;
    Ok(())
}

/// Moves the batch's view buffers into tensors (no copy on the CPU); the batch keeps its indices
/// and labels.
fn views_to_tensors(
    batch: &mut gyre_data::Batch,
    device: &Device,
) -> gyre_kernels::Result<Vec<Tensor>> {
    let n = batch.len();
    let views = std::mem::take(&mut batch.views);
    views
        .into_iter()
        .zip(&batch.view_shapes)
        .map(|(v, &(c, h, w))| Tensor::from_vec(v, (n, c, h, w), device))
        .collect()
}

/// Drops the log lines of steps after `step` (and any summary): a resumed run re-logs them.
fn truncate_log(path: &std::path::Path, step: u64) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            v["kind"] != "summary" && v["step"].as_u64().is_none_or(|s| s <= step)
        })
        .collect();
    let tmp = path.with_extension("jsonl.tmp");
    let mut body = kept.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    std::fs::write(&tmp, body).with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot rename", path.display()))?;
    Ok(())
}

/// Where a checkpoint is taken: (epochs done, steps into the next epoch, steps, last kNN, best).
type Position = (u64, u64, u64, Option<f64>, Option<f64>);

/// Writes the run's checkpoint at `at` (see [`checkpoint::save`]).
fn write_checkpoint(
    run_dir: &std::path::Path,
    recipe: &Recipe,
    method: &dyn Method,
    optim: &Optimizer,
    at: Position,
    keep: checkpoint::Keep,
    is_best: bool,
) -> anyhow::Result<PathBuf> {
    let (epoch, epoch_step, step, knn_top1, best_knn_top1) = at;
    let state = CheckpointState {
        recipe: recipe.name.clone(),
        method: method.name().into(),
        epoch,
        epoch_step,
        step,
        seed: recipe.seed,
        weights: "checkpoint.safetensors".into(),
        knn_top1,
        best_knn_top1,
    };
    let st = method.state()?;
    checkpoint::save(run_dir, method.params(), optim, st, &state, keep, is_best)
}

/// The signal number of a pending stop request, if any.
fn stop_signal(opts: &TrainOptions) -> Option<usize> {
    opts.stop
        .as_ref()
        .map(|s| s.load(Ordering::SeqCst))
        .filter(|&s| s != 0)
}

fn interrupted(
    signal: usize,
    step: u64,
    ckpt: &std::path::Path,
    run_dir: &std::path::Path,
) -> anyhow::Error {
    Interrupted {
        signal,
        step,
        checkpoint: ckpt.to_path_buf(),
        run_dir: run_dir.to_path_buf(),
    }
    .into()
}

/// Trains `recipe` and returns the summary. The recipe is validated first (a hand-built one
/// included), and the run folder checked, before any data is read.
pub fn train(recipe: &Recipe, opts: &TrainOptions) -> anyhow::Result<Summary> {
    let t_start = Instant::now();
    recipe.validate("recipe")?;
    let run_dir = make_run_dir(recipe, opts)?;
    let device = gyre_kernels::select_device(&recipe.train.device)?;
    let RunData {
        pretrain,
        eval,
        description,
        dataset,
        mean,
        std,
        normalisation,
        mut report,
    } = data_setup::load(recipe)?;
    // What the kNN vote uses: a bank smaller than `knn_k` votes with all of it.
    let (k, t) = (recipe.eval.knn_k, recipe.eval.knn_t);
    let k = match &eval {
        Some((bank, _)) if effective_k(k, bank.len()) != k => {
            let used = effective_k(k, bank.len());
            report.warnings.push(format!(
                "eval.knn_k: {k} neighbours asked, the kNN bank has {used} images: kNN uses {used}"
            ));
            used
        }
        _ => k,
    };
    // The run's recipe records the normalisation it used (evaluation and export read it).
    let mut resolved = recipe.clone();
    resolved.data.mean = Some(mean.clone());
    resolved.data.std = Some(std.clone());
    let recipe = &resolved;
    let channels = pretrain.channels;

    let mut method: Box<dyn Method> = recipe.build_method(channels, pretrain.len(), &device)?;
    let views = recipe
        .method
        .views
        .iter()
        .map(|v| ViewPipeline::new(recipe.augment[v].clone(), &mean, &std))
        .collect::<Result<Vec<_>, _>>()?;
    let loader = Loader::new(
        pretrain.clone(),
        views,
        LoaderConfig {
            batch_size: recipe.train.batch_size,
            seed: recipe.seed,
            prefetch: recipe.data.prefetch,
        },
    )?;
    let steps_per_epoch = loader.batches_per_epoch() as u64;
    let total_steps = steps_per_epoch * recipe.train.epochs as u64;
    let o = &recipe.optim;
    let schedule = LrSchedule {
        base: recipe.effective_lr(),
        final_lr: o.final_lr,
        warmup_iters: (o.warmup_epochs * steps_per_epoch as f64).round() as u64,
        total_iters: total_steps,
        decay: o.decay,
    };
    let settings = OptimSettings {
        kind: o.name,
        momentum: o.momentum,
        nesterov: o.nesterov,
        weight_decay: o.weight_decay,
        exclude_bn_bias: o.exclude_bn_bias,
        betas: (o.betas[0], o.betas[1]),
        eps: o.eps,
        eta: o.eta,
        clip_lr: o.clip_lr,
    };
    let mut optim = Optimizer::new(method.params(), settings);

    let metrics_path = run_dir.join("metrics.jsonl");
    // Where to start: the beginning, or the checkpoint of an interrupted run.
    let (mut step, start_epoch, start_epoch_step, mut best_knn, mut last_knn) = if opts.resume {
        let ck = checkpoint::load(&run_dir, &device)?;
        let wp = checkpoint::weights_path(&run_dir);
        checkpoint::restore_params(method.params(), &ck.tensors, &wp)?;
        optim.load_state(&ck.tensors, ck.state.step);
        method
            .load_state(&checkpoint::method_state(&ck.tensors))
            .with_context(|| format!("{}: restoring the method's state", wp.display()))?;
        truncate_log(&metrics_path, ck.state.step)?;
        let s = ck.state;
        (s.step, s.epoch, s.epoch_step, s.best_knn_top1, s.knn_top1)
    } else {
        write_atomic(&run_dir.join("recipe.toml"), &recipe.to_toml())?;
        (0u64, 0u64, 0u64, None, None)
    };
    let mut log = MetricsLog::create(&metrics_path)
        .with_context(|| format!("{}: cannot create", metrics_path.display()))?;
    if !opts.quiet {
        eprintln!("gyre: {} · {} · {description}", recipe.name, method.name());
        eprintln!("gyre: run folder {}", run_dir.display());
        if normalisation != "recipe" {
            eprintln!("gyre: normalisation ({normalisation}): mean {mean:?}, std {std:?}");
        }
        let bad = &report.bad_samples;
        if bad.count > 0 {
            eprintln!(
                "gyre: skipped {} bad sample(s), first: {}",
                bad.count,
                bad.first.join("; ")
            );
        }
        if report.grey_to_rgb > 0 {
            eprintln!(
                "gyre: converted {} grey image(s) to RGB, first: {}",
                report.grey_to_rgb,
                report.grey_to_rgb_first.join("; ")
            );
        }
    }
    for w in &report.warnings {
        eprintln!("gyre: warning: {w}");
    }

    let (mut raw_knn, mut init_knn) = (None, None);
    if let (true, Some((bank, queries))) = (recipe.eval.baselines, &eval) {
        let classes = bank.classes.len();
        let r = knn_top1(
            &pixel_features(bank, &mean, &std)?,
            &pixel_features(queries, &mean, &std)?,
            k,
            t,
            classes,
        )?;
        let i = knn_eval(method.backbone(), bank, queries, &mean, &std, k, t, &device)?;
        log.write(&json!({"kind": "baseline", "raw_knn_top1": r, "init_knn_top1": i}))?;
        if !opts.quiet {
            eprintln!(
                "gyre: kNN top-1 before training: raw pixels {:.2}%, random-init encoder {:.2}%",
                100.0 * r,
                100.0 * i
            );
        }
        raw_knn = Some(r);
        init_knn = Some(i);
    }

    let bar = if opts.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total_steps)
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let imgs_per_step = (recipe.train.batch_size * recipe.method.views.len()) as f64;
    let mut train_secs = 0f64;
    let start_step = step;
    if opts.resume && step == total_steps && !opts.quiet {
        eprintln!(
            "gyre: the run had already finished (step {step} of {total_steps}): nothing to train"
        );
    }
    let mut last_loss = f64::NAN;
    let keep = checkpoint::Keep {
        last: recipe.train.keep_last,
        best: recipe.train.keep_best,
    };
    let every_steps = recipe.train.checkpoint_every_steps as u64;
    let mut ckpt_path: Option<PathBuf> = None;
    let mut window = (Instant::now(), 0u64);
    bar.set_position(step);
    for epoch in start_epoch..recipe.train.epochs as u64 {
        let t_epoch = Instant::now();
        let first = if epoch == start_epoch {
            start_epoch_step as usize
        } else {
            0
        };
        for (i, batch) in loader.epoch(epoch, first).enumerate() {
            let mut batch = batch?;
            let lr = schedule.at(step);
            let x = views_to_tensors(&mut batch, &device)?;
            let ctx = StepContext {
                step,
                total_steps,
                steps_per_epoch,
            };
            let out = method.step(&x, &batch, ctx)?;
            let loss = out
                .loss
                .to_dtype(gyre_kernels::DType::F32)?
                .to_scalar::<f32>()? as f64;
            if !loss.is_finite() {
                let last = ckpt_path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "none written yet".into());
                anyhow::bail!("loss became {loss} at epoch {epoch}, step {step}: training stopped; last good checkpoint: {last}");
            }
            let grads = out.loss.backward()?;
            optim.step(&grads, lr)?;
            drop(grads);
            method.after_step(ctx)?;
            step += 1;
            last_loss = loss;
            window.1 += 1;
            if step.is_multiple_of(recipe.train.log_every as u64) || step == total_steps {
                let ips = window.1 as f64 * imgs_per_step / window.0.elapsed().as_secs_f64();
                window = (Instant::now(), 0);
                let mut line = json!({"kind": "step", "epoch": epoch, "step": step, "loss": loss, "lr": lr, "img_per_s": ips, "peak_rss_mb": peak_rss_mb()});
                line["embed_std"] = json!(embedding_std(&out.embeddings)?);
                for (k, v) in &out.logs {
                    line[*k] = json!(v);
                }
                log.write(&line)?;
                bar.set_message(format!("loss {loss:.4} lr {lr:.4} {ips:.0} img/s"));
            }
            bar.inc(1);
            let epoch_step = (first + i + 1) as u64;
            let mid_epoch = epoch_step < steps_per_epoch;
            let signal = stop_signal(opts);
            if mid_epoch
                && ((every_steps > 0 && step.is_multiple_of(every_steps)) || signal.is_some())
            {
                let at = (epoch, epoch_step, step, last_knn, best_knn);
                ckpt_path = Some(write_checkpoint(
                    &run_dir, recipe, &*method, &optim, at, keep, false,
                )?);
            }
            // A stop request mid-epoch ends the run here, its checkpoint written; at the
            // epoch's end it waits for the epoch's evaluation and checkpoint, below.
            if let (Some(signal), true, Some(ckpt)) = (signal, mid_epoch, &ckpt_path) {
                bar.finish_and_clear();
                return Err(interrupted(signal, step, ckpt, &run_dir));
            }
        }
        train_secs += t_epoch.elapsed().as_secs_f64();
        let done = epoch + 1;
        let last_epoch = done == recipe.train.epochs as u64;
        let every = recipe.eval.knn_every as u64;
        if last_epoch || (every > 0 && done.is_multiple_of(every)) {
            let acc = match &eval {
                Some((bank, queries)) => Some(knn_eval(
                    method.backbone(),
                    bank,
                    queries,
                    &mean,
                    &std,
                    k,
                    t,
                    &device,
                )?),
                None => None,
            };
            let mut entry = json!({"kind": "knn", "epoch": done, "step": step, "knn_top1": acc, "k": k, "t": t});
            let mut line = match acc {
                Some(a) => format!("gyre: epoch {done}: kNN top-1 {:.2}%", 100.0 * a),
                None => format!("gyre: epoch {done}"),
            };
            if let Some(serde_json::Value::Object(stats)) = method.take_eval_stats() {
                for (key, v) in stats {
                    // Fractions go on the console line; counts only into the log.
                    if let Some(x) = v.as_f64().filter(|_| v.is_f64()) {
                        line.push_str(&format!(", {key} {x:.4}"));
                    }
                    entry[key] = v;
                }
            }
            log.write(&entry)?;
            if bar.is_hidden() {
                if !opts.quiet {
                    eprintln!("{line}");
                }
            } else {
                bar.println(line);
            }
            last_knn = acc;
        }
        let is_best = match (last_knn, best_knn) {
            (Some(a), Some(b)) => a > b,
            (Some(_), None) => true,
            _ => false,
        };
        if is_best {
            best_knn = last_knn;
        }
        let signal = stop_signal(opts);
        if last_epoch
            || done.is_multiple_of(recipe.train.checkpoint_every as u64)
            || signal.is_some()
        {
            let at = (done, 0, step, last_knn, best_knn);
            ckpt_path = Some(write_checkpoint(
                &run_dir, recipe, &*method, &optim, at, keep, is_best,
            )?);
        }
        if let (Some(signal), false, Some(ckpt)) = (signal, last_epoch, &ckpt_path) {
            bar.finish_and_clear();
            return Err(interrupted(signal, step, ckpt, &run_dir));
        }
        window = (Instant::now(), 0);
    }
    bar.finish_and_clear();
    let summary = json!({
        "recipe": recipe.name,
        "method": method.name(),
        "encoder": recipe.encoder.arch,
        "dataset": dataset,
        "data": description,
        "seed": recipe.seed,
        "epochs": recipe.train.epochs,
        "steps": step,
        "batch_size": recipe.train.batch_size,
        "final_loss": last_loss,
        "knn_top1": last_knn,
        "raw_knn_top1": raw_knn,
        "init_knn_top1": init_knn,
        "knn_k": k,
        "knn_t": t,
        "train_seconds": train_secs,
        "wall_seconds": t_start.elapsed().as_secs_f64(),
        // This process's rate: none when it trained no step (a finished run resumed).
        "img_per_s": (step > start_step && train_secs > 0.0)
            .then(|| (step - start_step) as f64 * imgs_per_step / train_secs),
        "peak_rss_mb": peak_rss_mb(),
        "threads": rayon::current_num_threads(),
        "checkpoint": ckpt_path.map(|p| p.display().to_string()),
        "bad_samples": report.bad_samples,
        "grey_to_rgb": report.grey_to_rgb,
        "warnings": report.warnings,
        "normalisation": {"mean": mean, "std": std, "source": normalisation},
        "metrics": metrics_path.display().to_string(),
        "run_dir": run_dir.display().to_string(),
    });
    log.write(&json!({"kind": "summary", "summary": summary}))?;
    Ok(summary)
}
