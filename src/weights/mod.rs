//! Weights in and out of the native models: ImageNet weights from ONNX files (through
//! burn-import's ONNX stack, onnx-ir), saving / reloading fine-tuned models, and exporting them
//! to ONNX ([`export_onnx`]) for onnxruntime and other runtimes.

pub(crate) mod container;
#[cfg(feature = "download")]
pub mod download;
pub mod export;
pub mod import;
pub mod onnx;
mod onnx_metadata;
mod saved;
pub mod state;

use std::path::PathBuf;

use thiserror::Error;

pub use export::{ExportReport, export_onnx, onnx_bytes};
pub use import::{
    ImportReport, MappedBy, detect_spec, load_onnx_as, load_onnx_into, load_onnx_model,
};
pub use onnx::{OnnxError, OnnxModel, read_onnx};
pub use saved::{ModelInfo, load_model, load_model_bytes, save_model};
pub(crate) use saved::{load_record_bytes, record_bytes};
pub use state::{HostTensor, StateMap, StateMismatch, load_state};

/// Everything that can go wrong loading or saving weights. Every message names the file.
#[derive(Debug, Error)]
pub enum WeightsError {
    /// Reading or writing the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not what it claims to be, or was truncated / altered.
    #[error("{}: corrupt model file: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The model cannot be written as it is.
    #[error("{}: cannot save this model: {reason}", path.display())]
    Unsavable {
        /// The file it was to be written to.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file holds another architecture than the one asked for.
    #[error("{}: expected a {expected} model, the file holds {found}", path.display())]
    Architecture {
        /// The file.
        path: PathBuf,
        /// What the caller asked for.
        expected: String,
        /// What the file holds.
        found: String,
    },
    /// The ONNX file could not be read.
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    /// Tensors and parameters do not match (missing, unexpected or misshapen tensors).
    #[error("{}: weights do not fit the model: {}", path.display(), list(problems))]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Each mismatch.
        problems: Vec<StateMismatch>,
    },
}

fn list(problems: &[StateMismatch]) -> String {
    let shown: Vec<String> = problems.iter().take(5).map(|p| p.to_string()).collect();
    let more = problems.len().saturating_sub(5);
    if more > 0 {
        format!("{} (and {more} more)", shown.join("; "))
    } else {
        shown.join("; ")
    }
}
