//! The `gyre` command line: `gyre train | eval | embed | plot | export | bench`, over the
//! gyre-train library (this crate adds the terminal, the charts, the model card, `.npy` files and
//! the benchmarks).

mod bench;
mod bench_ops;
mod card;
mod console;
mod dense;
mod embed;
mod plot;
mod plot_dense;
mod plot_text;
mod text;

use anyhow::Context;
use bench::{data_bench, step_bench, BenchModel, StepCase};
use clap::{Parser, Subcommand};
use gyre_train::recipe::{Recipe, Sources};
use gyre_train::trainer::{TrainOptions, Trainer};
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "gyre",
    version,
    about = "Self-supervised representation learning: train, evaluate, benchmark."
)]
struct Cli {
    /// Compute threads (0: one per core). Also `RAYON_NUM_THREADS`.
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    /// Where models run: `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when present). Default: the
    /// recipe's `train.device` (`cpu` unless set), and `cpu` for `bench`.
    #[arg(long, global = true, value_name = "DEVICE")]
    device: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a recipe (default: SimCLR on the embedded Fashion-MNIST split).
    Train {
        /// Recipe TOML file; without it the embedded default recipe runs.
        #[arg(long)]
        recipe: Option<PathBuf>,
        /// A partial recipe applied on top (`recipes/overlays/irc.toml`), repeatable; later files
        /// win, `--set` wins over all (docs/recipes.md).
        #[arg(long = "overlay", value_name = "FILE")]
        overlay: Vec<PathBuf>,
        /// Override a recipe value: `--set train.epochs=2` (repeatable).
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        set: Vec<String>,
        /// Run folder (default: `<train.out_dir>/<name>-<UTC time>`).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Print the resolved recipe (every default filled in) and stop.
        #[arg(long, alias = "dry-run")]
        print_recipe: bool,
        /// Continue an interrupted run from its folder (its recipe.toml and checkpoint); the
        /// loss of every step then equals the uninterrupted run's (same thread count).
        #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["recipe", "overlay", "set", "run_dir"])]
        resume: Option<PathBuf>,
        /// Start afresh in a `--run-dir` that holds another run (its run files are removed);
        /// without it, such a folder is refused.
        #[arg(long, conflicts_with = "resume")]
        overwrite: bool,
    },
    /// Evaluate a run's checkpoint: kNN (a sweep over k and t) and optionally a linear probe on
    /// frozen backbone features; one JSON line per result.
    Eval {
        /// Run folder (holds recipe.toml and checkpoint.safetensors).
        #[arg(long, required_unless_present_any = ["pretrained", "baseline"])]
        checkpoint: Option<PathBuf>,
        /// Instead: a pretrained backbone (a model folder or a Hub id from the local Hub cache),
        /// evaluated on the data of `--recipe` with the model's own normalisation.
        #[arg(long, conflicts_with = "checkpoint", requires = "recipe")]
        pretrained: Option<String>,
        /// The recipe whose `[data]` the pretrained backbone is evaluated on.
        #[arg(long)]
        recipe: Option<PathBuf>,
        /// kNN neighbours, comma-separated for a sweep.
        #[arg(long, value_delimiter = ',', default_value = "200")]
        k: Vec<usize>,
        /// kNN temperatures, comma-separated for a sweep.
        #[arg(long, value_delimiter = ',', default_value = "0.1")]
        t: Vec<f64>,
        /// Also train a linear probe (the ReSSL protocol: SGD 0.3, cosine, batch 256) on the
        /// kNN bank's images and score it on the queries.
        #[arg(long)]
        linear: bool,
        #[arg(long, default_value_t = 100)]
        linear_epochs: usize,
        #[arg(long, default_value_t = 0.3)]
        linear_lr: f64,
        /// Probe raw features instead of L2-normalised ones.
        #[arg(long)]
        raw: bool,
        /// IRC's language level: zero-shot top-1 by class prompts (trained and init
        /// projections; templates + gloss, templates, gloss), k-means + Hungarian naming and its
        /// label ceiling, and auto-paired text precision against WordNet, then a few test images'
        /// top texts: JSON lines. No image–text pair is used.
        #[arg(long, requires = "checkpoint", conflicts_with_all = ["linear", "pretrained"])]
        language: bool,
        /// With `--language`: also draw the test images beside their top texts into this PNG.
        #[arg(long, requires = "language")]
        grid: Option<PathBuf>,
        #[command(flatten)]
        dense: dense::DenseArgs,
    },
    /// Write a run's backbone features and labels of a split (`OUT.safetensors`, `OUT.*.npy`).
    Embed {
        /// Run folder (holds recipe.toml and checkpoint.safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
        /// `test` (the kNN queries) or `train` (the kNN bank).
        #[arg(long, default_value = "test")]
        split: String,
        /// Output path without extension.
        #[arg(long)]
        out: PathBuf,
    },
    /// Draw a run's charts into RUN_DIR/plots: loss and learning rate, kNN top-1, and a 2-D PCA
    /// of the test embeddings coloured by class; for a scenes or video run (or with --dense), the
    /// matches between two frames of a held-out clip and its propagated masks beside the true.
    Plot {
        /// Run folder.
        run: PathBuf,
        /// Test images in the PCA (the first N).
        #[arg(long, default_value_t = 2000)]
        pca_images: usize,
        /// Also draw the dense plots for a run not trained on clips (held-out embedded-source
        /// clips; a video run draws them by default).
        #[arg(long)]
        dense: bool,
        /// The held-out clip the dense plots show.
        #[arg(long, default_value_t = 0)]
        clip: u64,
    },
    /// Export a run's backbone as a Hugging Face Hub model folder.
    Export {
        /// Run folder (holds recipe.toml and checkpoint.safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output folder (model.safetensors, config.json, README.md).
        #[arg(long)]
        out: PathBuf,
        /// Also train the linear probe (this many epochs) and put its result in the model card.
        #[arg(long)]
        linear_epochs: Option<usize>,
        /// The model card's licence (a Hub licence id: `mit`, `apache-2.0`, `cc-by-4.0`, …);
        /// without it the card states none.
        #[arg(long)]
        license: Option<String>,
        /// Replace the model files in a non-empty `--out` folder (refused without it).
        #[arg(long)]
        overwrite: bool,
    },
    /// The text side of `irc.level = "language"`: `gyre text embed --recipe R` embeds the
    /// recipe's corpus into its cache and prints the throughput (texts/s, tokens/s) as JSON.
    Text {
        #[command(subcommand)]
        cmd: TextCmd,
    },
    /// Benchmark the training step and the data pipeline; prints JSON lines.
    Bench {
        /// `resnet-mini`, `resnet18`, `all` (both reference shapes) or `none`; default `all`,
        /// or `none` with `--recipe`.
        #[arg(long)]
        model: Option<String>,
        /// Also time this recipe's own training step at its shapes (method, batch, views, frames
        /// of a clip, optimiser) on random inputs; repeatable. One per process gives its own
        /// peak memory.
        #[arg(long)]
        recipe: Vec<PathBuf>,
        /// Override a value of every `--recipe`: `--set irc.hops=3` (repeatable).
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE", requires = "recipe")]
        set: Vec<String>,
        /// Images per view (default: 256 for resnet-mini, 64 for resnet18).
        #[arg(long)]
        batch: Option<usize>,
        #[arg(long, default_value_t = 10)]
        steps: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Also (or only, with `--model none`) the data pipeline.
        #[arg(long)]
        data: bool,
        /// The data benchmark's images: `fashion-mnist-embedded` (default), or a `cifar10-jpeg`
        /// folder (decoded once, then the SimCLR CIFAR view).
        #[arg(long)]
        data_root: Option<std::path::PathBuf>,
        /// With `--data-root`: decode the JPEGs for every batch instead of once into memory.
        #[arg(long, requires = "data_root")]
        data_disk: bool,
        /// Also (or only, with `--model none`) the per-op table at the step shapes of `--ops-model`.
        #[arg(long)]
        ops: bool,
        /// The model whose shapes `--ops` times (B = 64 per view for resnet18, 256 for
        /// resnet-mini; `--batch` overrides B).
        #[arg(long, value_enum, default_value = "resnet18")]
        ops_model: BenchModel,
    },
}

#[derive(Subcommand)]
enum TextCmd {
    /// Embed a recipe's corpus with its text model into the cache (`text.cache`); prints one
    /// JSON line: the cache folder, whether it was already there, texts/s and tokens/s.
    Embed {
        #[arg(long)]
        recipe: PathBuf,
        #[arg(long = "overlay", value_name = "FILE")]
        overlay: Vec<PathBuf>,
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        set: Vec<String>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

/// The device a command runs its model on: `--device` when given, else `default` (the recipe's
/// `train.device`, or `cpu` for `bench`).
fn open_device(cli_device: &Option<String>, default: &str) -> anyhow::Result<gyre_kernels::Device> {
    let spec = cli_device.as_deref().unwrap_or(default);
    gyre_kernels::select_device(spec).with_context(|| format!("--device {spec}"))
}

fn device_for(cli_device: &Option<String>, r: &Recipe) -> anyhow::Result<gyre_kernels::Device> {
    open_device(cli_device, &r.train.device)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.threads > 0 {
        std::env::set_var("RAYON_NUM_THREADS", cli.threads.to_string());
    }
    match cli.cmd {
        Cmd::Train {
            recipe,
            overlay,
            set,
            run_dir,
            quiet,
            print_recipe,
            resume,
            overwrite,
        } => {
            let sources = Sources {
                overlays: &overlay,
                overrides: &set,
            };
            let mut r = match (&resume, &recipe) {
                (Some(dir), _) => Recipe::load(&dir.join("recipe.toml"), &[])?,
                (None, Some(p)) => Recipe::load_with(p, &sources)?,
                (None, None) => Recipe::default_with(&sources)?,
            };
            // Checked here, opened once by the trainer (and recorded in the run's recipe.toml).
            if let Some(d) = &cli.device {
                d.parse::<gyre_kernels::DeviceSpec>()
                    .with_context(|| format!("--device {d}"))?;
                r.train.device = d.clone();
            }
            let run_dir = resume.clone().or(run_dir);
            if print_recipe {
                print!("{}", r.to_toml());
                return Ok(());
            }
            if r.train.threads > 0 && cli.threads == 0 {
                std::env::set_var("RAYON_NUM_THREADS", r.train.threads.to_string());
            }
            let opts = TrainOptions {
                run_dir,
                resume: resume.is_some(),
                overwrite,
                stop: Some(stop_on_signals()?),
            };
            if let Some(t) = text::language_text(&r) {
                // The corpus is embedded once (minutes for WordNet); later runs read the cache.
                let warm = text::warm_cache(&r, t, quiet)?;
                if !quiet {
                    eprintln!("{warm}");
                }
            }
            let mut trainer = Trainer::new(&r, &opts)?;
            trainer.observe(Box::new(console::Console::new(quiet)));
            let summary = trainer.run()?;
            println!("{summary}");
        }
        Cmd::Eval {
            checkpoint,
            pretrained,
            recipe,
            k,
            t,
            linear,
            linear_epochs,
            linear_lr,
            raw,
            language,
            grid,
            dense,
        } => {
            if language {
                let run = checkpoint.as_deref().expect("clap: requires checkpoint");
                let r = Recipe::load(&run.join("recipe.toml"), &[])?;
                let device = device_for(&cli.device, &r)?;
                let opts = gyre_train::language_eval::LanguageEvalOptions::default();
                let report = gyre_train::language_eval::evaluate(run, &opts, &device)?;
                if let Some(g) = &grid {
                    let title = format!(
                        "{}: test images and their top corpus texts (cosine in the learned space)",
                        r.name
                    );
                    plot_text::text_grid(g, &title, &report)?;
                }
                for row in &report.rows {
                    println!("{row}");
                }
                for e in &report.examples {
                    println!(
                        "{}",
                        serde_json::json!({"kind": "top_texts", "index": e.index, "class": e.class,
                            "texts": e.texts.iter().map(|(t, s)| serde_json::json!({"text": t, "cos": s})).collect::<Vec<_>>()})
                    );
                }
                return Ok(());
            }
            if dense.dense {
                return dense::run(checkpoint.as_deref(), &dense, &cli.device);
            }
            // The checks a recipe's [eval] gets, before anything is loaded.
            for &kk in &k {
                gyre_train::knn::check_k(kk).map_err(|p| anyhow::anyhow!("--k {kk}: {p}"))?;
            }
            for &tt in &t {
                gyre_train::knn::check_t(tt).map_err(|p| anyhow::anyhow!("--t {tt}: {p}"))?;
            }
            let probe = gyre_train::linear::ProbeConfig {
                epochs: linear_epochs,
                lr: linear_lr,
                normalize: !raw,
                ..Default::default()
            };
            probe
                .validate()
                .map_err(|(key, p)| anyhow::anyhow!("--linear-{}: {p}", key.replace('_', "-")))?;
            let (recipe_path, source) = match (&checkpoint, &recipe) {
                (Some(c), _) => (c.join("recipe.toml"), c.display().to_string()),
                (None, Some(r)) => (r.clone(), pretrained.clone().unwrap_or_default()),
                (None, None) => {
                    anyhow::bail!("eval needs --checkpoint, or --pretrained with --recipe")
                }
            };
            let mut r = Recipe::load(&recipe_path, &[])?;
            let device = device_for(&cli.device, &r)?;
            let net = match (&checkpoint, &pretrained) {
                (Some(c), _) => gyre_train::checkpoint::load_backbone(c, &r, &device)?,
                (None, Some(id)) => {
                    let p = gyre_encoders::from_pretrained(id, &device)?;
                    // The model's own input normalisation.
                    r.data.mean = Some(p.config.mean.clone());
                    r.data.std = Some(p.config.std.clone());
                    gyre_encoders::Backbone::from(p.backbone)
                }
                (None, None) => unreachable!("checked above"),
            };
            let data = gyre_train::data_setup::load(&r)?;
            let wp = source;
            let Some((bank, queries)) = &data.eval else {
                anyhow::bail!(
                    "{}: the run's data has no labelled test split to evaluate on",
                    recipe_path.display()
                );
            };
            let monitor = gyre_train::eval::KnnMonitor {
                bank: bank.clone(),
                queries: queries.clone(),
                mean: data.mean.clone(),
                std: data.std.clone(),
                k: r.eval.knn_k,
                t: r.eval.knn_t,
                device: device.clone(),
            };
            let dim = net.feature_dim();
            // One pass of features for the sweep and the probe.
            let (fb, fq) = monitor.features(&net)?;
            let for_probe = linear.then(|| (fb.clone(), fq.clone()));
            for p in monitor.sweep_features(fb, fq, dim, &k, &t)? {
                // What the vote used: a bank smaller than k votes with all of it.
                let mut line = serde_json::json!({"model": wp, "knn_top1": p.top1, "k": p.k, "t": p.t, "data": data.description});
                if p.k != p.k_asked {
                    line["k_asked"] = serde_json::json!(p.k_asked);
                }
                println!("{line}");
            }
            let labels =
                |s: &gyre_data::ImageSet| s.labels().map(<[u32]>::to_vec).unwrap_or_default();
            let classes = bank.classes.len().max(1);
            if let Some((fb, fq)) = for_probe {
                let cfg = gyre_train::linear::ProbeConfig {
                    seed: r.seed,
                    ..probe
                };
                let res = gyre_train::linear::linear_probe(
                    fb,
                    &labels(bank),
                    fq,
                    &labels(queries),
                    dim,
                    classes,
                    cfg,
                )?;
                println!(
                    "{}",
                    serde_json::json!({"model": wp, "linear": res, "features": if raw { "raw" } else { "l2-normalised" }, "lr": linear_lr, "data": data.description})
                );
            }
        }
        Cmd::Embed {
            checkpoint,
            split,
            out,
        } => {
            let r = Recipe::load(&checkpoint.join("recipe.toml"), &[])?;
            let device = device_for(&cli.device, &r)?;
            let data = gyre_train::data_setup::load(&r)?;
            let net = gyre_train::checkpoint::load_backbone(&checkpoint, &r, &device)?;
            let set = match (split.as_str(), &data.eval) {
                ("test", Some((_, q))) => q.clone(),
                ("train", Some((b, _))) => b.clone(),
                ("train", None) => data.pretrain.clone(),
                (s, _) => {
                    anyhow::bail!("--split {s}: expected test or train (test needs labelled data)")
                }
            };
            let f = gyre_train::eval::raw_backbone_features(
                &net, &set, &data.mean, &data.std, &device,
            )?;
            let labels = set
                .labels()
                .map(<[u32]>::to_vec)
                .unwrap_or_else(|| vec![u32::MAX; set.len()]);
            embed::write_embeddings(&out, &f, &labels, net.feature_dim())?;
            println!(
                "{}",
                serde_json::json!({"embedded": set.name, "images": set.len(), "dim": net.feature_dim(), "out": out.display().to_string()})
            );
        }
        Cmd::Plot {
            run,
            pca_images,
            dense,
            clip,
        } => {
            let r = Recipe::load(&run.join("recipe.toml"), &[])?;
            let mut files = plot::plot_metrics(&run, &r.name)?;
            use gyre_train::recipe::DataKind;
            let scenes = r.data.kind == DataKind::Scenes;
            // Clip data (scenes, video) is unlabelled: dense plots instead of a PCA by class.
            let clip_data = scenes || r.data.kind == DataKind::Video;
            let has_weights = gyre_train::checkpoint::weights_path(&run).is_file();
            if (clip_data || dense) && has_weights {
                let device = device_for(&cli.device, &r)?;
                let net = gyre_train::checkpoint::load_backbone(&run, &r, &device)?;
                let (mean, std) = gyre_train::data_setup::run_normalisation(&r)?;
                let sc = r.data.scenes.clone().unwrap_or_default();
                let (sources, root) = if scenes {
                    (sc.sources, r.data.root.as_deref())
                } else {
                    (gyre_train::recipe::ScenesSources::Embedded, None)
                };
                let (held_out, _) = gyre_train::data_setup::scene_sources(sources, root, true)?;
                let source = gyre_train::dense_eval::protocol::FeatureSource::Encoder {
                    backbone: &net,
                    mean,
                    std,
                    device: device.clone(),
                };
                files.extend(plot_dense::dense_plots(
                    &run.join("plots"),
                    &r.name,
                    &source,
                    &held_out,
                    &sc.clip,
                    clip,
                )?);
            }
            let data = if clip_data {
                None
            } else {
                Some(gyre_train::data_setup::load(&r)?)
            };
            if let (Some(Some((_, test))), true) = (data.as_ref().map(|d| &d.eval), has_weights) {
                let data = data.as_ref().expect("matched above");
                let device = device_for(&cli.device, &r)?;
                let net = gyre_train::checkpoint::load_backbone(&run, &r, &device)?;
                let test = test.head(pca_images);
                let f = gyre_train::eval::raw_backbone_features(
                    &net, &test, &data.mean, &data.std, &device,
                )?;
                let pts = plot::pca2(&f, net.feature_dim());
                let p = run.join("plots").join("pca.png");
                plot::pca_chart(
                    &p,
                    &format!("{}: PCA of {} test embeddings", r.name, test.len()),
                    &pts,
                    test.labels().unwrap_or(&[]),
                    &test.classes,
                )?;
                files.push(p);
            }
            let files: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
            println!("{}", serde_json::json!({"plots": files}));
        }
        Cmd::Export {
            checkpoint,
            out,
            linear_epochs,
            license,
            overwrite,
        } => {
            let r = Recipe::load(&checkpoint.join("recipe.toml"), &[])?;
            let device = device_for(&cli.device, &r)?;
            let opts = gyre_train::export::ExportOptions {
                linear_epochs,
                overwrite,
            };
            let exported = gyre_train::export::prepare(&checkpoint, &out, &opts, &device)?;
            let card = card::model_card(
                &exported.recipe,
                &exported.config,
                exported.knn,
                exported.linear,
                license.as_deref(),
            );
            gyre_train::export::write(&exported, &out, &card)?;
            println!(
                "{}",
                serde_json::json!({"exported": out.display().to_string()})
            );
        }
        Cmd::Text {
            cmd:
                TextCmd::Embed {
                    recipe,
                    overlay,
                    set,
                    quiet,
                },
        } => {
            let sources = Sources {
                overlays: &overlay,
                overrides: &set,
            };
            let r = Recipe::load_with(&recipe, &sources)?;
            let t = text::language_text(&r).with_context(|| {
                format!(
                    "{}: no [text] section with irc.level = \"language\"",
                    recipe.display()
                )
            })?;
            println!("{}", text::warm_cache(&r, t, quiet)?);
        }
        Cmd::Bench {
            model,
            recipe,
            set,
            batch,
            steps,
            warmup,
            data,
            data_root,
            data_disk,
            ops,
            ops_model,
        } => {
            let device = open_device(&cli.device, "cpu")?;
            let model =
                model.unwrap_or_else(|| if recipe.is_empty() { "all" } else { "none" }.to_string());
            let models = match model.as_str() {
                "all" => vec![BenchModel::ResnetMini, BenchModel::Resnet18],
                "none" => vec![],
                name => vec![<BenchModel as clap::ValueEnum>::from_str(name, false).map_err(
                    |_| {
                        anyhow::anyhow!(
                        "--model: unknown model '{name}': expected resnet-mini, resnet18, all or none"
                    )
                    },
                )?],
            };
            let cases: Vec<StepCase> = models
                .into_iter()
                .map(|m| StepCase {
                    model: m,
                    batch: batch.unwrap_or(m.default_batch()),
                    steps,
                    warmup,
                })
                .collect();
            for c in &cases {
                println!(
                    "{}",
                    step_bench(c, &device)
                        .with_context(|| format!("benchmarking {}", c.model.name()))?
                );
            }
            for path in &recipe {
                let r = Recipe::load(path, &set)?;
                println!(
                    "{}",
                    bench::recipe_step_bench(&r, steps, warmup, &device)
                        .with_context(|| format!("benchmarking {}", path.display()))?
                );
            }
            if ops {
                let b = batch.unwrap_or(ops_model.default_batch());
                for row in bench_ops::ops_bench(ops_model, 2 * b, steps)? {
                    println!("{row}");
                }
            }
            if data || (cases.is_empty() && !ops && recipe.is_empty()) {
                match &data_root {
                    Some(root) => {
                        println!("{}", bench::cifar_data_bench(root, 256, 40, data_disk)?)
                    }
                    None => println!("{}", data_bench(256, 40)?),
                }
            }
        }
    }
    Ok(())
}

/// SIGINT and SIGTERM ask the run to stop: the trainer finishes its step, writes a checkpoint and
/// returns `Interrupted`; a second signal exits at once (status 128 + signal, the shell's
/// convention). Returns the flag the trainer polls (the signal's number, 0 while none).
fn stop_on_signals() -> anyhow::Result<Arc<AtomicUsize>> {
    let which = Arc::new(AtomicUsize::new(0));
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM] {
            // Registered first, so it sees the flag as it was before this signal set it.
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, asked.clone())?;
            signal_hook::flag::register(sig, asked.clone())?;
            signal_hook::flag::register_usize(sig, which.clone(), sig as usize)?;
        }
    }
    Ok(which)
}

/// Every candle op allocates its output, and the large ones (tens of MB of activations) come from
/// `mmap`: glibc unmaps them on free and the next step faults every page back in, which cost a
/// third of the step in the kernel. Serving all allocations from the heap and never trimming it
/// keeps those pages (measured in docs/results.md: resnet-mini step 1.35× faster).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

fn main() {
    keep_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go out as clap writes them; a usage error is one line (clap's first),
        // exit status 2.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.render().to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("error");
            eprintln!("{first} (see gyre --help)");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(cli) {
        if let Some(i) = e.downcast_ref::<gyre_train::trainer::Interrupted>() {
            eprintln!("gyre: {i}");
            std::process::exit(128 + i.signal as i32);
        }
        // One line: the whole context chain, no backtrace.
        let msg = format!("{e:#}").replace('\n', " ");
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
