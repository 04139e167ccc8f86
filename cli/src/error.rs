//! What can stop a command, and the exit status it gives.

use std::path::{Path, PathBuf};

use transfer_vision::backend::DeviceError;
use transfer_vision::data::DataError;
use transfer_vision::predict::PredictError;
use transfer_vision::run::RunError;
use transfer_vision::train::{ExplainError, TrainError};
use transfer_vision::viz::VizError;
use transfer_vision::weights::WeightsError;

/// Why a command failed. [`CliError::Usage`] is a bad command line (exit status 2); everything
/// else is about the data or the files (exit status 1). Every message names the file, folder or
/// flag concerned.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag, or a combination of flags, that cannot be carried out.
    #[error("{0}")]
    Usage(String),
    /// `--device` or `--precision`.
    #[error("--device / --precision: {0}")]
    Device(#[from] DeviceError),
    /// A data folder or an image.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A weights or model file.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// A model file given to `predict` / `eval`.
    #[error(transparent)]
    Predict(#[from] PredictError),
    /// Training or evaluation.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// Explaining an image (Grad-CAM).
    #[error(transparent)]
    Explain(#[from] ExplainError),
    /// Writing a run's outputs.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Drawing a picture.
    #[error(transparent)]
    Picture(#[from] VizError),
    /// Reading or writing a file or folder.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A check that failed (e.g. an exported file that does not give the model's logits).
    #[error("{0}")]
    Check(String),
}

/// `path`, given as `flag`, must be an existing file (else a usage error naming both).
pub fn existing_file(flag: &str, path: &Path) -> Result<(), CliError> {
    match path.is_file() {
        true => Ok(()),
        false => Err(CliError::Usage(format!(
            "{flag} {}: no such file",
            path.display()
        ))),
    }
}

/// `path`, given as `flag`, must be an existing folder (else a usage error naming both).
pub fn existing_folder(flag: &str, path: &Path) -> Result<(), CliError> {
    match path.is_dir() {
        true => Ok(()),
        false => Err(CliError::Usage(format!(
            "{flag} {}: no such folder",
            path.display()
        ))),
    }
}

impl CliError {
    /// 2 for a bad command line, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Device(_) => 2,
            _ => 1,
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CliError::Io {
            path: path.into(),
            source,
        }
    }
}
