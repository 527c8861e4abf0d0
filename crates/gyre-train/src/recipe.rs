//! Training recipes in TOML: composed from files (`extends`, overlays), overridden with
//! `--set a.b=v`, parsed with unknown keys refused, resolved (the method's and the plug-in's
//! defaults filled in) and validated field by field before anything is allocated. The resolved
//! recipe is saved in the run, so a run folder alone repeats or resumes it.
//!
//! This file names no method: `[method] name` selects an entry of [`crate::method::REGISTRY`],
//! whose settings type owns the other `[method]` keys, their defaults and their checks.
//!
//! Composition — which value wins (later wins):
//! 1. the files a recipe `extends` (a file name or a list, relative to the recipe's folder), in
//!    order, each resolved the same way first;
//! 2. the recipe file itself;
//! 3. overlay files (`gyre train --overlay FILE`, repeatable), in order;
//! 4. `--set section.key=value`, in order.
//!
//! Tables merge key by key, at any depth; any other value (a number, a string, an array)
//! replaces the earlier one whole. An error names the file that set the offending key.

pub use crate::config::*;
pub use crate::irc::IrcConfig;
use crate::method::{MethodEntry, MethodEnv};
use gyre_data::AugmentConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The recipe `gyre train` uses when none is given: SimCLR on the embedded Fashion-MNIST split.
pub const DEFAULT_RECIPE: &str = include_str!("../../../recipes/default.toml");
/// How `DEFAULT_RECIPE` is named in messages.
pub const DEFAULT_RECIPE_NAME: &str = "<embedded>/recipes/default.toml";

/// A recipe that cannot be used; the message names the file, the field and the problem.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{file}: cannot read")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {problem}")]
    Parse { file: String, problem: String },
    #[error("{file}: {field}: {problem}")]
    Invalid {
        file: String,
        field: String,
        problem: String,
    },
    #[error("--set {arg}: {problem}")]
    Override { arg: String, problem: String },
}

/// The `[method]` section: which method, its views, and the method's own keys — resolved by its
/// settings type (every key, defaults included) when the recipe is parsed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MethodSection {
    /// A name in [`crate::method::REGISTRY`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The `[augment.*]` pipeline of each view, in order.
    #[serde(default)]
    pub views: Vec<String>,
    /// The method's own keys.
    #[serde(flatten)]
    pub settings: toml::Table,
}

impl MethodSection {
    /// The method's name (empty when unset: validation refuses that).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// The registered method this section names.
    pub fn entry(&self) -> Option<&'static MethodEntry> {
        crate::method::lookup(self.name())
    }
}

/// A whole training recipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The run's name; default `<method>_<encoder.arch>_<data.kind>`.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    pub method: MethodSection,
    pub data: DataConfig,
    pub encoder: EncoderConfig,
    pub head: HeadConfig,
    pub augment: BTreeMap<String, AugmentConfig>,
    pub optim: OptimConfig,
    pub train: TrainConfig,
    #[serde(default)]
    pub eval: EvalConfig,
    /// The IRC plug-in; absent = off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irc: Option<IrcConfig>,
    /// The text model and corpus of `irc.level = "language"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<crate::irc::language::TextConfig>,
}

/// Which file set each dotted key (the last layer that wrote it), for messages.
#[derive(Debug, Clone, Default)]
struct Provenance {
    /// The main recipe file: keys nobody set (defaults, `--set`) are reported under it.
    main: String,
    keys: BTreeMap<String, String>,
}

impl Provenance {
    /// The file that set `path`, or its nearest enclosing table, or the main file.
    fn file_of(&self, path: &str) -> &str {
        let mut p = path;
        loop {
            if let Some(f) = self.keys.get(p) {
                return f;
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => return &self.main,
            }
        }
    }
}

/// Merges `from` into `into` (tables key by key, other values replaced) and records `file` for
/// every key it writes.
fn merge(
    into: &mut toml::Table,
    from: toml::Table,
    file: &str,
    prefix: &str,
    prov: &mut Provenance,
) {
    for (k, v) in from {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b, file, &path, prov),
            (_, v) => {
                if let toml::Value::Table(t) = &v {
                    let mut fresh = toml::Table::new();
                    merge(&mut fresh, t.clone(), file, &path, prov);
                    into.insert(k, toml::Value::Table(fresh));
                } else {
                    into.insert(k, v);
                }
                prov.keys.insert(path, file.to_string());
            }
        }
    }
}

/// `line:column` (1-based) of a byte offset of `text`.
fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{line}:{col}")
}

/// A TOML parser or deserialiser message on one line.
fn one_line(message: &str) -> String {
    message.trim().replace('\n', ": ")
}

/// Parses TOML text; a syntax error names `file:line:column`.
fn parse_table(text: &str, file: &str) -> Result<toml::Table, RecipeError> {
    toml::from_str(text).map_err(|e| match e.span() {
        Some(span) => RecipeError::Parse {
            file: format!("{file}:{}", line_col(text, span.start)),
            problem: one_line(e.message()),
        },
        None => RecipeError::Parse {
            file: file.to_string(),
            problem: one_line(e.message()),
        },
    })
}

fn read_text(path: &Path) -> Result<String, RecipeError> {
    std::fs::read_to_string(path).map_err(|source| RecipeError::Io {
        file: path.display().to_string(),
        source,
    })
}

/// The layers of one file: what it `extends` (each resolved the same way, in order), then its
/// own keys; `stack` holds the files being read, to refuse a cycle.
fn layers_of(
    table: toml::Table,
    file: &str,
    dir: Option<&Path>,
    stack: &mut Vec<PathBuf>,
) -> Result<Vec<(String, toml::Table)>, RecipeError> {
    let mut table = table;
    let mut out = Vec::new();
    let bad = |problem: String| RecipeError::Invalid {
        file: file.to_string(),
        field: "extends".into(),
        problem,
    };
    if let Some(ext) = table.remove("extends") {
        let names: Vec<String> = match ext {
            toml::Value::String(s) => vec![s],
            toml::Value::Array(a) => a
                .into_iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s),
                    other => Err(bad(format!("expected file names, got {other}"))),
                })
                .collect::<Result<_, _>>()?,
            other => {
                return Err(bad(format!(
                    "expected a file name or a list of them, got {other}"
                )))
            }
        };
        let Some(dir) = dir else {
            return Err(bad(
                "a recipe that is not a file cannot extend another".into()
            ));
        };
        for name in names {
            let path = dir.join(&name);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
            let canon = path.canonicalize().unwrap_or_else(|_| path.clone());
            if stack.contains(&canon) {
                let chain: Vec<String> = stack
                    .iter()
                    .chain([&canon])
                    .map(|p| p.display().to_string())
                    .collect();
                return Err(bad(format!("a cycle: {}", chain.join(" → "))));
            }
            let shown = path.display().to_string();
            let inner = parse_table(&text, &shown)?;
            stack.push(canon);
            out.extend(layers_of(inner, &shown, path.parent(), stack)?);
            stack.pop();
        }
    }
    out.push((file.to_string(), table));
    Ok(out)
}

/// Sets `path` (dotted) in a TOML table to `value`, creating tables on the way.
fn set_path(root: &mut toml::Table, arg: &str) -> Result<(), RecipeError> {
    let err = |problem: String| RecipeError::Override {
        arg: arg.to_string(),
        problem,
    };
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| err("expected section.key=value".into()))?;
    let key = key.trim();
    let raw = raw.trim();
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("parsed key"),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(err(format!("'{key}' is not a dotted key")));
    }
    let mut table = root;
    for p in &parts[..parts.len() - 1] {
        let entry = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| err(format!("'{p}' is not a section")))?;
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// Where a recipe comes from.
#[derive(Debug, Clone, Default)]
pub struct Sources<'a> {
    /// Overlay files applied after the recipe, in order.
    pub overlays: &'a [PathBuf],
    /// `--set` overrides, applied last.
    pub overrides: &'a [String],
}

impl Recipe {
    /// Parses TOML text (`file` names it in errors and, when it is a path, is where `extends`
    /// looks), applies `overrides`, resolves and validates.
    pub fn parse(text: &str, file: &str, overrides: &[String]) -> Result<Recipe, RecipeError> {
        let dir = Path::new(file)
            .parent()
            .filter(|_| Path::new(file).is_file());
        Self::compose(
            text,
            file,
            dir,
            &Sources {
                overlays: &[],
                overrides,
            },
        )
    }

    /// Reads a recipe file, applies `overrides`, resolves and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Recipe, RecipeError> {
        Self::load_with(
            path,
            &Sources {
                overlays: &[],
                overrides,
            },
        )
    }

    /// Reads a recipe file with its overlays and overrides (see the module doc for which wins).
    pub fn load_with(path: &Path, sources: &Sources) -> Result<Recipe, RecipeError> {
        let text = read_text(path)?;
        Self::compose(&text, &path.display().to_string(), path.parent(), sources)
    }

    /// The embedded default recipe, with overlays and overrides.
    pub fn default_with(sources: &Sources) -> Result<Recipe, RecipeError> {
        Self::compose(DEFAULT_RECIPE, DEFAULT_RECIPE_NAME, None, sources)
    }

    /// The embedded default recipe.
    pub fn default_recipe(overrides: &[String]) -> Result<Recipe, RecipeError> {
        Self::default_with(&Sources {
            overlays: &[],
            overrides,
        })
    }

    fn compose(
        text: &str,
        file: &str,
        dir: Option<&Path>,
        sources: &Sources,
    ) -> Result<Recipe, RecipeError> {
        let mut prov = Provenance {
            main: file.to_string(),
            ..Default::default()
        };
        let mut stack: Vec<PathBuf> = dir
            .map(|d| d.join(Path::new(file).file_name().unwrap_or_default()))
            .and_then(|p| p.canonicalize().ok())
            .into_iter()
            .collect();
        let mut layers = layers_of(parse_table(text, file)?, file, dir, &mut stack)?;
        for o in sources.overlays {
            let shown = o.display().to_string();
            let table = parse_table(&read_text(o)?, &shown)?;
            let mut ostack: Vec<PathBuf> = o.canonicalize().ok().into_iter().collect();
            layers.extend(layers_of(table, &shown, o.parent(), &mut ostack)?);
        }
        let mut table = toml::Table::new();
        for (f, layer) in layers {
            merge(&mut table, layer, &f, "", &mut prov);
        }
        for o in sources.overrides {
            set_path(&mut table, o)?;
        }
        let named = table.contains_key("name");
        let mut recipe: Recipe = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let path = e.path().to_string();
                let problem = one_line(e.inner().message());
                if path == "." {
                    RecipeError::Parse {
                        file: prov.main.clone(),
                        problem,
                    }
                } else {
                    RecipeError::Parse {
                        file: prov.file_of(&path).to_string(),
                        problem: format!("{path}: {problem}"),
                    }
                }
            })?;
        if !named {
            recipe.name = recipe.default_name();
        }
        recipe.resolve(&prov)?;
        recipe.validate_with(&prov)?;
        Ok(recipe)
    }

    /// Fills in the method's and the plug-in's defaults (the method's settings type decides).
    fn resolve(&mut self, prov: &Provenance) -> Result<(), RecipeError> {
        let entry = self.method_entry(prov)?;
        let resolved = entry
            .resolve(&self.method.settings, &self.method_env())
            .map_err(|e| method_error(prov, e))?;
        self.method.settings = resolved;
        if let Some(irc) = &self.irc {
            // Checked as written (its messages name the keys the recipe used), then resolved.
            irc.check(self.train.batch_size)
                .map_err(|(field, problem)| RecipeError::Invalid {
                    file: prov.file_of(&field).to_string(),
                    field,
                    problem,
                })?;
            self.irc = Some(irc.resolved());
        }
        Ok(())
    }

    fn method_entry(&self, prov: &Provenance) -> Result<&'static MethodEntry, RecipeError> {
        self.method.entry().ok_or_else(|| {
            let problem = match &self.method.name {
                None => format!("missing: one of {}", crate::method::names().join(", ")),
                Some(n) => format!(
                    "unknown method `{n}`: expected one of {}",
                    crate::method::names().join(", ")
                ),
            };
            RecipeError::Invalid {
                file: prov.file_of("method.name").to_string(),
                field: "method.name".into(),
                problem,
            }
        })
    }

    /// The recipe's method, wrapped in the IRC plug-in when the recipe has `[irc]`, for images of
    /// `in_channels` channels and a pretraining set of `dataset_len` images (InterCLR's memory
    /// bank has a row per image). The recipe must be valid (as parsing leaves it).
    pub fn build_method(
        &self,
        in_channels: usize,
        dataset_len: usize,
        device: &gyre_kernels::Device,
    ) -> anyhow::Result<Box<dyn crate::method::Method>> {
        let entry = self.method.entry().ok_or_else(|| {
            anyhow::anyhow!("method.name: unknown method `{}`", self.method.name())
        })?;
        let ctx = crate::method::BuildContext {
            env: self.method_env(),
            in_channels,
            dataset_len,
            device,
        };
        let method = entry.build(&self.method.settings, &ctx)?;
        let text = match (&self.irc, &self.text) {
            (Some(irc), Some(t)) if irc.level == crate::irc::IrcLevel::Language => {
                Some(std::sync::Arc::new(self.text_side(t, &mut |_, _| {})?))
            }
            _ => None,
        };
        let base_dim = method.pair_base_dim().unwrap_or(self.head.output);
        Ok(match &self.irc {
            Some(cfg) => Box::new(crate::irc::Irc::with_text(
                method,
                cfg,
                base_dim,
                entry.views.0,
                self.seed,
                device,
                text,
            )?),
            None => method,
        })
    }

    /// The text side of `[text]`: the model, the corpus and its embeddings (from the cache, or
    /// embedded now with `progress(done, total)`).
    pub fn text_side(
        &self,
        cfg: &crate::irc::language::TextConfig,
        progress: &mut dyn FnMut(usize, usize),
    ) -> anyhow::Result<crate::irc::language::TextSide> {
        crate::irc::language::TextSide::load(cfg, progress)
            .map_err(|e| anyhow::anyhow!("text: {e:#}"))
    }

    /// Frames per clip of clip data (scenes: `data.scenes.clip.frames`; video:
    /// `data.video.clip_frames`); 1 for image data.
    pub fn clip_frames(&self) -> usize {
        match self.data.kind {
            DataKind::Scenes => self.data.scenes.clone().unwrap_or_default().clip.frames,
            DataKind::Video => self.data.video.clone().unwrap_or_default().clip_frames,
            _ => 1,
        }
    }

    /// What the method's settings are checked against.
    pub fn method_env(&self) -> MethodEnv<'_> {
        MethodEnv {
            seed: self.seed,
            batch_size: self.train.batch_size,
            encoder: &self.encoder,
            head: &self.head,
        }
    }

    /// `<method>_<encoder.arch>_<data.kind>`, the name of a recipe that gives none.
    pub fn default_name(&self) -> String {
        let kind = serde_json::to_value(self.data.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let method = self.method.name.as_deref().unwrap_or("method");
        format!("{method}_{}_{kind}", self.encoder.arch)
    }

    /// Image channels, when the recipe fixes them: the dataset kind's, else `data.mean`'s length
    /// (an image folder's are known once it is read).
    pub fn in_channels(&self) -> Option<usize> {
        self.data
            .kind
            .channels()
            .or(self.data.mean.as_ref().map(Vec::len))
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a recipe always serialises")
    }

    /// Checks every value, the method's settings included; the error names `file` and the field.
    /// A recipe built in code is checked by this before training.
    pub fn validate(&self, file: &str) -> Result<(), RecipeError> {
        self.validate_with(&Provenance {
            main: file.to_string(),
            ..Default::default()
        })
    }

    fn validate_with(&self, prov: &Provenance) -> Result<(), RecipeError> {
        let bad = |field: &str, problem: String| {
            Err(RecipeError::Invalid {
                file: prov.file_of(field).to_string(),
                field: field.to_string(),
                problem,
            })
        };
        let positive = |field: &str, v: f64| -> Result<(), RecipeError> {
            if !(v > 0.0 && v.is_finite()) {
                return bad(field, format!("must be a positive number, got {v}"));
            }
            Ok(())
        };
        if self.name.trim().is_empty() || self.name.contains(['/', '\\']) {
            return bad(
                "name",
                format!(
                    "must be a non-empty name without slashes, got '{}'",
                    self.name
                ),
            );
        }
        // Sizes that allocate are bounded: a typo must not ask for more memory than exists.
        for (field, v, max) in [
            ("head.hidden", Some(self.head.hidden), MAX_WIDTH),
            ("head.output", Some(self.head.output), MAX_WIDTH),
            ("head.layers", Some(self.head.layers), 64),
            ("train.batch_size", Some(self.train.batch_size), 1 << 20),
            ("train.threads", Some(self.train.threads), 4096),
            ("data.prefetch", Some(self.data.prefetch), 64),
            ("data.image_size", self.data.image_size, 1 << 14),
            (
                "data.memory_budget_mb",
                Some(usize::try_from(self.data.memory_budget_mb).unwrap_or(usize::MAX)),
                1 << 30,
            ),
        ] {
            if let Some(v) = v.filter(|v| *v > max) {
                return bad(field, format!("must be at most {max}, got {v}"));
            }
        }
        let entry = self.method_entry(prov)?;
        if let Err(e) = entry.resolve(&self.method.settings, &self.method_env()) {
            return Err(method_error(prov, e));
        }
        let dense_irc = self
            .irc
            .as_ref()
            .is_some_and(|i| i.level == crate::irc::IrcLevel::Dense);
        let (n_views, what) = entry.views;
        let extra = self.irc.as_ref().map_or(0, |i| i.extra_views());
        let (n_views, plus) = match extra {
            0 => (n_views, ""),
            1 => (
                n_views + 1,
                ", then a′ of the frame for irc.level = \"dense\"",
            ),
            _ => (
                n_views + extra,
                ", then a′ of the frame and the second partner for a three-hop dense walk",
            ),
        };
        if entry.multi_crop && extra > 0 {
            return bad(
                "irc.level",
                format!(
                    "{} takes multi-crop views; the dense level's extra views do not fit after its local crops",
                    entry.name
                ),
            );
        }
        let views_ok = if entry.multi_crop {
            self.method.views.len() >= n_views
        } else {
            self.method.views.len() == n_views
        };
        if !views_ok {
            return bad(
                "method.views",
                format!(
                    "{} needs {}{n_views} views ({what}{plus}), got {}",
                    entry.name,
                    if entry.multi_crop { "at least " } else { "" },
                    self.method.views.len()
                ),
            );
        }
        for v in &self.method.views {
            if !self.augment.contains_key(v) {
                return bad("method.views", format!("no [augment.{v}] section"));
            }
        }
        if entry.multi_crop {
            // Local crops are the small views: none larger than the images or the global crops.
            let image = match self.data.kind {
                DataKind::FashionMnistEmbedded | DataKind::FashionMnist => Some(28),
                DataKind::Cifar10 | DataKind::Cifar100 | DataKind::Cifar10Jpeg => Some(32),
                _ => None,
            };
            let global = self.method.views[..n_views]
                .iter()
                .map(|v| self.augment[v].size)
                .max()
                .unwrap_or(0);
            for v in &self.method.views[n_views..] {
                let size = self.augment[v].size;
                if let Some(px) = image.filter(|&px| size > px) {
                    return bad(
                        "method.views",
                        format!("local crop `{v}` is {size} px ([augment.{v}] size), larger than the {px}-pixel images"),
                    );
                }
                if size > global {
                    return bad(
                        "method.views",
                        format!("local crop `{v}` is {size} px ([augment.{v}] size), larger than the {global}-pixel global crops"),
                    );
                }
            }
        }
        for (name, a) in &self.augment {
            if let Err(e) = a.validate() {
                return bad(&format!("augment.{name}"), e.to_string());
            }
        }
        // Image folders find out at load time; the data loader checks it then.
        match (&self.data.mean, &self.data.std) {
            (Some(mean), Some(std)) => {
                let channels = self.data.kind.channels().unwrap_or(mean.len());
                if mean.len() != channels || std.len() != channels {
                    return bad(
                        "data.mean",
                        format!(
                            "needs {channels} value(s) per field (mean and std), got {} and {}",
                            mean.len(),
                            std.len()
                        ),
                    );
                }
                if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
                    return bad("data.mean", format!("must be finite, got {m}"));
                }
                if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                    return bad("data.std", format!("must be positive, got {s}"));
                }
            }
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => {
                return bad(
                    "data.mean",
                    "set data.mean and data.std together, or neither (the dataset's own)".into(),
                )
            }
        }
        if self.data.kind == DataKind::ImageFolder && self.data.root.is_none() {
            return bad("data.root", "image-folder needs the folder".into());
        }
        if self.data.image_size == Some(0) {
            return bad("data.image_size", "must be positive".into());
        }
        if self.data.subset == Some(0) {
            return bad("data.subset", "must be positive".into());
        }
        match (&self.data.scenes, self.data.kind) {
            (Some(_), k) if k != DataKind::Scenes => {
                return bad("data.scenes", "only kind = \"scenes\" reads it".into())
            }
            (Some(sc), _) => {
                if sc.clips == 0 {
                    return bad("data.scenes.clips", "must be positive".into());
                }
                if sc.clips > MAX_ROWS {
                    return bad(
                        "data.scenes.clips",
                        format!("must be at most {MAX_ROWS}, got {}", sc.clips),
                    );
                }
                match sc.clip.validate() {
                    Err(gyre_data::DataError::Scene { field, problem }) => {
                        return bad(&format!("data.scenes.clip.{field}"), problem)
                    }
                    Err(e) => return bad("data.scenes.clip", e.to_string()),
                    Ok(()) => {}
                }
                if sc.sources == ScenesSources::Embedded && self.data.root.is_some() {
                    return bad(
                        "data.root",
                        "embedded scene sources have no root; use data.scenes.sources = \"real\""
                            .into(),
                    );
                }
            }
            _ => {}
        }
        match (&self.data.video, self.data.kind) {
            (Some(_), k) if k != DataKind::Video => {
                return bad("data.video", "only kind = \"video\" reads it".into())
            }
            (Some(v), _) => {
                for (key, value, min) in [
                    ("size", v.size, 8),
                    ("clip_frames", v.clip_frames, 1),
                    ("frame_gap", v.frame_gap, 1),
                    ("clip_stride", v.clip_stride, 1),
                ] {
                    if value < min || value > 4096 {
                        return bad(
                            &format!("data.video.{key}"),
                            format!("must be in {min}..=4096, got {value}"),
                        );
                    }
                }
                if v.videos.is_empty() {
                    return bad("data.video.videos", "name at least one video".into());
                }
            }
            _ => {}
        }
        let clip_data = matches!(self.data.kind, DataKind::Scenes | DataKind::Video);
        if entry.clips.is_some() && !clip_data {
            return bad(
                "data.kind",
                format!(
                    "{} trains on clips: use \"scenes\" or \"video\"",
                    entry.name
                ),
            );
        }
        if let Some(gap) = self.data.pair_gap {
            if !clip_data {
                return bad(
                    "data.pair_gap",
                    "only clip data (kind = \"scenes\" or \"video\") has frames to pair".into(),
                );
            }
            if entry.clips.is_some() {
                return bad(
                    "data.pair_gap",
                    format!("{} trains on whole clips, not frame pairs", entry.name),
                );
            }
            let frames = self.clip_frames();
            let links = self.irc.as_ref().map_or(1, |i| i.partner_links());
            if gap == 0 || links * gap >= frames {
                return bad(
                    "data.pair_gap",
                    format!(
                        "must be in 1..={} for {frames}-frame clips{}, got {gap}",
                        frames.saturating_sub(1) / links,
                        if links > 1 { " with two partners" } else { "" }
                    ),
                );
            }
        }
        if clip_data && self.data.subset.is_some() {
            return bad(
                "data.subset",
                "clips are whole: set data.scenes.clips, or data.video's clip settings".into(),
            );
        }
        if self.data.kind == DataKind::FashionMnistEmbedded && self.data.root.is_some() {
            return bad(
                "data.root",
                "the embedded dataset has no root; use kind = \"fashion-mnist\"".into(),
            );
        }
        if self.encoder.is_vit() {
            let e = &self.encoder;
            for (key, set) in [
                ("encoder.stem", e.stem.is_some()),
                ("encoder.output_stride", e.output_stride.is_some()),
                ("encoder.stages", e.stages.is_some()),
                ("encoder.bn_splits", e.bn_splits != 1),
            ] {
                if set {
                    return bad(key, format!("a ResNet setting; {} is a ViT", e.arch));
                }
            }
            if let Err(e) = e.backbone_config(self.in_channels().unwrap_or(3)) {
                let key = if e.to_string().contains("image_size")
                    || e.to_string().contains("divide the")
                {
                    "encoder.image_size"
                } else if e.to_string().contains("unknown ViT") {
                    "encoder.arch"
                } else {
                    "encoder.drop_path_rate"
                };
                return bad(key, e.to_string());
            }
        } else if let Err(e) =
            gyre_encoders::ResNetConfig::preset(&self.encoder.arch, self.in_channels().unwrap_or(3))
        {
            return bad("encoder.arch", e.to_string());
        } else if self.encoder.image_size.is_some() || self.encoder.drop_path_rate.is_some() {
            return bad(
                "encoder.image_size",
                format!("a ViT setting; {} is a ResNet", self.encoder.arch),
            );
        }
        if self.encoder.is_vit() {
        } else if let Err(e) = self.encoder.resnet_config(self.in_channels().unwrap_or(3)) {
            let key = if self.encoder.output_stride.is_some() {
                "encoder.output_stride"
            } else {
                "encoder.stages"
            };
            return bad(key, e.to_string());
        }
        if self.head.hidden == 0 || self.head.output == 0 || self.head.layers == 0 {
            return bad("head", "hidden, output and layers must be positive".into());
        }
        if self.encoder.bn_splits == 0
            || !self.train.batch_size.is_multiple_of(self.encoder.bn_splits)
        {
            return bad(
                "encoder.bn_splits",
                format!(
                    "must divide train.batch_size ({}), got {}",
                    self.train.batch_size, self.encoder.bn_splits
                ),
            );
        }
        if let Some(irc) = &self.irc {
            if entry.clips.is_some() {
                return bad(
                    "irc",
                    format!(
                        "{} trains on clips, with no two views of one image for the plug-in's pair",
                        entry.name
                    ),
                );
            }
            if let Err((field, problem)) = irc.check(self.train.batch_size) {
                return bad(&field, problem);
            }
            let language = irc.level == crate::irc::IrcLevel::Language;
            if language != self.text.is_some() {
                return if language {
                    bad(
                        "irc.level",
                        "\"language\" needs a [text] section (the text model and corpus)".into(),
                    )
                } else {
                    bad("text", "only irc.level = \"language\" reads it".into())
                };
            }
            if dense_irc {
                if !entry.dense_pair {
                    return bad(
                        "irc.level",
                        format!(
                            "\"dense\" walks through the momentum teacher's map of the partner frame; {} has none (use one of {})",
                            entry.name,
                            crate::method::REGISTRY
                                .iter()
                                .filter(|e| e.dense_pair)
                                .map(|e| e.name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
                if self.data.pair_gap.is_none() {
                    return bad(
                        "data.pair_gap",
                        "irc.level = \"dense\" needs image-level pairs: frames of one clip this many apart".into(),
                    );
                }
            }
        }
        if let Some(t) = &self.text {
            if self.irc.is_none() {
                return bad("text", "only irc.level = \"language\" reads it".into());
            }
            if let Err((field, problem)) = t.check() {
                return bad(&field, problem);
            }
        }
        positive("optim.lr", self.optim.lr)?;
        if !(0.0..1.0).contains(&self.optim.momentum) {
            return bad(
                "optim.momentum",
                format!("must be in [0, 1), got {}", self.optim.momentum),
            );
        }
        if self.optim.nesterov && self.optim.momentum == 0.0 {
            return bad("optim.nesterov", "needs momentum > 0".into());
        }
        if !(self.optim.weight_decay >= 0.0 && self.optim.weight_decay.is_finite()) {
            return bad(
                "optim.weight_decay",
                format!("must be ≥ 0, got {}", self.optim.weight_decay),
            );
        }
        if let Some(w) = self
            .optim
            .weight_decay_final
            .filter(|w| !(*w >= 0.0 && w.is_finite()))
        {
            return bad("optim.weight_decay_final", format!("must be ≥ 0, got {w}"));
        }
        if !(self.optim.final_lr >= 0.0 && self.optim.final_lr <= self.optim.lr) {
            return bad(
                "optim.final_lr",
                format!("must be in [0, lr], got {}", self.optim.final_lr),
            );
        }
        if !(self.optim.warmup_epochs >= 0.0
            && self.optim.warmup_epochs <= self.train.epochs as f64)
        {
            return bad(
                "optim.warmup_epochs",
                format!(
                    "must be in [0, train.epochs], got {}",
                    self.optim.warmup_epochs
                ),
            );
        }
        for (i, b) in self.optim.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                return bad(
                    &format!("optim.betas[{i}]"),
                    format!("must be in [0, 1), got {b}"),
                );
            }
        }
        positive("optim.eps", self.optim.eps)?;
        if self.train.epochs == 0 {
            return bad("train.epochs", "must be positive".into());
        }
        if self.train.batch_size < 2 {
            return bad(
                "train.batch_size",
                format!("must be at least 2, got {}", self.train.batch_size),
            );
        }
        if self.train.keep_last == 0 {
            return bad("train.keep_last", "must be at least 1".into());
        }
        if self.train.log_every == 0 || self.train.checkpoint_every == 0 {
            return bad(
                "train.log_every",
                "log_every and checkpoint_every must be positive".into(),
            );
        }
        // Only parsed here: whether the device exists is the run's business (and `--device`
        // may override it).
        if let Err(e) = self.train.device.parse::<gyre_kernels::DeviceSpec>() {
            return bad("train.device", e.to_string());
        }
        // The same checks as `gyre eval --k / --t`.
        if let Err(p) = crate::knn::check_k(self.eval.knn_k) {
            return bad("eval.knn_k", p);
        }
        if let Err(p) = crate::knn::check_t(self.eval.knn_t) {
            return bad("eval.knn_t", p);
        }
        Ok(())
    }

    /// Base learning rate after the batch-size rule.
    pub fn effective_lr(&self) -> f64 {
        if self.optim.scale_lr_with_batch {
            self.optim.lr * self.train.batch_size as f64 / 256.0
        } else {
            self.optim.lr
        }
    }
}

/// A method settings error as a recipe error, naming the file that set the key.
fn method_error(prov: &Provenance, e: crate::method::SettingsError) -> RecipeError {
    let field = if e.key.is_empty() {
        "method".to_string()
    } else {
        format!("method.{}", e.key)
    };
    RecipeError::Invalid {
        file: prov.file_of(&field).to_string(),
        field,
        problem: e.problem,
    }
}

#[cfg(test)]
mod tests;
