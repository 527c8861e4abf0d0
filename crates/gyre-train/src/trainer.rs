//! The training loop every method shares, as a [`Trainer`]: data, views, loss, backward,
//! optimiser, schedule; everything it reports — the kNN monitor, the NaN stop, `metrics.jsonl`,
//! checkpoints, and whatever the caller adds (a progress bar) — goes through
//! [`crate::observe::Observer`]s. It ends with a JSON summary. The library prints nothing.

use crate::checkpoint;
use crate::data_setup::{self, RunData};
use crate::eval::KnnMonitor;
use crate::method::Method;
use crate::metrics::{peak_rss_mb, utc_stamp};
pub use crate::observe::Interrupted;
use crate::observe::{
    Checkpoints, Epoch, Metrics, NanStop, Observer, Position, Run, RunState, Start, Step,
};
use crate::optim::Optimizer;
use crate::recipe::Recipe;
use crate::schedule::LrSchedule;
use crate::step::StepContext;
use anyhow::Context;
use gyre_data::{Loader, LoaderConfig, Sampling, ViewPipeline};
use gyre_kernels::{Device, Tensor};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

/// How to run (not what to learn: that is the recipe).
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Use this run folder instead of `<out_dir>/<name>-<UTC stamp>`.
    pub run_dir: Option<PathBuf>,
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

/// The end-of-run summary (also the last line of `metrics.jsonl`).
pub type Summary = serde_json::Value;

/// The files a run writes into its folder (what `overwrite` removes).
const RUN_FILES: &[&str] = &[
    "recipe.toml",
    "recipe.tmp",
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
fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
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

/// A run, set up and ready: [`Trainer::new`] validates the recipe, checks the run folder, loads
/// the data, builds the method and the optimiser (restoring them when resuming); observers are
/// added with [`Trainer::observe`]; [`Trainer::run`] trains.
pub struct Trainer {
    recipe: Recipe,
    run_dir: PathBuf,
    device: Device,
    data: RunData,
    method: Box<dyn Method>,
    optim: Optimizer,
    schedule: LrSchedule,
    loader: Loader,
    position: Position,
    resumed: bool,
    state: RunState,
    knn_k: usize,
    observers: Vec<Box<dyn Observer>>,
    started: Instant,
}

impl Trainer {
    pub fn new(recipe: &Recipe, opts: &TrainOptions) -> anyhow::Result<Self> {
        let started = Instant::now();
        recipe.validate("recipe")?;
        let run_dir = make_run_dir(recipe, opts)?;
        let device = gyre_kernels::select_device(&recipe.train.device)?;
        let mut data = data_setup::load(recipe)?;
        // The run's recipe records the normalisation it used (evaluation and export read it).
        let mut recipe = recipe.clone();
        recipe.data.mean = Some(data.mean.clone());
        recipe.data.std = Some(data.std.clone());
        let mut method =
            recipe.build_method(data.pretrain.channels, data.pretrain.len(), &device)?;
        let views = recipe
            .method
            .views
            .iter()
            .map(|v| ViewPipeline::new(recipe.augment[v].clone(), &data.mean, &data.std))
            .collect::<Result<Vec<_>, _>>()?;
        let mut loader = Loader::new(
            data.pretrain.clone(),
            views,
            LoaderConfig {
                batch_size: recipe.train.batch_size,
                seed: recipe.seed,
                prefetch: recipe.data.prefetch,
            },
        )?;
        if let Some(gap) = recipe.data.pair_gap {
            let frames = data
                .clip_frames
                .context("data.pair_gap: the data has no clips to pair frames in")?;
            loader = loader
                .with_sampling(Sampling::FramePairs {
                    frames,
                    gap,
                    links: recipe.irc.as_ref().map_or(1, |i| i.partner_links()),
                })
                .with_context(|| format!("data: {}", data.pretrain.name))?;
        }
        if let Some(truth) = &data.scene_truth {
            // Diagnostics only: the method never trains on it.
            method.attach_truth(truth.clone());
        }
        if let Some(draws) = recipe.method.entry().and_then(|e| e.clips) {
            let frames = data.clip_frames.with_context(|| {
                format!(
                    "method.name: {} trains on clips; data.kind {:?} has none (use \"scenes\")",
                    recipe.method.name(),
                    recipe.data.kind
                )
            })?;
            loader = loader
                .with_sampling(Sampling::Clips { frames, draws })
                .with_context(|| format!("data: {}", data.pretrain.name))?;
        }
        let steps_per_epoch = loader.batches_per_epoch() as u64;
        let o = &recipe.optim;
        let schedule = LrSchedule {
            base: recipe.effective_lr(),
            final_lr: o.final_lr,
            warmup_iters: (o.warmup_epochs * steps_per_epoch as f64).round() as u64,
            total_iters: steps_per_epoch * recipe.train.epochs as u64,
            decay: o.decay,
        };
        let mut optim = Optimizer::new(method.params(), o.settings());
        // What the kNN vote uses: a bank smaller than `knn_k` votes with all of it.
        let k = recipe.eval.knn_k;
        let mut knn_k = k;
        let mut observers: Vec<Box<dyn Observer>> = Vec::new();
        if let Some((bank, queries)) = &data.eval {
            let monitor = KnnMonitor {
                bank: bank.clone(),
                queries: queries.clone(),
                mean: data.mean.clone(),
                std: data.std.clone(),
                k,
                t: recipe.eval.knn_t,
                device: device.clone(),
            };
            knn_k = monitor.k_used();
            if knn_k != k {
                data.report.warnings.push(format!(
                    "eval.knn_k: {k} neighbours asked, the kNN bank has {knn_k} images: kNN uses {knn_k}"
                ));
            }
            observers.push(Box::new(monitor));
        }
        observers.push(Box::new(NanStop));
        observers.push(Box::new(Metrics::new(&run_dir)));
        observers.push(Box::new(Checkpoints::new(opts.stop.clone())));
        // Where to start: the beginning, or the checkpoint of an interrupted run.
        let mut position = Position::default();
        let mut state = RunState::default();
        if opts.resume {
            let ck = checkpoint::load(&run_dir, &device)?;
            let wp = checkpoint::weights_path(&run_dir);
            checkpoint::restore_params(method.params(), &ck.tensors, &wp)?;
            optim.load_state(&ck.tensors, ck.state.step);
            method
                .load_state(&checkpoint::method_state(&ck.tensors))
                .with_context(|| format!("{}: restoring the method's state", wp.display()))?;
            let s = ck.state;
            position = Position {
                epoch: s.epoch,
                epoch_step: s.epoch_step,
                step: s.step,
            };
            state.last_knn = s.knn_top1;
            state.best_knn = s.best_knn_top1;
            state.last_checkpoint = Some(wp);
        } else {
            write_atomic(&run_dir.join("recipe.toml"), &recipe.to_toml())?;
        }
        Ok(Self {
            recipe,
            run_dir,
            device,
            data,
            method,
            optim,
            schedule,
            loader,
            position,
            resumed: opts.resume,
            state,
            knn_k,
            observers,
            started,
        })
    }

    /// Adds an observer; it sees every event after the built-in ones.
    pub fn observe(&mut self, observer: Box<dyn Observer>) {
        self.observers.push(observer);
    }

    /// The resolved recipe (with the normalisation the run uses).
    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn method_name(&self) -> &'static str {
        self.method.name()
    }

    /// Steps of the whole run.
    pub fn total_steps(&self) -> u64 {
        self.steps_per_epoch() * self.recipe.train.epochs as u64
    }

    fn steps_per_epoch(&self) -> u64 {
        self.loader.batches_per_epoch() as u64
    }

    /// Calls `f` on every observer in order with the run as they see it; the first error stops.
    fn notify(
        &mut self,
        mut f: impl FnMut(&mut dyn Observer, &mut Run) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let (spe, total) = (self.steps_per_epoch(), self.total_steps());
        let mut run = Run {
            recipe: &self.recipe,
            run_dir: &self.run_dir,
            method: &*self.method,
            optim: &self.optim,
            position: self.position,
            steps_per_epoch: spe,
            total_steps: total,
            state: &mut self.state,
        };
        for o in &mut self.observers {
            f(&mut **o, &mut run)?;
        }
        Ok(())
    }

    /// Trains to the end (or to a stop request) and returns the summary.
    pub fn run(mut self) -> anyhow::Result<Summary> {
        let data = &self.data;
        let (description, dataset) = (data.description.clone(), data.dataset.clone());
        let (normalisation, mean, std) = (
            data.normalisation.clone(),
            data.mean.clone(),
            data.std.clone(),
        );
        let report = data.report.clone();
        let start = Start {
            description: &description,
            dataset: &dataset,
            normalisation: &normalisation,
            mean: &mean,
            std: &std,
            report: &report,
            resumed: self.resumed,
        };
        self.notify(|o, run| o.start(&start, run))?;
        // (start, steps since): the images/s of each logged step, over the steps since the last.
        let mut window = (Instant::now(), 0u64);
        let log_every = self.recipe.train.log_every as u64;
        let steps_per_epoch = self.steps_per_epoch();
        let total_steps = self.total_steps();
        let images = self.recipe.train.batch_size * self.loader.views_per_sample();
        let start_step = self.position.step;
        let (start_epoch, start_epoch_step) = (self.position.epoch, self.position.epoch_step);
        let mut train_secs = 0f64;
        let mut last_loss = f64::NAN;
        for epoch in start_epoch..self.recipe.train.epochs as u64 {
            let t_epoch = Instant::now();
            let first = if epoch == start_epoch {
                start_epoch_step as usize
            } else {
                0
            };
            for (i, batch) in self.loader.epoch(epoch, first).enumerate() {
                let mut batch = batch?;
                let step = self.position.step;
                let lr = self.schedule.at(step);
                let x = views_to_tensors(&mut batch, &self.device)?;
                let ctx = StepContext {
                    step,
                    total_steps,
                    steps_per_epoch,
                };
                // A ViT's stochastic depth draws from (seed, step) and each forward's rank in
                // the step: the same at any thread count and after a resume.
                let drop_key = {
                    use rand::RngCore;
                    let words = [self.recipe.seed, step, gyre_rng::tag(b"droppath"), 0];
                    gyre_rng::stream(words).next_u64()
                };
                self.method.backbone().arm_drop_path(Some(drop_key));
                let out = self.method.step(&x, &batch, ctx);
                self.method.backbone().arm_drop_path(None);
                let out = out?;
                let loss = out
                    .loss
                    .to_dtype(gyre_kernels::DType::F32)?
                    .to_scalar::<f32>()? as f64;
                self.position = Position {
                    epoch,
                    epoch_step: (first + i) as u64,
                    step,
                };
                self.notify(|o, run| o.loss(loss, run))?;
                let grads = out.loss.backward()?;
                if self.recipe.optim.weight_decay_final.is_some() {
                    let wd = self.recipe.optim.weight_decay_at(step, total_steps);
                    self.optim.set_weight_decay(wd);
                }
                self.optim.step(&grads, lr)?;
                drop(grads);
                self.method.after_step(ctx)?;
                last_loss = loss;
                self.position = Position {
                    epoch,
                    epoch_step: (first + i + 1) as u64,
                    step: step + 1,
                };
                window.1 += 1;
                let logged = (step + 1).is_multiple_of(log_every) || step + 1 == total_steps;
                let images_per_second = logged.then(|| {
                    let v = window.1 as f64 * images as f64 / window.0.elapsed().as_secs_f64();
                    window = (Instant::now(), 0);
                    v
                });
                let s = Step {
                    loss,
                    lr,
                    logs: &out.logs,
                    embeddings: &out.embeddings,
                    images,
                    images_per_second,
                };
                self.notify(|o, run| o.step(&s, run))?;
            }
            train_secs += t_epoch.elapsed().as_secs_f64();
            let done = epoch + 1;
            let last = done == self.recipe.train.epochs as u64;
            let every = self.recipe.eval.knn_every as u64;
            let evaluate = last || (every > 0 && done.is_multiple_of(every));
            let stats = match evaluate.then(|| self.method.take_eval_stats()).flatten() {
                Some(serde_json::Value::Object(m)) => m,
                _ => serde_json::Map::new(),
            };
            let mut e = Epoch {
                evaluate,
                last,
                knn: None,
                k: self.knn_k,
                t: self.recipe.eval.knn_t,
                stats,
            };
            self.position = Position {
                epoch: done,
                epoch_step: 0,
                step: self.position.step,
            };
            self.notify(|o, run| o.epoch(&mut e, run))?;
            // The next logged rate starts after the evaluation and the checkpoint.
            window = (Instant::now(), 0);
        }
        let step = self.position.step;
        let baselines = self.state.baselines;
        let summary = json!({
            "recipe": self.recipe.name,
            "method": self.method.name(),
            "encoder": self.recipe.encoder.arch,
            "dataset": dataset,
            "data": description,
            "seed": self.recipe.seed,
            "epochs": self.recipe.train.epochs,
            "steps": step,
            "batch_size": self.recipe.train.batch_size,
            "final_loss": last_loss,
            "knn_top1": self.state.last_knn,
            "raw_knn_top1": baselines.map(|b| b.0),
            "init_knn_top1": baselines.map(|b| b.1),
            "knn_k": self.knn_k,
            "knn_t": self.recipe.eval.knn_t,
            "train_seconds": train_secs,
            "wall_seconds": self.started.elapsed().as_secs_f64(),
            // This process's rate: none when it trained no step (a finished run resumed).
            "img_per_s": (step > start_step && train_secs > 0.0)
                .then(|| (step - start_step) as f64 * images as f64 / train_secs),
            "peak_rss_mb": peak_rss_mb(),
            "threads": rayon::current_num_threads(),
            "checkpoint": self.state.last_checkpoint.as_ref().map(|p| p.display().to_string()),
            "bad_samples": report.bad_samples,
            "grey_to_rgb": report.grey_to_rgb,
            "warnings": report.warnings,
            "normalisation": {"mean": mean, "std": std, "source": normalisation},
            "metrics": self.run_dir.join("metrics.jsonl").display().to_string(),
            "run_dir": self.run_dir.display().to_string(),
        });
        self.notify(|o, run| o.end(&summary, run))?;
        Ok(summary)
    }
}

/// Trains `recipe` with the built-in observers only and returns the summary. The recipe is
/// validated first (a hand-built one included), and the run folder checked, before any data is
/// read.
pub fn train(recipe: &Recipe, opts: &TrainOptions) -> anyhow::Result<Summary> {
    Trainer::new(recipe, opts)?.run()
}
