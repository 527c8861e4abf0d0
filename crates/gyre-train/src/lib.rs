//! Training for gyre: methods (encoder + head + loss + views), optimisers, schedules, the kNN
//! monitor, checkpoints, metrics, TOML recipes, benchmarks, and the `gyre` binary's commands.

pub mod bank;
pub mod bench;
pub mod bench_ops;
pub mod checkpoint;
pub mod cluster_bank;
pub mod config;
pub mod data_setup;
pub mod ema;
pub mod embed;
pub mod eval;
pub mod export;
pub mod irc;
pub mod knn;
pub mod linear;
pub mod method;
pub mod metrics;
pub mod optim;
pub mod plot;
pub mod recipe;
pub mod schedule;
pub mod step;
pub mod teacher;
pub mod trainer;

pub use recipe::Recipe;
pub use trainer::{train, TrainOptions};
