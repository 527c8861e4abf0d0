//! The training loop every method shares: data, views, loss, backward, optimiser, schedule, the
//! kNN monitor, logs and checkpoints; it ends with a one-line JSON summary.

use crate::checkpoint::{self, CheckpointState};
use crate::data_setup::{self, RunData};
use crate::eval::{knn_eval, pixel_features};
use crate::knn::knn_top1;
use crate::method::{self, Method, StepContext};
use crate::metrics::{peak_rss_mb, utc_stamp, MetricsLog};
use crate::optim::{OptimSettings, Optimizer};
use crate::recipe::Recipe;
use crate::schedule::LrSchedule;
use anyhow::Context;
use gyre_data::{Loader, LoaderConfig, ViewPipeline};
use gyre_kernels::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// How to run (not what to learn: that is the recipe).
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Use this run folder instead of `<out_dir>/<name>-<UTC stamp>`.
    pub run_dir: Option<PathBuf>,
    /// No progress bar.
    pub quiet: bool,
}

/// The end-of-run summary (also the last line on stdout).
pub type Summary = serde_json::Value;

fn make_run_dir(recipe: &Recipe, opts: &TrainOptions) -> anyhow::Result<PathBuf> {
    let dir = match &opts.run_dir {
        Some(d) => d.clone(),
        None => recipe
            .train
            .out_dir
            .join(format!("{}-{}", recipe.name, utc_stamp())),
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("{}: cannot create the run folder", dir.display()))?;
    Ok(dir)
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

/// Trains `recipe` and returns the summary.
pub fn train(recipe: &Recipe, opts: &TrainOptions) -> anyhow::Result<Summary> {
    let t_start = Instant::now();
    let device = gyre_kernels::select_device(&recipe.train.device)?;
    let RunData {
        pretrain,
        eval,
        description,
        dataset,
        bad_samples,
    } = data_setup::load(recipe)?;
    let (mean, std) = (recipe.data.mean.clone(), recipe.data.std.clone());
    let channels = pretrain.channels;

    let mut method: Box<dyn Method> = method::build(recipe, channels, pretrain.len(), &device)?;
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

    let run_dir = make_run_dir(recipe, opts)?;
    std::fs::write(run_dir.join("recipe.toml"), recipe.to_toml())
        .with_context(|| format!("{}: cannot write recipe.toml", run_dir.display()))?;
    let metrics_path = run_dir.join("metrics.jsonl");
    let mut log = MetricsLog::create(&metrics_path)
        .with_context(|| format!("{}: cannot create", metrics_path.display()))?;
    if !opts.quiet {
        eprintln!("gyre: {} · {} · {description}", recipe.name, method.name());
        eprintln!("gyre: run folder {}", run_dir.display());
        if bad_samples.count > 0 {
            eprintln!(
                "gyre: skipped {} bad sample(s), first: {}",
                bad_samples.count,
                bad_samples.first.join("; ")
            );
        }
    }

    let (k, t) = (recipe.eval.knn_k, recipe.eval.knn_t);
    let (mut raw_knn, mut init_knn) = (None, None);
    if let (true, Some((bank, queries))) = (recipe.eval.baselines, &eval) {
        let classes = bank.classes.len();
        let r = knn_top1(
            &pixel_features(bank, &mean, &std),
            &pixel_features(queries, &mean, &std),
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
    let mut step: u64 = 0;
    let mut train_secs = 0f64;
    let mut last_knn = None;
    let mut last_loss = f64::NAN;
    let mut ckpt_path: Option<PathBuf> = None;
    let mut window = (Instant::now(), 0u64);
    for epoch in 0..recipe.train.epochs as u64 {
        let t_epoch = Instant::now();
        for mut batch in loader.epoch(epoch, 0) {
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
                for (k, v) in &out.logs {
                    line[*k] = json!(v);
                }
                log.write(&line)?;
                bar.set_message(format!("loss {loss:.4} lr {lr:.4} {ips:.0} img/s"));
            }
            bar.inc(1);
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
        if last_epoch || done.is_multiple_of(recipe.train.checkpoint_every as u64) {
            let state = CheckpointState {
                recipe: recipe.name.clone(),
                method: method.name().into(),
                epoch: done,
                step,
                seed: recipe.seed,
                weights: "checkpoint.safetensors".into(),
            };
            ckpt_path = Some(checkpoint::save(&run_dir, method.params(), &optim, &state)?);
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
        "img_per_s": step as f64 * imgs_per_step / train_secs.max(1e-9),
        "peak_rss_mb": peak_rss_mb(),
        "threads": rayon::current_num_threads(),
        "checkpoint": ckpt_path.map(|p| p.display().to_string()),
        "bad_samples": bad_samples,
        "metrics": metrics_path.display().to_string(),
        "run_dir": run_dir.display().to_string(),
    });
    log.write(&json!({"kind": "summary", "summary": summary}))?;
    Ok(summary)
}
