//! Methods: an encoder, a head, a loss and the views they need, composed on shared machinery
//! (EMA teachers in [`crate::teacher`], queues and banks in [`crate::bank`]); the IRC plug-in
//! wraps any of them ([`crate::irc::Irc`]). The trainer drives any `Method` the same way.
//!
//! A method is one file: its settings struct (the `[method]` keys: serde defaults,
//! `deny_unknown_fields`, its own checks, implementing [`MethodSettings`]), its `Method`, and its
//! tests; plus one line in [`REGISTRY`]. Nothing else names it.
//!
//! The update order of one step (`methods.md` §9.9), the same for every method:
//! 1. EMA update of the teacher — first thing in [`Method::step`] (the teacher refuses a forward
//!    pass before its update, [`crate::teacher::MomentumEncoder::encode`]);
//! 2. teacher (key) forward passes, Shuffle-BN — in `step`;
//! 3. losses — `step` returns them; queues are read here, before this batch is added;
//! 4. backward and optimiser step — the trainer;
//! 5. enqueue keys, write banks, relabel — [`Method::after_step`];
//! 6. periodic refreshes (InterCLR's centroids) — `after_step`.

pub mod barlow_twins;
pub mod byol;
pub mod crw;
pub mod densecl;
pub mod dino;
pub mod interclr;
pub mod moco;
pub mod nnclr;
pub mod pixpro;
pub mod reco;
pub mod ressl;
pub mod simclr;
pub mod simsiam;
pub mod swav;
pub mod vicreg;

use crate::config::{EncoderConfig, HeadConfig};
use crate::ema::MomentumSchedule;
use crate::step::{StepContext, StepOutput};
use crate::teacher::MomentumEncoder;
use gyre_data::Batch;
use gyre_encoders::{Backbone, DenseHead, ParamStore, ProjectionHead, ProjectionHeadConfig};
use gyre_kernels::{Device, Result, Tensor};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;

/// The methods gyre has, one line each: everything else finds a method here by its name.
pub const REGISTRY: &[MethodEntry] = &[
    entry::<simclr::SimClrSettings>(),
    entry::<moco::MocoSettings>(),
    entry::<byol::ByolSettings>(),
    entry::<simsiam::SimSiamSettings>(),
    entry::<ressl::ResslSettings>(),
    entry::<reco::RecoSettings>(),
    entry::<interclr::InterClrSettings>(),
    entry::<nnclr::NnclrSettings>(),
    entry::<densecl::DenseClSettings>(),
    entry::<pixpro::PixProSettings>(),
    entry::<crw::CrwSettings>(),
    entry::<barlow_twins::BarlowTwinsSettings>(),
    entry::<vicreg::VicRegSettings>(),
    entry::<swav::SwavSettings>(),
    entry::<dino::DinoSettings>(),
];

/// A self-supervised method.
pub trait Method {
    fn name(&self) -> &'static str;
    /// The trained tensors of the method (backbone under `backbone.`, heads under their names);
    /// teachers and queues are not in it.
    fn params(&self) -> &ParamStore;
    /// The encoder whose features are evaluated and exported.
    fn backbone(&self) -> &Backbone;
    /// Steps 1–3: the loss of one batch; `views[v]` is `[B, C, H, W]` on the training device.
    fn step(&mut self, views: &[Tensor], batch: &Batch, ctx: StepContext) -> Result<StepOutput>;
    /// Steps 5–6, after the optimiser step: queue and bank writes, periodic refreshes.
    fn after_step(&mut self, _ctx: StepContext) -> Result<()> {
        Ok(())
    }
    /// Everything else a resumed run needs, as named tensors: teachers, queues, banks, plug-in
    /// memories (the trained parameters are in [`Self::params`]).
    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }
    /// Restores what [`Self::state`] wrote.
    fn load_state(&mut self, _t: &HashMap<String, Tensor>) -> Result<()> {
        Ok(())
    }
    /// Diagnostics accumulated since the last call, logged with each evaluation (IRC: cycle
    /// accuracy and auto-pair precision; NNCLR: its neighbours' precision); `None` when none.
    fn take_eval_stats(&mut self) -> Option<serde_json::Value> {
        None
    }
    /// The training clips' hidden masks and flow, for diagnostics only (IRC's dense level
    /// scores its auto-pairs against them); never a training signal. Most methods ignore it.
    fn attach_truth(&mut self, _truth: std::sync::Arc<gyre_data::scenes::SceneTruth>) {}
    /// The width of [`crate::step::PairHooks::base_v2`] when it is not `head.output` (SwAV's
    /// codes and DINO's targets are as wide as their prototypes).
    fn pair_base_dim(&self) -> Option<usize> {
        None
    }
    /// The momentum teacher's last-stage map of `x` (`[B, F, h, w]`, detached), after this
    /// step's update, for a plug-in that walks through more frames than the method encodes (a
    /// three-hop dense walk); `None` for a method without a teacher.
    fn teacher_map(&self, _x: &Tensor, _ctx: StepContext) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// What a method's settings are checked against and built with: the rest of the recipe.
#[derive(Debug, Clone, Copy)]
pub struct MethodEnv<'a> {
    pub seed: u64,
    pub batch_size: usize,
    pub encoder: &'a EncoderConfig,
    pub head: &'a HeadConfig,
}

/// What building a method needs besides its settings.
#[derive(Debug, Clone, Copy)]
pub struct BuildContext<'a> {
    pub env: MethodEnv<'a>,
    /// Image channels.
    pub in_channels: usize,
    /// Images in the pretraining set (InterCLR's bank has a row per image).
    pub dataset_len: usize,
    pub device: &'a Device,
}

/// A bad `[method]` value: the key (without `method.`) and the problem.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingsError {
    pub key: String,
    pub problem: String,
}

impl SettingsError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// A method's `[method]` settings: a struct with serde defaults (the published values) and
/// `deny_unknown_fields`, its checks, and how it builds its method.
pub trait MethodSettings: Serialize + DeserializeOwned + 'static {
    /// The `[method] name`.
    const NAME: &'static str;
    /// How many views the step takes, and what they are (for messages).
    const VIEWS: (usize, &'static str) = (2, "two views of each image");
    /// `Some(draws)` when a sample is a clip rather than an image (view `t` = frame `t`, one
    /// augmentation pipeline, drawn per clip or per frame; the data must be whole clips, as
    /// `kind = "scenes"`).
    const CLIPS: Option<gyre_data::ClipDraws> = None;
    /// Whether it takes multi-crop views: `VIEWS.0` global crops, then any number of local crops
    /// of their own (smaller) size, each with its own `[augment.*]` pipeline (SwAV, DINO).
    const MULTI_CROP: bool = false;
    /// Whether its step gives the cell maps of its pair ([`crate::step::DenseHooks`]: view 1's
    /// online map and a momentum teacher's map of view 2), as IRC's dense level needs.
    const DENSE_PAIR: bool = false;
    /// Fills the defaults that depend on the rest of the recipe (`head.hidden`, …).
    fn resolve(&mut self, _env: &MethodEnv) {}
    /// Checks the (resolved) values against the rest of the recipe.
    fn check(&self, env: &MethodEnv) -> std::result::Result<(), SettingsError>;
    /// The method.
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Method>>;
}

/// A registered method: its name, its views, and its settings' parse / check / build, erased.
pub struct MethodEntry {
    pub name: &'static str,
    /// How many views the step takes, and what they are.
    pub views: (usize, &'static str),
    /// Whether its samples are clips, and how their frames draw ([`MethodSettings::CLIPS`]).
    pub clips: Option<gyre_data::ClipDraws>,
    /// Whether it gives the dense level's cell maps ([`MethodSettings::DENSE_PAIR`]).
    pub dense_pair: bool,
    /// Whether it takes local crops after its global views ([`MethodSettings::MULTI_CROP`]).
    pub multi_crop: bool,
    /// The `[method]` keys it reads (besides `name` and `views`).
    pub keys: fn() -> &'static [&'static str],
    resolve: fn(&toml::Table, &MethodEnv) -> std::result::Result<toml::Table, SettingsError>,
    build: fn(&toml::Table, &BuildContext) -> anyhow::Result<Box<dyn Method>>,
}

impl MethodEntry {
    /// Parses `settings` (the `[method]` keys besides `name` and `views`), fills the defaults,
    /// checks them; returns the resolved table (every key, defaults included).
    pub fn resolve(
        &self,
        settings: &toml::Table,
        env: &MethodEnv,
    ) -> std::result::Result<toml::Table, SettingsError> {
        (self.resolve)(settings, env)
    }

    /// Builds the method from its settings.
    pub fn build(
        &self,
        settings: &toml::Table,
        ctx: &BuildContext,
    ) -> anyhow::Result<Box<dyn Method>> {
        (self.build)(settings, ctx)
    }
}

/// The registry entry of a method's settings type.
pub const fn entry<S: MethodSettings>() -> MethodEntry {
    MethodEntry {
        name: S::NAME,
        views: S::VIEWS,
        clips: S::CLIPS,
        dense_pair: S::DENSE_PAIR,
        multi_crop: S::MULTI_CROP,
        keys: settings_keys::<S>,
        resolve: resolve_settings::<S>,
        build: build_from::<S>,
    }
}

/// The method registered as `name`.
pub fn lookup(name: &str) -> Option<&'static MethodEntry> {
    REGISTRY.iter().find(|e| e.name == name)
}

/// Every registered name, for messages.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

fn parse_settings<S: MethodSettings>(
    table: &toml::Table,
    env: &MethodEnv,
) -> std::result::Result<S, SettingsError> {
    let keys = settings_keys::<S>();
    if let Some(k) = table.keys().find(|k| !keys.contains(&k.as_str())) {
        return Err(SettingsError::new(
            k.as_str(),
            format!(
                "{} does not use it (it reads: {})",
                S::NAME,
                keys.join(", ")
            ),
        ));
    }
    let mut s: S =
        serde_path_to_error::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
            SettingsError::new(
                e.path().to_string(),
                e.inner().message().replace('\n', ": "),
            )
        })?;
    s.resolve(env);
    s.check(env)?;
    Ok(s)
}

fn resolve_settings<S: MethodSettings>(
    table: &toml::Table,
    env: &MethodEnv,
) -> std::result::Result<toml::Table, SettingsError> {
    let s = parse_settings::<S>(table, env)?;
    match toml::Value::try_from(&s) {
        Ok(toml::Value::Table(t)) => Ok(t),
        _ => Err(SettingsError::new(
            "",
            "the settings do not serialise to a table",
        )),
    }
}

fn build_from<S: MethodSettings>(
    table: &toml::Table,
    ctx: &BuildContext,
) -> anyhow::Result<Box<dyn Method>> {
    let s = parse_settings::<S>(table, &ctx.env)
        .map_err(|e| anyhow::anyhow!("method.{}: {}", e.key, e.problem))?;
    s.build(ctx)
}

/// The field names a settings struct's serde derive declares (its keys, in order), read by a
/// deserializer that records them and stops.
pub fn settings_keys<S: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};
    #[derive(Debug)]
    struct Found(&'static [&'static str]);
    impl std::fmt::Display for Found {
        fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "fields {:?}", self.0)
        }
    }
    impl std::error::Error for Found {}
    impl de::Error for Found {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Found(&[])
        }
    }
    struct Probe;
    impl<'de> de::Deserializer<'de> for Probe {
        type Error = Found;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> std::result::Result<V::Value, Found> {
            Err(Found(&[]))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> std::result::Result<V::Value, Found> {
            Err(Found(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    match S::deserialize(Probe) {
        Err(Found(fields)) => fields,
        Ok(_) => &[],
    }
}

/// The checks every method's settings share; each returns the key and the problem.
pub mod check {
    use super::SettingsError;
    use crate::config::{MAX_ROWS, MAX_WIDTH};

    type R = std::result::Result<(), SettingsError>;

    /// A temperature or other positive real.
    pub fn positive(key: &str, v: f64) -> R {
        if !(v > 0.0 && v.is_finite()) {
            return Err(SettingsError::new(
                key,
                format!("must be a positive number, got {v}"),
            ));
        }
        Ok(())
    }

    /// A loss weight or a number of epochs: finite and ≥ 0.
    pub fn non_negative(key: &str, v: f64) -> R {
        if !(v >= 0.0 && v.is_finite()) {
            return Err(SettingsError::new(key, format!("must be ≥ 0, got {v}")));
        }
        Ok(())
    }

    /// An EMA momentum and its optional cosine end, in [0, 1].
    pub fn momentum(m: f64, final_m: Option<f64>) -> R {
        for (key, v) in [("momentum", Some(m)), ("momentum_final", final_m)] {
            if let Some(v) = v.filter(|v| !(0.0..=1.0).contains(v)) {
                return Err(SettingsError::new(
                    key,
                    format!("must be in [0, 1], got {v}"),
                ));
            }
        }
        Ok(())
    }

    /// A count in `1..=max`.
    fn count(key: &str, v: usize, max: usize) -> R {
        if v == 0 || v > max {
            return Err(SettingsError::new(
                key,
                format!("must be in 1..={max}, got {v}"),
            ));
        }
        Ok(())
    }

    /// A layer width: 1..=MAX_WIDTH.
    pub fn width(key: &str, v: usize) -> R {
        count(key, v, MAX_WIDTH)
    }

    /// A row count (pool, negatives, clusters): 1..=MAX_ROWS.
    pub fn rows(key: &str, v: usize) -> R {
        count(key, v, MAX_ROWS)
    }

    /// A FIFO queue of `k` rows written `per_step` rows at a time: a positive multiple of it.
    pub fn queue(key: &str, k: usize, per_step: usize) -> R {
        rows(key, k)?;
        if !k.is_multiple_of(per_step.max(1)) {
            return Err(SettingsError::new(
                key,
                format!(
                    "must be a positive multiple of the {per_step} keys enqueued per step, got {k}"
                ),
            ));
        }
        Ok(())
    }
}

/// The IRC pair of a method whose extra positives are one more InfoNCE positive of its queries
/// `q` against its queue (MoCo v2, ReSSL, ReCo, InterCLR): `InfoNCE(q[i], m(i), queue)` at `tau`.
pub(crate) fn info_nce_pair(
    view1: Tensor,
    view2: Tensor,
    base_v2: Tensor,
    q: Tensor,
    queue: Tensor,
    tau: f64,
) -> crate::step::PairHooks {
    crate::step::PairHooks {
        view1,
        view2,
        view2_index: 1,
        base_v2,
        keep_base_scale: false,
        pair_loss: Box::new(move |p| {
            gyre_losses::info_nce(&p.queries(&q)?, &p.positives, &queue, tau)
        }),
        dense: None,
    }
}

/// The online side every method starts from: the recipe's backbone and projector (`[head]`),
/// registered in a fresh store under `backbone.` and `projector.`; heads added later go into the
/// same store.
pub(crate) struct Online {
    pub backbone: Backbone,
    pub head: ProjectionHead,
    pub head_cfg: ProjectionHeadConfig,
    pub params: ParamStore,
}

impl Online {
    pub fn new(ctx: &BuildContext) -> anyhow::Result<Self> {
        let env = ctx.env;
        let backbone = env.encoder.build(ctx.in_channels, env.seed, ctx.device)?;
        let head_cfg = env.head.projector(backbone.feature_dim());
        let head = ProjectionHead::new(head_cfg, env.seed, "projector", ctx.device)?;
        let mut params = ParamStore::new();
        params.extend_prefixed("backbone", backbone.params());
        params.extend_prefixed("projector", head.params());
        Ok(Self {
            backbone,
            head,
            head_cfg,
            params,
        })
    }

    /// The EMA teacher of this backbone and projector: momentum `momentum`, on BYOL's cosine
    /// schedule to `momentum_final` when given, with Shuffle-BN when `shuffle`.
    pub fn teacher(
        &self,
        momentum: f64,
        momentum_final: Option<f64>,
        shuffle: bool,
        ctx: &BuildContext,
    ) -> anyhow::Result<MomentumEncoder> {
        self.teacher_of(None, momentum, momentum_final, shuffle, ctx)
    }

    /// A head of the projector's shape at every cell (1×1 convolutions) under `dense_head.`.
    pub fn dense_head(&mut self, ctx: &BuildContext) -> Result<DenseHead> {
        let d = DenseHead::new(self.head_cfg, ctx.env.seed, "dense_head", ctx.device)?;
        self.params.extend_prefixed("dense_head", d.params());
        Ok(d)
    }

    /// [`Self::teacher`] with an EMA copy of `dense` (made by [`Self::dense_head`]) too.
    pub fn dense_teacher(
        &self,
        dense: &DenseHead,
        momentum: f64,
        momentum_final: Option<f64>,
        shuffle: bool,
        ctx: &BuildContext,
    ) -> anyhow::Result<MomentumEncoder> {
        self.teacher_of(Some(dense), momentum, momentum_final, shuffle, ctx)
    }

    fn teacher_of(
        &self,
        dense: Option<&DenseHead>,
        momentum: f64,
        momentum_final: Option<f64>,
        shuffle: bool,
        ctx: &BuildContext,
    ) -> anyhow::Result<MomentumEncoder> {
        MomentumEncoder::new(
            &self.backbone,
            &self.head,
            self.head_cfg,
            dense.map(|d| (d, self.head_cfg)),
            MomentumSchedule::new(momentum, momentum_final),
            ctx.env.seed,
            shuffle,
            ctx.device,
        )
    }

    /// Each view of a pair through the backbone and projector in its own forward pass (its own
    /// BatchNorm statistics, as two calls of the reference): `([f1, f2], [z1, z2])`, features
    /// and projections.
    pub fn each_view(&self, views: &[Tensor]) -> Result<([Tensor; 2], [Tensor; 2])> {
        let f = [
            self.backbone.forward_t(&views[0], true)?,
            self.backbone.forward_t(&views[1], true)?,
        ];
        let z = [
            self.head.forward_t(&f[0], true)?,
            self.head.forward_t(&f[1], true)?,
        ];
        Ok((f, z))
    }

    /// Every crop through the backbone and projector, consecutive crops of one size in one
    /// forward pass (their BatchNorm statistics shared, as the multi-crop references' grouping
    /// by resolution): `(features, projections)`, one of each per view.
    pub fn crops(&self, views: &[Tensor]) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
        let (mut f, mut z) = (Vec::new(), Vec::new());
        for group in same_size_runs(views) {
            let x = Tensor::cat(group, 0)?;
            let fg = self.backbone.forward_t(&x, true)?;
            let zg = self.head.forward_t(&fg, true)?;
            let b = group[0].dim(0)?;
            for i in 0..group.len() {
                f.push(fg.narrow(0, i * b, b)?);
                z.push(zg.narrow(0, i * b, b)?);
            }
        }
        Ok((f, z))
    }

    /// A predictor `output → hidden → output` (BN on the hidden layer) under `predictor.`.
    pub fn predictor(&mut self, hidden: usize, ctx: &BuildContext) -> Result<ProjectionHead> {
        let out = self.head_cfg.output;
        let p = ProjectionHead::new(
            ProjectionHeadConfig::new(out, hidden, out),
            ctx.env.seed,
            "predictor",
            ctx.device,
        )?;
        self.params.extend_prefixed("predictor", p.params());
        Ok(p)
    }
}

/// `views` cut into runs of consecutive views of one shape (multi-crop's global crops, then
/// its local crops).
pub(crate) fn same_size_runs(views: &[Tensor]) -> Vec<&[Tensor]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=views.len() {
        if i == views.len() || views[i].dims() != views[start].dims() {
            runs.push(&views[start..i]);
            start = i;
        }
    }
    runs
}

/// Epochs done before the step `ctx` (whole epochs).
pub(crate) fn epoch_of(ctx: StepContext) -> usize {
    (ctx.step / ctx.steps_per_epoch.max(1)) as usize
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
