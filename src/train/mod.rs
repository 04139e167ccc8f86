//! Fine-tuning: choose what trains, train and validate per epoch, keep the best weights,
//! checkpoint and resume, evaluate and predict.
//!
//! The flow of the PyTorch transfer-learning tutorial:
//!
//! ```no_run
//! # use transfer_vision::{backend::CpuAutodiff, data::*, models::*, train::*};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = Default::default();
//! let sets = TrainVal::open("data/hymenoptera_data", FolderOptions::default(), 0.2, 0)?;
//! let train = DataLoader::new(&sets.train, presets::imagenet_train(224, Normalization::ImageNet), LoaderConfig::new(16))?;
//! let val = DataLoader::new(&sets.val, presets::imagenet_eval(224, Normalization::ImageNet), LoaderConfig::new(16))?;
//! let (model, _) = ResNet::<CpuAutodiff>::from_onnx("weights/resnet18.onnx", &device)?;
//! let model = model.with_new_head(2, &device);
//! let phase1 = fit(model, &train, &val, &FitConfig::new(5, OptimizerConfig::adam(1e-3), Trainable::HeadOnly), &device)?;
//! let phase2 = fit(phase1.model, &train, &val, &FitConfig::new(2, OptimizerConfig::adam(1e-4), Trainable::FromBlock("layer4".into())), &device)?;
//! # Ok(()) }
//! ```

pub mod freeze;
pub mod history;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod predict;
pub mod trainer;

use thiserror::Error;

pub use freeze::{BatchNormPolicy, Trainable, set_trainable, set_trainable_with, trainable_keys};
pub use history::{EpochStats, History};
pub use loss::cross_entropy;
pub use metrics::{Accumulator, EvalReport};
pub use optim::{OptimizerConfig, OptimizerKind, Schedule};
pub use predict::{Prediction, predict};
pub use trainer::{FitConfig, FitOutcome, Learner, StepOutput, evaluate, fit};

/// Why training could not go on.
#[derive(Debug, Error)]
pub enum TrainError {
    /// Loading images failed.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// Reading or writing weights or checkpoints failed.
    #[error(transparent)]
    Weights(#[from] crate::weights::WeightsError),
    /// A setting is invalid.
    #[error("invalid training setting: {0}")]
    Config(String),
    /// A checkpoint cannot be resumed.
    #[error("{0}")]
    Checkpoint(String),
}
