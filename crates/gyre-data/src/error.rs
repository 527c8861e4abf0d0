//! Errors of the data crate; each names the file (or dataset) and what is wrong with it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {problem}")]
    File { path: PathBuf, problem: String },
    #[error("dataset '{name}' not found: {hint}")]
    NotFound { name: String, hint: String },
    #[error("invalid augmentation setting '{field}': {problem}")]
    Augment {
        field: &'static str,
        problem: String,
    },
    #[error("invalid scene setting '{field}': {problem}")]
    Scene {
        field: &'static str,
        problem: String,
    },
    #[error("invalid loader setting: {0}")]
    Loader(String),
}

impl DataError {
    pub fn file(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        DataError::File {
            path: path.into(),
            problem: problem.into(),
        }
    }
}
