//! IRC's language level (`[irc] level = "language"`, with a `[text]` section): image
//! representations helped by a language model **without any image–text pair** (Pang et al.,
//! TPAMI 2025, application 3; `shared/spec/methods.md` §3.3 item 3).
//!
//! The walk goes from an image through a corpus of unpaired text and back to another view of the
//! same image. Per step, with `n` = L2 normalisation:
//! - `G_0 = n(image_head(f(view 1)))` (online, with gradient);
//! - `G_1 = n(text_head(E[S]))`: `M` texts `S` drawn per step (`irc.text_sample`; keyed on the
//!   seed and the step) from the corpus's frozen embeddings `E` (MiniLM by default, embedded once
//!   and cached), through a trainable linear head into the shared space;
//! - `G_2 = n(image_head(f(view 2)))` — the base's view 2 (online, or its momentum teacher's).
//!
//! Task S: the two views of one image, so `π` = identity. Task C: image → text → image, the loss
//! `λ_c · circulation(G_0, G_1, G_2; τ_c)`. Auto-pairs (`auto_pair = true`): each image's top-1
//! text under the first hop, kept for the top ρ of the batch by similarity, ramped, as the
//! positive of an image–text InfoNCE (`pair_temperature`, default 0.1) whose negatives are the
//! other sampled texts. No label, caption or class name is used in training.

use super::IrcConfig;
use crate::step::{StepContext, StepOutput};
use gyre_encoders::{Backbone, ParamStore, ProjectionHead, ProjectionHeadConfig};
use gyre_kernels::candle::{bail, DType};
use gyre_kernels::{Device, Result, Tensor};
use gyre_losses::{auto_pair, circulation_loss, l2_normalize, AutoPairOptions, CirculationOptions};
use gyre_text::bert_tail::BertTail;
use gyre_text::cache::Batching;
use gyre_text::{pool, Corpus, TextModel, TextSpec};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// The `[text]` section: the text model and the unpaired corpus of IRC's language level.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    /// A Hub id (read from `hub_cache`, offline) or a model folder.
    #[serde(default = "d_model")]
    pub model: String,
    #[serde(default = "d_hub_cache")]
    pub hub_cache: PathBuf,
    /// `"wordnet"` (WordNet 3.0's glosses, from `wordnet`) or a text file or folder of `*.txt`
    /// files, one text per line.
    #[serde(default = "d_corpus")]
    pub corpus: String,
    #[serde(default = "d_wordnet")]
    pub wordnet: PathBuf,
    /// Keep this many texts, spread evenly over the corpus (small runs); default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus_size: Option<usize>,
    /// Where corpus embeddings are cached.
    #[serde(default = "d_cache")]
    pub cache: PathBuf,
    /// Tokens per text; default the model's (256 for MiniLM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_seq_length: Option<usize>,
    /// Padded tokens per embedding batch (attention memory grows with T² per text).
    #[serde(default = "d_batch_tokens")]
    pub batch_tokens: usize,
    /// Train the text model's last k layers (0: frozen, the corpus embedded once). With k > 0
    /// the step's texts run through the frozen first layers and the trainable last ones live, so
    /// keep `irc.text_sample` small (e.g. 256).
    #[serde(default)]
    pub train_layers: usize,
}
fn d_model() -> String {
    gyre_data::text_assets::MINILM_ID.into()
}
fn d_hub_cache() -> PathBuf {
    gyre_data::text_assets::default_hub_cache()
}
fn d_corpus() -> String {
    "wordnet".into()
}
fn d_wordnet() -> PathBuf {
    gyre_data::wordnet::default_dir()
}
fn d_cache() -> PathBuf {
    PathBuf::from("data/text-cache")
}
fn d_batch_tokens() -> usize {
    16_384
}

impl Default for TextConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

impl TextConfig {
    /// Checks the values that need no file; `Err((field, problem))`.
    pub fn check(&self) -> std::result::Result<(), (String, String)> {
        if self.corpus_size == Some(0) {
            return Err(("text.corpus_size".into(), "must be ≥ 1".into()));
        }
        if !(64..=1 << 24).contains(&self.batch_tokens) {
            return Err((
                "text.batch_tokens".into(),
                format!("must be in 64..=16777216, got {}", self.batch_tokens),
            ));
        }
        if let Some(m) = self.max_seq_length.filter(|m| !(2..=512).contains(m)) {
            return Err((
                "text.max_seq_length".into(),
                format!("must be in 2..=512, got {m}"),
            ));
        }
        Ok(())
    }

    fn spec(&self) -> TextSpec {
        TextSpec {
            model: self.model.clone(),
            hub_cache: Some(self.hub_cache.clone()),
            max_seq_length: self.max_seq_length,
        }
    }
}

/// The loaded text side: the model (for prompts at evaluation), the corpus and its frozen
/// embeddings, and with `train_layers` the model split into a frozen trunk and a trainable tail.
pub struct TextSide {
    pub model: TextModel,
    pub corpus: Corpus,
    /// `[N, dim]` on the CPU, unit rows, by the whole frozen model.
    pub embeddings: Tensor,
    pub meta: gyre_text::CacheMeta,
    pub outcome: gyre_text::CacheOutcome,
    pub tail: Option<Tail>,
}

/// The text model's first layers (frozen) and its last `train_layers` (trainable).
pub struct Tail {
    pub trunk: TextModel,
    pub layers: BertTail,
}

impl TextSide {
    /// Unit embeddings `[n, dim]` of `texts` on `device`: through the trunk and the trainable
    /// tail (with gradient) when there is one, else the frozen model (detached).
    pub fn embed_live(&self, texts: &[&str], device: &Device) -> anyhow::Result<Tensor> {
        Ok(match &self.tail {
            Some(t) => {
                let h = t.trunk.hidden(texts)?;
                let mask = h.mask.to_device(device)?;
                pool(
                    &t.layers.forward(&h.states.to_device(device)?, &mask)?,
                    &mask,
                )?
            }
            None => self.model.embed(texts)?.embeddings.to_device(device)?,
        })
    }
}

impl TextSide {
    /// Loads the model, reads the corpus and embeds it (or reads its cache); `progress(done,
    /// total)` while embedding.
    pub fn load(
        cfg: &TextConfig,
        progress: &mut dyn FnMut(usize, usize),
    ) -> anyhow::Result<TextSide> {
        let model = TextModel::load(&cfg.spec(), &Device::Cpu)?;
        let corpus = match cfg.corpus.as_str() {
            "wordnet" => Corpus::wordnet(&cfg.wordnet)?,
            p => Corpus::from_path(std::path::Path::new(p))?,
        };
        let corpus = match cfg.corpus_size {
            Some(n) => corpus.spread(n)?,
            None => corpus,
        };
        let batching = Batching {
            batch_tokens: cfg.batch_tokens,
            ..Batching::default()
        };
        let e = gyre_text::corpus_embeddings(
            &cfg.model, &model, &corpus, &cfg.cache, batching, progress,
        )?;
        let tail = match cfg.train_layers {
            0 => None,
            k => {
                let (trunk, layers) = TextModel::load_split(&cfg.spec(), &Device::Cpu, k)?;
                Some(Tail {
                    trunk,
                    layers: layers.expect("k > 0"),
                })
            }
        };
        Ok(TextSide {
            model,
            corpus,
            embeddings: e.embeddings,
            meta: e.meta,
            outcome: e.outcome,
            tail,
        })
    }
}

/// Running sums since the last `take_stats`.
#[derive(Debug, Default, Clone)]
struct Tally {
    steps: u64,
    cycle_acc: f64,
    return_prob: f64,
    pairs: u64,
    distinct: f64,
}

/// The two projections into the shared image–text space: `image_projector` (backbone features
/// → hidden → d, BatchNorm, as the cycle heads) and `text_projector` (one linear map from the
/// text model's space, which keeps MiniLM's geometry up to an affine change). Both end in a
/// BatchNorm without affine parameters (batch statistics in training: the batch's images, the
/// step's `M` texts; running statistics in evaluation). Without it the walk has a collapsed
/// optimum: a text head whose bias outgrows its weight sends every text to one point, every
/// image then returns to the same images whatever it started from, and the cycle loss sits at
/// exactly ln B, below a random walk's. The FMNIST-20k run that showed it (results §12.3): after
/// 156 steps a bias of norm 4.29 against `‖W e‖` of 0.44 on average, 4,096 projected texts at a
/// mean pairwise cosine of 0.994 (0.060 in MiniLM's space).
pub struct LanguageHeads {
    pub image: ProjectionHead,
    pub text: ProjectionHead,
}

impl LanguageHeads {
    /// The heads at their seeded init.
    pub fn new(
        cfg: &IrcConfig,
        feature_dim: usize,
        text_dim: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let image_cfg = ProjectionHeadConfig {
            output_bn: true,
            ..ProjectionHeadConfig::new(feature_dim, cfg.head_hidden, cfg.head_output)
        };
        let text_cfg = ProjectionHeadConfig {
            input: text_dim,
            hidden: cfg.head_output,
            output: cfg.head_output,
            layers: 1,
            hidden_bn: false,
            output_bn: true,
            activation: gyre_encoders::Activation::Relu,
        };
        Ok(Self {
            image: ProjectionHead::new(image_cfg, seed, "image_projector", device)?,
            text: ProjectionHead::new(text_cfg, seed, "text_projector", device)?,
        })
    }

    /// Both heads' tensors under `image_projector.` and `text_projector.`.
    pub fn params(&self) -> ParamStore {
        let mut s = ParamStore::new();
        s.extend_prefixed("image_projector", self.image.params());
        s.extend_prefixed("text_projector", self.text.params());
        s
    }

    /// `n(image_head(features))`; `train`: BatchNorm on batch statistics.
    pub fn images(&self, features: &Tensor, train: bool) -> Result<Tensor> {
        l2_normalize(&self.image.forward_t(features, train)?)
    }

    /// `n(text_head(text embeddings))`; `train`: BatchNorm on these texts' statistics.
    pub fn texts(&self, embeddings: &Tensor, train: bool) -> Result<Tensor> {
        l2_normalize(&self.text.forward_t(embeddings, train)?)
    }
}

/// The plug-in at language level: its two heads, the text side, diagnostics.
pub struct LanguagePlugin {
    cfg: IrcConfig,
    heads: LanguageHeads,
    text: Arc<TextSide>,
    seed: u64,
    tally: Tally,
}

impl LanguagePlugin {
    /// Registers `image_projector.*` and `text_projector.*` in `params`.
    pub fn new(
        cfg: &IrcConfig,
        backbone: &Backbone,
        text: Arc<TextSide>,
        seed: u64,
        device: &Device,
        params: &mut ParamStore,
    ) -> anyhow::Result<Self> {
        let heads = LanguageHeads::new(
            cfg,
            backbone.feature_dim(),
            text.embeddings.dim(1)?,
            seed,
            device,
        )?;
        params.extend_prefixed("image_projector", heads.image.params());
        params.extend_prefixed("text_projector", heads.text.params());
        if let Some(t) = &text.tail {
            params.extend_prefixed("text_tail", t.layers.params());
        }
        Ok(Self {
            cfg: cfg.clone(),
            heads,
            text,
            seed,
            tally: Tally::default(),
        })
    }

    /// The `M` corpus rows of step `step`, sorted: drawn from a stream keyed on (seed, step)
    /// only, so a resumed run and any thread count draw the same texts.
    pub fn sample(&self, step: u64) -> Vec<u32> {
        let n = self.text.corpus.len();
        let m = self.cfg.texts_per_step().min(n);
        let mut rng = gyre_rng::stream([self.seed, step, gyre_rng::tag(b"textsamp"), 0]);
        let mut idx: Vec<u32> = rand::seq::index::sample(&mut rng, n, m)
            .into_iter()
            .map(|i| i as u32)
            .collect();
        idx.sort_unstable();
        idx
    }

    /// `n(text_head(E[rows]))` on `device`, BatchNorm on these rows (with a trainable tail, the
    /// rows' texts embedded live).
    pub fn text_group(&self, rows: &[u32], device: &Device) -> Result<Tensor> {
        if self.text.tail.is_some() {
            let texts: Vec<&str> = rows
                .iter()
                .map(|&r| self.text.corpus.texts()[r as usize].as_str())
                .collect();
            let e = self
                .text
                .embed_live(&texts, device)
                .map_err(gyre_kernels::Error::wrap)?;
            return self.heads.texts(&e, true);
        }
        let idx = Tensor::from_slice(rows, rows.len(), &Device::Cpu)?;
        let e = self
            .text
            .embeddings
            .index_select(&idx, 0)?
            .to_device(device)?;
        self.heads.texts(&e, true)
    }

    /// `n(image_head(features))`, BatchNorm on the batch.
    pub fn image_group(&self, features: &Tensor) -> Result<Tensor> {
        self.heads.images(features, true)
    }

    pub fn text(&self) -> &TextSide {
        &self.text
    }

    /// The cycle loss, auto-paired image–text positives and diagnostics of one step, added to
    /// `out` (the method's step).
    pub fn add_to(&mut self, out: &mut StepOutput, ctx: StepContext) -> Result<()> {
        let Some(pair) = out.pair.take() else {
            bail!("irc: this method exposes no pair of views");
        };
        let base = out.loss.clone();
        out.logs
            .push(("base_loss", base.to_scalar::<f32>()? as f64));
        let b = pair.view1.dim(0)?;
        let features = Tensor::cat(&[&pair.view1, &pair.view2], 0)?;
        let c = self.image_group(&features)?;
        let (g0, g2) = (c.narrow(0, 0, b)?, c.narrow(0, b, b)?);
        let rows = self.sample(ctx.step);
        let t = self.text_group(&rows, features.device())?;
        let opts = CirculationOptions {
            tau: self.cfg.temperature,
            ..CirculationOptions::default()
        };
        let circ = circulation_loss(&[&g0, &t, &g2], None, opts)?;
        out.logs.extend([
            ("irc_cycle_loss", circ.loss.to_scalar::<f32>()? as f64),
            ("irc_cycle_acc", circ.cycle_accuracy),
            ("irc_return_prob", circ.return_probability),
        ]);
        let mut loss = (base + (circ.loss * self.cfg.weight)?)?;
        // Found and logged always; in the loss only with `auto_pair = true`.
        let pairs = auto_pair(
            &g0,
            &t.detach(),
            ctx.step,
            ctx.total_steps,
            AutoPairOptions {
                keep_fraction: self.cfg.keep_fraction,
                ramp: self.cfg.ramp,
                top_n: 1,
                balance: self.cfg.balance.then(gyre_losses::Balance::default),
            },
        )?;
        let matched: Vec<u32> = pairs.top1().collect();
        let distinct =
            matched.iter().collect::<HashSet<_>>().len() as f64 / matched.len().max(1) as f64;
        out.logs.push(("lang_distinct_top1", distinct));
        let weight = pairs.weight * self.cfg.auto_pair_weight;
        if self.cfg.auto_pair && weight > 0.0 && !pairs.query.is_empty() {
            let ap = self.pair_loss(&g0, &t, &pairs.query, &matched)?;
            out.logs.extend([
                ("irc_pair_weight", pairs.weight),
                ("irc_pair_loss", ap.to_scalar::<f32>()? as f64),
            ]);
            loss = (loss + (ap * weight)?)?;
        }
        self.tally.steps += 1;
        self.tally.cycle_acc += circ.cycle_accuracy;
        self.tally.return_prob += circ.return_probability;
        self.tally.pairs += pairs.query.len() as u64;
        self.tally.distinct += distinct;
        out.loss = loss;
        Ok(())
    }

    /// `mean_i −log softmax(G_0[i] · Tᵀ / τ_p)[j(i)]` over the kept images `i` and their texts
    /// `j(i)` (rows of the step's sample `T`).
    pub fn pair_loss(
        &self,
        g0: &Tensor,
        t: &Tensor,
        query: &[u32],
        matched: &[u32],
    ) -> Result<Tensor> {
        let dev = g0.device();
        let q = g0.index_select(&Tensor::from_slice(query, query.len(), dev)?, 0)?;
        let logits = (q.matmul(&t.t()?)? / self.cfg.pair_tau())?;
        let target = Tensor::from_slice(matched, matched.len(), dev)?;
        gyre_kernels::nn::loss::cross_entropy(&logits, &target)
    }

    /// The corpus's identity in the checkpoint (`irc.language.corpus_key`, its sha256 as bytes):
    /// a resumed run must walk through the same corpus.
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let key = self.text.corpus.key().as_bytes().to_vec();
        let n = key.len();
        Ok(vec![(
            "irc.language.corpus_key".into(),
            Tensor::from_vec(key, n, &Device::Cpu)?,
        )])
    }

    pub fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        let Some(k) = t.get("irc.language.corpus_key") else {
            bail!("the checkpoint has no irc.language.corpus_key: not a language-level IRC run");
        };
        let got = String::from_utf8(k.to_dtype(DType::U8)?.to_vec1::<u8>()?).unwrap_or_default();
        if got != self.text.corpus.key() {
            bail!(
                "the checkpoint walked through another corpus (sha256 {got}), this recipe's is {}",
                self.text.corpus.key()
            );
        }
        Ok(())
    }

    pub fn take_stats(&mut self) -> serde_json::Value {
        let t = std::mem::take(&mut self.tally);
        let mean = |x: f64| (t.steps > 0).then(|| x / t.steps as f64);
        serde_json::json!({
            "irc_steps": t.steps,
            "irc_cycle_acc": mean(t.cycle_acc),
            "irc_return_prob": mean(t.return_prob),
            "irc_pairs": t.pairs,
            "lang_distinct_top1": mean(t.distinct),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::method::testing::{batch, ctx, random_views, Fixture};
    use crate::method::Method;
    use gyre_kernels::D;

    fn data(p: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../data")
            .join(p)
    }

    /// A text side over `n` WordNet glosses (spread over the corpus), cached in a temp folder.
    pub(crate) fn small_text_config(n: usize, tag: &str) -> TextConfig {
        TextConfig {
            hub_cache: data("hf/hub"),
            wordnet: data("wordnet"),
            corpus_size: Some(n),
            cache: std::env::temp_dir().join(format!("gyre-lang-{tag}-{}", std::process::id())),
            ..TextConfig::default()
        }
    }

    fn text_side(n: usize, tag: &str) -> Arc<TextSide> {
        let side = TextSide::load(&small_text_config(n, tag), &mut |_, _| {})
            .expect("run `cargo xtask data minilm` and `cargo xtask data wordnet`");
        Arc::new(side)
    }

    fn lang_cfg(extra: &str) -> IrcConfig {
        let cfg: IrcConfig = toml::from_str(&format!(
            "level = \"language\"\nhead_hidden = 16\nhead_output = 8\ntext_sample = 24\n{extra}"
        ))
        .unwrap();
        cfg.check(8).unwrap();
        cfg.resolved()
    }

    fn simclr_irc(cfg: &IrcConfig, text: Arc<TextSide>) -> anyhow::Result<super::super::Irc> {
        let f = Fixture::new(8);
        let entry = crate::method::lookup("simclr").unwrap();
        let settings = entry.resolve(&toml::Table::new(), &f.env()).unwrap();
        let inner = entry.build(&settings, &f.build_context())?;
        super::super::Irc::with_text(inner, cfg, f.head.output, 2, 0, &f.device, Some(text))
    }

    fn log(out: &StepOutput, k: &str) -> Option<f64> {
        out.logs.iter().find(|l| l.0 == k).map(|l| l.1)
    }

    /// `L = L_base + λ_c · mean_i −log (A_0 A_1)[i, i]` with `A_0 = softmax(G_0 Tᵀ/τ)`,
    /// `A_1 = softmax(T G_2ᵀ/τ)`, composed here from plain tensor ops; with auto-pairs, `+ w ·
    /// mean_kept −log softmax(G_0 Tᵀ/τ_p)[j*]` with `j*` the first hop's argmax.
    #[test]
    fn the_step_is_the_base_plus_the_hand_composed_walk_and_pairs() -> anyhow::Result<()> {
        let text = text_side(40, "compose");
        for (auto_pair, balance) in [(false, false), (true, false), (true, true)] {
            let ap = match (auto_pair, balance) {
                (false, _) => "",
                (true, false) => "auto_pair = true\nramp = 0.0\nkeep_fraction = 0.5",
                (true, true) => "auto_pair = true\nramp = 0.0\nkeep_fraction = 0.5\nbalance = true",
            };
            let cfg = lang_cfg(&format!("weight = 0.5\ntemperature = 0.2\n{ap}"));
            let mut irc = simclr_irc(&cfg, text.clone())?;
            let views = random_views(2, 8, 3)?;
            let out = irc.step(&views, &batch(8), ctx(5))?;
            let p = irc.language().unwrap();
            // The same groups, recomputed from the backbone (SimCLR encodes both views at once).
            let f = irc
                .backbone()
                .forward_t(&Tensor::cat(&[&views[0], &views[1]], 0)?, true)?;
            let c = p.image_group(&f)?;
            let (g0, g2) = (c.narrow(0, 0, 8)?, c.narrow(0, 8, 8)?);
            let rows = p.sample(5);
            assert_eq!(rows.len(), 24);
            let t = p.text_group(&rows, &Device::Cpu)?;
            let sm = |x: Tensor| gyre_kernels::nn::ops::softmax(&x, D::Minus1);
            let a0 = sm((g0.matmul(&t.t()?)? / 0.2)?)?;
            let a1 = sm((t.matmul(&g2.t()?)? / 0.2)?)?;
            let back: Vec<f32> = a0
                .matmul(&a1)?
                .to_vec2::<f32>()?
                .iter()
                .enumerate()
                .map(|(i, r)| r[i])
                .collect();
            let cyc = back.iter().map(|p| -(*p as f64).ln()).sum::<f64>() / 8.0;
            let got_cyc = log(&out, "irc_cycle_loss").unwrap();
            assert!((got_cyc - cyc).abs() < 1e-4, "{got_cyc} vs {cyc}");
            let mut want = log(&out, "base_loss").unwrap() + 0.5 * cyc;
            if auto_pair {
                // Keep the 4 rows with the highest first-hop similarity; positive = their argmax
                // (balanced: the highest Sinkhorn code, SwAV's ε 0.05 and 3 iterations).
                let raw = g0.matmul(&t.t()?)?;
                let sim: Vec<Vec<f32>> = raw.to_vec2()?;
                let pick: Vec<Vec<f32>> = if balance {
                    gyre_losses::sinkhorn_knopp(&raw, 0.05, 3, 8)?.to_vec2()?
                } else {
                    sim.clone()
                };
                let mut best: Vec<(f32, usize, usize)> = pick
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let (j, s) = r.iter().enumerate().fold((0, f32::MIN), |a, (j, &s)| {
                            if s > a.1 {
                                (j, s)
                            } else {
                                a
                            }
                        });
                        (s, i, j)
                    })
                    .collect();
                best.sort_by(|a, b| b.0.total_cmp(&a.0));
                let mut ce = 0.0;
                for &(_, i, j) in &best[..4] {
                    let z: Vec<f64> = sim[i].iter().map(|&s| s as f64 / 0.1).collect();
                    let lse = z.iter().map(|v| (v - z[j]).exp()).sum::<f64>().ln();
                    ce += lse;
                }
                let ap = ce / 4.0;
                let got_ap = log(&out, "irc_pair_loss").unwrap();
                assert!((got_ap - ap).abs() < 1e-4, "{got_ap} vs {ap}");
                assert_eq!(log(&out, "irc_pair_weight"), Some(1.0));
                want += ap;
            } else {
                assert!(log(&out, "irc_pair_loss").is_none());
            }
            let got = out.loss.to_scalar::<f32>()? as f64;
            assert!((got - want).abs() < 1e-4, "{got} vs {want}");
        }
        Ok(())
    }

    /// The walk's gradient reaches the backbone and both heads.
    #[test]
    fn the_gradient_reaches_the_backbone_and_both_heads() -> anyhow::Result<()> {
        let cfg = lang_cfg("auto_pair = true\nramp = 0.0");
        let mut irc = simclr_irc(&cfg, text_side(40, "grad"))?;
        let out = irc.step(&random_views(2, 8, 1)?, &batch(8), ctx(3))?;
        let grads = out.loss.backward()?;
        for name in [
            "backbone.conv1.weight",
            "image_projector.0.weight",
            "image_projector.3.weight",
            "text_projector.0.weight",
        ] {
            let p = irc.params().get(name).unwrap_or_else(|| {
                panic!(
                    "no param {name}: {:?}",
                    irc.params()
                        .all()
                        .iter()
                        .map(|p| &p.name)
                        .take(40)
                        .collect::<Vec<_>>()
                )
            });
            let g = grads.get(p.var.as_tensor()).expect("a gradient");
            let norm = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
            assert!(norm > 0.0 && norm.is_finite(), "{name}: |g|² = {norm}");
        }
        Ok(())
    }

    /// `text.train_layers = 1`: the step's texts run through MiniLM's frozen first five layers and
    /// its trainable sixth, which gets the walk's gradient.
    #[test]
    fn a_trainable_text_tail_gets_the_gradient() -> anyhow::Result<()> {
        let cfg = TextConfig {
            train_layers: 1,
            ..small_text_config(40, "tail")
        };
        let side = Arc::new(TextSide::load(&cfg, &mut |_, _| {})?);
        let irc_cfg = lang_cfg("");
        let mut irc = simclr_irc(&irc_cfg, side.clone())?;
        let name = "text_tail.encoder.layer.5.output.LayerNorm.weight";
        let p = irc
            .params()
            .get(name)
            .expect("the tail is in the params")
            .clone();
        let out = irc.step(&random_views(2, 8, 2)?, &batch(8), ctx(1))?;
        let grads = out.loss.backward()?;
        let g = grads.get(p.var.as_tensor()).expect("a gradient");
        assert!(g.sqr()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        // Live texts through trunk + untrained tail = the cached embeddings of the whole model.
        let live = side.embed_live(&[side.corpus.texts()[3].as_str()], &Device::Cpu)?;
        let cached = side.embeddings.get(3)?.unsqueeze(0)?;
        let d = (live - cached)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-5, "{d}");
        Ok(())
    }

    /// The texts of a step depend on (seed, step) only, and a checkpoint refuses another corpus.
    #[test]
    fn sampling_is_keyed_and_the_corpus_is_in_the_checkpoint() -> anyhow::Result<()> {
        let text = text_side(40, "keyed");
        let cfg = lang_cfg("");
        let irc = simclr_irc(&cfg, text.clone())?;
        let p = irc.language().unwrap();
        let s7 = p.sample(7);
        assert_eq!(
            s7,
            simclr_irc(&cfg, text.clone())?
                .language()
                .unwrap()
                .sample(7)
        );
        assert_ne!(s7, p.sample(8));
        assert!(s7.windows(2).all(|w| w[0] < w[1]) && *s7.last().unwrap() < 40);
        let mut big = cfg.clone();
        big.text_sample = Some(100);
        assert_eq!(
            simclr_irc(&big, text.clone())?
                .language()
                .unwrap()
                .sample(0),
            (0..40).collect::<Vec<u32>>()
        );
        let state: HashMap<String, Tensor> = irc.state()?.into_iter().collect();
        let mut again = simclr_irc(&cfg, text)?;
        again.load_state(&state)?;
        let mut other = simclr_irc(&cfg, text_side(30, "other"))?;
        let e = other.load_state(&state).unwrap_err().to_string();
        assert!(e.contains("walked through another corpus"), "{e}");
        Ok(())
    }

    #[test]
    fn language_settings_are_checked_by_key() {
        let parse =
            |t: &str| toml::from_str::<IrcConfig>(&format!("level = \"language\"\n{t}")).unwrap();
        for (t, key) in [
            ("memory = \"ema\"", "irc.memory"),
            ("memory_size = 512", "irc.memory_size"),
            ("hops = 3", "irc.hops"),
            ("pair_queue = 512", "irc.pair_queue"),
            ("top_n = 2", "irc.top_n"),
            ("text_sample = 0", "irc.text_sample"),
            ("pair_temperature = 0.0", "irc.pair_temperature"),
        ] {
            assert_eq!(parse(t).check(8).unwrap_err().0, key, "{t}");
        }
        let inst: IrcConfig = toml::from_str("text_sample = 64").unwrap();
        assert_eq!(inst.check(8).unwrap_err().0, "irc.text_sample");
        let r = parse("").resolved();
        assert_eq!(
            (r.text_sample, r.pair_temperature, r.memory),
            (Some(4096), Some(0.1), None)
        );
        let bad: TextConfig = toml::from_str("corpus_size = 0").unwrap();
        assert_eq!(bad.check().unwrap_err().0, "text.corpus_size");
        assert!(toml::from_str::<TextConfig>("corpse = \"x\"")
            .unwrap_err()
            .to_string()
            .contains("unknown field `corpse`"));
    }
}
