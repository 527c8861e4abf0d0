//! Checkpoints: `checkpoint.safetensors` (every model tensor plus the optimiser state) and
//! `checkpoint.json` (where the run is), each written to a temp file and renamed, weights first, so
//! a crash at any point leaves the previous checkpoint whole.

use crate::optim::Optimizer;
use anyhow::Context;
use gyre_encoders::weights::{named_tensors, save_tensors_atomic};
use gyre_encoders::ParamStore;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a run stands: enough to continue it exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    pub recipe: String,
    pub method: String,
    /// Epochs completed.
    pub epoch: u64,
    /// Optimiser steps taken.
    pub step: u64,
    /// The data stream is keyed on (seed, epoch, step): this is its whole position.
    pub seed: u64,
    pub weights: String,
}

pub fn weights_path(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint.safetensors")
}

/// Writes the checkpoint of `params` and `optim` into `run_dir`.
pub fn save(
    run_dir: &Path,
    params: &ParamStore,
    optim: &Optimizer,
    state: &CheckpointState,
) -> anyhow::Result<PathBuf> {
    let wp = weights_path(run_dir);
    let mut tensors = named_tensors(params, "");
    tensors.extend(optim.state_tensors());
    save_tensors_atomic(&tensors, &wp)?;
    let jp = run_dir.join("checkpoint.json");
    let tmp = run_dir.join("checkpoint.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(state)?)
        .with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, &jp)
        .with_context(|| format!("{}: cannot rename into place", jp.display()))?;
    Ok(wp)
}
