//! Errors of the encoder crate.

/// What can go wrong building, loading or saving an encoder.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("unknown encoder '{0}': expected resnet-mini, resnet18, resnet34 or resnet50")]
    UnknownArch(String),
    #[error("invalid encoder configuration: {0}")]
    Config(String),
    #[error("{path}: {problem}")]
    Weights { path: String, problem: String },
    #[error(transparent)]
    Tensor(#[from] gyre_kernels::Error),
}
