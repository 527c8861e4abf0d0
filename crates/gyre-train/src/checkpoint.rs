//! Checkpoints: one `checkpoint.safetensors` holding every model tensor, the optimiser state, the
//! method's state (teachers, queues, banks under `state.`) and where the run stands (the JSON of
//! [`CheckpointState`] as the u8 tensor `gyre.checkpoint`). It is written to a temp file, synced
//! and renamed, so a crash at any point — `kill -9` mid-write included — leaves the previous
//! checkpoint whole. `checkpoint.json` mirrors the state for people; resuming reads the
//! safetensors file only. Optionally the last N checkpoints are kept under `checkpoints/` and the
//! best by kNN top-1 as `checkpoint-best.safetensors`.

use crate::optim::Optimizer;
use crate::recipe::Recipe;
use anyhow::Context;
use gyre_encoders::weights::{load_into, named_tensors, read_tensors, save_tensors_atomic};
use gyre_encoders::{Backbone, ParamStore};
use gyre_kernels::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The tensor holding the state JSON.
pub const STATE_KEY: &str = "gyre.checkpoint";

/// Where a run stands: enough to continue it exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    pub recipe: String,
    pub method: String,
    /// Epochs completed.
    pub epoch: u64,
    /// Steps done in the epoch after those (0 at an epoch boundary).
    #[serde(default)]
    pub epoch_step: u64,
    /// Optimiser steps taken.
    pub step: u64,
    /// The data stream is keyed on (seed, epoch, step): with the two above, its whole position.
    pub seed: u64,
    pub weights: String,
    /// The last and the best kNN top-1 so far.
    #[serde(default)]
    pub knn_top1: Option<f64>,
    #[serde(default)]
    pub best_knn_top1: Option<f64>,
}

pub fn weights_path(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint.safetensors")
}

/// How many checkpoints to keep.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    /// The latest N (N > 1 keeps copies under `checkpoints/`).
    pub last: usize,
    /// Also keep the best by kNN top-1 as `checkpoint-best.safetensors`.
    pub best: bool,
}

fn copy_atomic(src: &Path, dst: &Path) -> anyhow::Result<()> {
    let tmp = dst.with_extension("safetensors.tmp");
    std::fs::copy(src, &tmp).with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, dst).with_context(|| format!("{}: cannot rename", dst.display()))?;
    Ok(())
}

/// Writes the checkpoint into `run_dir`; `is_best` (the kNN improved) also refreshes the best copy.
pub fn save(
    run_dir: &Path,
    params: &ParamStore,
    optim: &Optimizer,
    method_state: Vec<(String, Tensor)>,
    state: &CheckpointState,
    keep: Keep,
    is_best: bool,
) -> anyhow::Result<PathBuf> {
    let wp = weights_path(run_dir);
    let mut tensors = named_tensors(params, "");
    tensors.extend(optim.state_tensors());
    for (k, t) in method_state {
        tensors.insert(format!("state.{k}"), t);
    }
    let json = serde_json::to_string_pretty(state)?;
    let bytes = json.as_bytes();
    tensors.insert(
        STATE_KEY.into(),
        Tensor::from_slice(bytes, bytes.len(), &Device::Cpu)?,
    );
    save_tensors_atomic(&tensors, &wp)?;
    let jp = run_dir.join("checkpoint.json");
    let tmp = run_dir.join("checkpoint.json.tmp");
    std::fs::write(&tmp, &json).with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, &jp)
        .with_context(|| format!("{}: cannot rename into place", jp.display()))?;
    if keep.last > 1 {
        let dir = run_dir.join("checkpoints");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        copy_atomic(
            &wp,
            &dir.join(format!("step-{:08}.safetensors", state.step)),
        )?;
        let mut kept: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        kept.sort();
        for old in &kept[..kept.len().saturating_sub(keep.last)] {
            std::fs::remove_file(old)
                .with_context(|| format!("{}: cannot remove", old.display()))?;
        }
    }
    if keep.best && is_best {
        copy_atomic(&wp, &run_dir.join("checkpoint-best.safetensors"))?;
    }
    Ok(wp)
}

/// A checkpoint read back: its tensors and its state.
pub struct Loaded {
    pub tensors: HashMap<String, Tensor>,
    pub state: CheckpointState,
}

/// Reads `run_dir`'s checkpoint (never a pickle).
pub fn load(run_dir: &Path, device: &Device) -> anyhow::Result<Loaded> {
    let wp = weights_path(run_dir);
    let tensors = read_tensors(&wp, device)?;
    let state = state_of(&tensors, &wp)?;
    Ok(Loaded { tensors, state })
}

/// The position stored in a checkpoint's tensors (`path` names the file in errors).
pub fn state_of(tensors: &HashMap<String, Tensor>, path: &Path) -> anyhow::Result<CheckpointState> {
    let raw = tensors
        .get(STATE_KEY)
        .with_context(|| {
            format!(
                "{}: no {STATE_KEY} tensor: not a gyre checkpoint",
                path.display()
            )
        })?
        .to_vec1::<u8>()?;
    serde_json::from_slice(&raw)
        .with_context(|| format!("{}: {STATE_KEY} is not a checkpoint state", path.display()))
}

/// The recipe's backbone with the `backbone.` tensors of a checkpoint's `tensors`.
pub fn backbone_from(
    recipe: &Recipe,
    tensors: &HashMap<String, Tensor>,
    path: &Path,
    device: &Device,
) -> anyhow::Result<Backbone> {
    let channels = crate::data_setup::run_normalisation(recipe)?.0.len();
    let net = recipe.encoder.build(channels, recipe.seed, device)?;
    let body: HashMap<String, Tensor> = tensors
        .iter()
        .filter(|(k, _)| k.starts_with("backbone."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    load_into(net.params(), &body, "backbone.", path)?;
    Ok(net)
}

/// The trained backbone of the run in `run_dir` (built from `recipe`, its recipe).
pub fn load_backbone(run_dir: &Path, recipe: &Recipe, device: &Device) -> anyhow::Result<Backbone> {
    let wp = weights_path(run_dir);
    backbone_from(recipe, &read_tensors(&wp, device)?, &wp, device)
}

/// Copies every tensor of `store` from `tensors` (same names); names the first missing or
/// mismatched one.
pub fn restore_params(
    store: &ParamStore,
    tensors: &HashMap<String, Tensor>,
    path: &Path,
) -> anyhow::Result<()> {
    for p in store.all() {
        let t = tensors
            .get(&p.name)
            .with_context(|| format!("{}: tensor '{}' is missing", path.display(), p.name))?;
        if t.dims() != p.var.dims() || t.dtype() != p.var.dtype() {
            anyhow::bail!(
                "{}: tensor '{}' is {:?} {:?}, the model needs {:?} {:?}",
                path.display(),
                p.name,
                t.dtype(),
                t.dims(),
                p.var.dtype(),
                p.var.dims()
            );
        }
        p.var.set(t)?;
    }
    Ok(())
}

/// The method-state tensors of a checkpoint, `state.` stripped.
pub fn method_state(tensors: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    tensors
        .iter()
        .filter_map(|(k, t)| k.strip_prefix("state.").map(|s| (s.to_string(), t.clone())))
        .collect()
}
