//! Errors of the text side; each names the file, the recipe field or the model file at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("{path}: {problem}")]
    File { path: PathBuf, problem: String },
    #[error("{what}: {problem} (for MiniLM: run `cargo xtask data minilm`)")]
    Missing { what: String, problem: String },
    #[error("invalid text setting '{field}': {problem}")]
    Setting {
        field: &'static str,
        problem: String,
    },
    #[error("{0}")]
    Model(String),
    #[error(transparent)]
    Candle(#[from] gyre_kernels::candle::Error),
}

impl TextError {
    pub fn file(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        TextError::File {
            path: path.into(),
            problem: problem.into(),
        }
    }
}
