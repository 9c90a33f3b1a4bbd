//! The surrogate workflow: datasets of FE frames → windows → training → model files →
//! evaluation (one window and autoregressive rollout) and prediction.

pub mod calibration;
pub mod condition;
pub mod data;
pub mod engine;
pub mod eval;
pub mod modelfile;
pub mod summary;
pub mod train;

use crate::nn::NnError;
use std::path::PathBuf;

/// Errors of the surrogate workflow; each names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum SurrogateError {
    #[error("{file}: {msg}")]
    File { file: PathBuf, msg: String },
    #[error("job key `{key}`: {msg}")]
    Invalid { key: String, msg: String },
    #[error(transparent)]
    Nn(#[from] NnError),
    #[error("{0}")]
    Mismatch(String),
    #[error("loss is not finite (NaN or Inf) in epoch {epoch}; the last good checkpoint is {checkpoint}")]
    NonFinite { epoch: usize, checkpoint: String },
    #[error("CUDA: {0}")]
    Cuda(String),
}

#[cfg(feature = "cuda")]
impl From<crate::cuda::CudaError> for SurrogateError {
    fn from(e: crate::cuda::CudaError) -> Self {
        SurrogateError::Cuda(e.to_string())
    }
}

pub(crate) fn file_err(file: &std::path::Path, msg: impl std::fmt::Display) -> SurrogateError {
    SurrogateError::File {
        file: file.to_path_buf(),
        msg: msg.to_string(),
    }
}
