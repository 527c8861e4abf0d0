//! Training for gyre, as a library: methods (one file each, behind a registry), the IRC plug-in
//! that wraps any of them, teachers, queues and banks, optimisers and schedules, the trainer and
//! its observers, the kNN monitor and linear probe, checkpoints and exports, and TOML recipes.
//! The `gyre` binary (crate `gyre-cli`) is a thin command line over it.
//!
//! Layers, bottom up (nothing imports from a layer above it): `step`, `bank`, `ema`, `teacher`,
//! `cluster_bank`, `optim`, `schedule`, `knn`, `metrics` → `config` (recipe sections) → `method`
//! → `irc` → `recipe` → `data_setup`, `eval`, `dense_eval`, `linear`, `checkpoint`, `observe` →
//! `trainer`, `export`.

pub mod bank;
pub mod checkpoint;
pub mod cluster_bank;
pub mod config;
pub mod data_setup;
pub mod dense_eval;
pub mod ema;
pub mod eval;
pub mod export;
pub mod irc;
pub mod knn;
pub mod language_eval;
pub mod linear;
pub mod matching;
pub mod method;
pub mod metrics;
pub mod observe;
pub mod optim;
pub mod recipe;
pub mod schedule;
pub mod step;
pub mod teacher;
pub mod trainer;

pub use recipe::Recipe;
pub use trainer::{train, TrainOptions};
