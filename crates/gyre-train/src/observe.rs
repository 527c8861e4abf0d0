//! What a training run reports to: the [`Observer`] trait, called by the [`crate::trainer`] at
//! the start, at each loss, after each step, at each epoch's end and at the end — the way burn's
//! learner and Lightning's callbacks report — and the observers every run has: the kNN monitor,
//! the NaN stop, the `metrics.jsonl` log and the checkpoint policy (in that order, so that the
//! log and the checkpoint see the epoch's kNN). A progress bar or any other report is one more
//! observer, added by whoever runs the trainer (the `gyre` binary adds its console).

use crate::checkpoint::{self, CheckpointState};
use crate::eval::KnnMonitor;
use crate::method::Method;
use crate::metrics::{embedding_std, peak_rss_mb, MetricsLog};
use crate::optim::Optimizer;
use crate::recipe::Recipe;
use anyhow::Context;
use gyre_data::LoadReport;
use gyre_kernels::Tensor;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Where the run stands: epochs done, steps into the next epoch, steps done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub epoch: u64,
    pub epoch_step: u64,
    pub step: u64,
}

/// What the run has recorded so far; the observers read and write it (the kNN monitor its
/// accuracies, the checkpoint policy its last checkpoint).
#[derive(Debug, Clone, Default)]
pub struct RunState {
    pub last_knn: Option<f64>,
    pub best_knn: Option<f64>,
    /// kNN top-1 of raw pixels and of the random-init encoder, before training.
    pub baselines: Option<(f64, f64)>,
    pub last_checkpoint: Option<PathBuf>,
}

/// The run as observers see it at an event.
pub struct Run<'a> {
    pub recipe: &'a Recipe,
    pub run_dir: &'a Path,
    pub method: &'a dyn Method,
    pub optim: &'a Optimizer,
    pub position: Position,
    pub steps_per_epoch: u64,
    pub total_steps: u64,
    pub state: &'a mut RunState,
}

/// The start of a run (a new one, or a resumed one at `run.position`).
pub struct Start<'a> {
    pub description: &'a str,
    pub dataset: &'a str,
    /// Where the normalisation came from (`recipe`, `published`, `computed from N images …`).
    pub normalisation: &'a str,
    pub mean: &'a [f32],
    pub std: &'a [f32],
    pub report: &'a LoadReport,
    pub resumed: bool,
}

/// One finished step (its optimiser update applied).
pub struct Step<'a> {
    pub loss: f64,
    pub lr: f64,
    /// The method's and plug-ins' scalars.
    pub logs: &'a [(&'static str, f64)],
    /// The online embeddings whose spread is the collapse gauge.
    pub embeddings: &'a Tensor,
    /// Images through the network per step (batch × views).
    pub images: usize,
    /// Images per second since the last logged step — on the steps the log records (every
    /// `train.log_every` and the last), `None` on the others.
    pub images_per_second: Option<f64>,
}

/// The end of an epoch; `evaluate` when the recipe's kNN schedule says so (the kNN monitor
/// fills `knn`; `stats` are the method's diagnostics since the last evaluation).
pub struct Epoch {
    pub evaluate: bool,
    pub last: bool,
    pub knn: Option<f64>,
    /// The neighbours the kNN vote uses (all of a bank smaller than `eval.knn_k`), and t.
    pub k: usize,
    pub t: f64,
    pub stats: serde_json::Map<String, serde_json::Value>,
}

/// A report of a training run. Every method has a default that does nothing; an error stops the
/// run and is returned by the trainer.
pub trait Observer {
    fn start(&mut self, _start: &Start, _run: &mut Run) -> anyhow::Result<()> {
        Ok(())
    }
    /// The step's loss, before the backward pass: an error stops the run with nothing applied.
    fn loss(&mut self, _loss: f64, _run: &mut Run) -> anyhow::Result<()> {
        Ok(())
    }
    fn step(&mut self, _step: &Step, _run: &mut Run) -> anyhow::Result<()> {
        Ok(())
    }
    fn epoch(&mut self, _epoch: &mut Epoch, _run: &mut Run) -> anyhow::Result<()> {
        Ok(())
    }
    fn end(&mut self, _summary: &serde_json::Value, _run: &mut Run) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The kNN monitor as an observer: the raw-pixel and random-init baselines at the start of a new
/// run (with `eval.baselines`), the trained encoder at each evaluation.
impl Observer for KnnMonitor {
    fn start(&mut self, start: &Start, run: &mut Run) -> anyhow::Result<()> {
        if run.recipe.eval.baselines && !start.resumed {
            let raw = self.raw_pixels()?;
            let init = self.accuracy(run.method.backbone())?;
            run.state.baselines = Some((raw, init));
        }
        Ok(())
    }

    fn epoch(&mut self, epoch: &mut Epoch, run: &mut Run) -> anyhow::Result<()> {
        if epoch.evaluate {
            epoch.knn = Some(self.accuracy(run.method.backbone())?);
        }
        Ok(())
    }
}

/// Stops the run when the loss is not finite, before it reaches the weights.
pub struct NanStop;

impl Observer for NanStop {
    fn loss(&mut self, loss: f64, run: &mut Run) -> anyhow::Result<()> {
        if !loss.is_finite() {
            let last = run
                .state
                .last_checkpoint
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none written yet".into());
            anyhow::bail!(
                "loss became {loss} at epoch {}, step {}: training stopped; last good checkpoint: {last}",
                run.position.epoch,
                run.position.step
            );
        }
        Ok(())
    }
}

/// The `metrics.jsonl` log: a baseline line, a step line every `train.log_every` steps (and at
/// the last), a kNN line at each evaluation, the summary at the end. A resumed run first drops
/// the lines after its checkpoint, then logs them again.
pub struct Metrics {
    path: PathBuf,
    log: Option<MetricsLog>,
}

impl Metrics {
    pub fn new(run_dir: &Path) -> Self {
        Self {
            path: run_dir.join("metrics.jsonl"),
            log: None,
        }
    }

    fn write(&mut self, v: &serde_json::Value) -> anyhow::Result<()> {
        let log = self
            .log
            .as_mut()
            .context("metrics log used before the start")?;
        log.write(v)
            .with_context(|| format!("{}: cannot write", self.path.display()))
    }
}

/// Drops the log lines of steps after `step` (and any summary): a resumed run re-logs them.
fn truncate_log(path: &Path, step: u64) -> anyhow::Result<()> {
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

impl Observer for Metrics {
    fn start(&mut self, start: &Start, run: &mut Run) -> anyhow::Result<()> {
        if start.resumed {
            truncate_log(&self.path, run.position.step)?;
        }
        self.log = Some(
            MetricsLog::create(&self.path)
                .with_context(|| format!("{}: cannot create", self.path.display()))?,
        );
        if let Some((raw, init)) = run.state.baselines {
            self.write(&json!({"kind": "baseline", "raw_knn_top1": raw, "init_knn_top1": init}))?;
        }
        Ok(())
    }

    fn step(&mut self, s: &Step, run: &mut Run) -> anyhow::Result<()> {
        if let Some(ips) = s.images_per_second {
            let mut line = json!({"kind": "step", "epoch": run.position.epoch, "step": run.position.step, "loss": s.loss, "lr": s.lr, "img_per_s": ips, "peak_rss_mb": peak_rss_mb()});
            line["embed_std"] = json!(embedding_std(s.embeddings)?);
            for (k, v) in s.logs {
                line[*k] = json!(v);
            }
            self.write(&line)?;
        }
        Ok(())
    }

    fn epoch(&mut self, e: &mut Epoch, run: &mut Run) -> anyhow::Result<()> {
        if e.evaluate {
            let mut entry = json!({"kind": "knn", "epoch": run.position.epoch, "step": run.position.step, "knn_top1": e.knn, "k": e.k, "t": e.t});
            for (key, v) in &e.stats {
                entry[key] = v.clone();
            }
            self.write(&entry)?;
        }
        Ok(())
    }

    fn end(&mut self, summary: &serde_json::Value, _run: &mut Run) -> anyhow::Result<()> {
        self.write(&json!({"kind": "summary", "summary": summary}))
    }
}

/// A run stopped on request ([`crate::trainer::TrainOptions::stop`]) after writing its
/// checkpoint; continue it with `gyre train --resume <run_dir>`.
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

/// The checkpoint policy: every `train.checkpoint_every` epochs and at the end, every
/// `train.checkpoint_every_steps` steps inside an epoch, the last N and the best by kNN; and on a
/// stop request, one at the current step, after which the run ends with [`Interrupted`] (at an
/// epoch's end it waits for the epoch's evaluation).
pub struct Checkpoints {
    stop: Option<Arc<AtomicUsize>>,
}

impl Checkpoints {
    pub fn new(stop: Option<Arc<AtomicUsize>>) -> Self {
        Self { stop }
    }

    /// The signal number of a pending stop request.
    fn stop_signal(&self) -> Option<usize> {
        self.stop
            .as_ref()
            .map(|s| s.load(Ordering::SeqCst))
            .filter(|&s| s != 0)
    }

    fn write(run: &mut Run, is_best: bool) -> anyhow::Result<PathBuf> {
        let Position {
            epoch,
            epoch_step,
            step,
        } = run.position;
        let state = CheckpointState {
            recipe: run.recipe.name.clone(),
            method: run.method.name().into(),
            epoch,
            epoch_step,
            step,
            seed: run.recipe.seed,
            weights: "checkpoint.safetensors".into(),
            knn_top1: run.state.last_knn,
            best_knn_top1: run.state.best_knn,
        };
        let keep = checkpoint::Keep {
            last: run.recipe.train.keep_last,
            best: run.recipe.train.keep_best,
        };
        let path = checkpoint::save(
            run.run_dir,
            run.method.params(),
            run.optim,
            run.method.state()?,
            &state,
            keep,
            is_best,
        )?;
        run.state.last_checkpoint = Some(path.clone());
        Ok(path)
    }

    fn interrupted(signal: usize, path: PathBuf, run: &Run) -> anyhow::Error {
        Interrupted {
            signal,
            step: run.position.step,
            checkpoint: path,
            run_dir: run.run_dir.to_path_buf(),
        }
        .into()
    }
}

impl Observer for Checkpoints {
    fn step(&mut self, _s: &Step, run: &mut Run) -> anyhow::Result<()> {
        // At an epoch's last step the epoch's own checkpoint follows its evaluation.
        if run.position.epoch_step >= run.steps_per_epoch {
            return Ok(());
        }
        let every = run.recipe.train.checkpoint_every_steps as u64;
        let signal = self.stop_signal();
        if (every > 0 && run.position.step.is_multiple_of(every)) || signal.is_some() {
            let path = Self::write(run, false)?;
            if let Some(signal) = signal {
                return Err(Self::interrupted(signal, path, run));
            }
        }
        Ok(())
    }

    fn epoch(&mut self, e: &mut Epoch, run: &mut Run) -> anyhow::Result<()> {
        if e.evaluate {
            run.state.last_knn = e.knn;
        }
        let is_best = match (run.state.last_knn, run.state.best_knn) {
            (Some(a), Some(b)) => a > b,
            (Some(_), None) => true,
            _ => false,
        };
        if is_best {
            run.state.best_knn = run.state.last_knn;
        }
        let signal = self.stop_signal();
        let every = run.recipe.train.checkpoint_every as u64;
        if e.last || run.position.epoch.is_multiple_of(every) || signal.is_some() {
            let path = Self::write(run, is_best)?;
            if let (Some(signal), false) = (signal, e.last) {
                return Err(Self::interrupted(signal, path, run));
            }
        }
        Ok(())
    }
}
