//! Fine-tuning: choose what trains, train and validate per epoch, keep the best weights,
//! checkpoint and resume, evaluate and predict.
//!
//! The flow of the PyTorch transfer-learning tutorial:
//!
//! ```no_run
//! use transfer_vision::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = Default::default();
//! let (model, import) = ResNet::<CpuAutodiff>::from_onnx("weights/resnet18.onnx", &device)?;
//! let pre = import.preprocessing;
//! let sets = TrainVal::open("data/hymenoptera_data", FolderOptions::default(), 0.2, 0)?;
//! let train = DataLoader::new(&sets.train, pre.train_transform(), LoaderConfig::new(16))?;
//! let val = DataLoader::new(&sets.val, pre.eval_transform(), LoaderConfig::new(16).with_shuffle(false))?;
//! let model = model.with_new_head(2, &device);
//! let phase1 = fit(model, &train, &val, &FitConfig::new(5, OptimizerConfig::adam(1e-3), Trainable::HeadOnly), &device)?;
//! let phase2 = fit(phase1.model, &train, &val, &FitConfig::new(2, OptimizerConfig::adam(1e-4), Trainable::FromBlock("layer4".into())), &device)?;
//! println!("{:?}", evaluate(&phase2.model, &val, &device)?);
//! # Ok(()) }
//! ```

mod checkpoint;
mod config;
mod device_limit;
mod evaluate;
pub mod explain;
mod feature_cache;
mod fit;
pub mod freeze;
pub mod history;
mod learner;
pub mod loss;
pub mod metrics;
mod observer;
pub mod optim;
pub mod predict;
mod recipe;
mod source;

use thiserror::Error;

pub use checkpoint::{CheckpointSummary, read_checkpoint};
pub use config::FitConfig;
pub use device_limit::DeviceBatchLimit;
pub use evaluate::evaluate;
pub use explain::{
    ExplainError, Explanation, Heatmap, ImageResult, explain_file, explain_image, grad_cam,
    image_results, model_view, top_losses,
};
pub use fit::{FitOutcome, fit, fit_with};
pub use freeze::{BatchNormPolicy, Trainable, set_trainable, set_trainable_with, trainable_keys};
pub use history::{EpochStats, History};
pub use learner::{Learner, StepOutput};
pub use loss::cross_entropy;
pub use metrics::{Accumulator, ClassMetrics, ClassificationReport, EvalReport};
pub use observer::{BatchProgress, ConsoleReporter, Control, FitObserver, Silent, StopAfter};
pub use optim::{OptimizerConfig, OptimizerKind, Schedule};
pub use predict::{Prediction, predict};
pub use recipe::{TransferRecipe, TransferRun};
pub use source::{BatchSource, MemoryBatches};

pub(crate) use device_limit::FittingPasses;
pub(crate) use evaluate::inference_copy;

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
    /// BatchNorms were asked to train that cannot (their weights came folded).
    #[error("{0}")]
    BatchNorm(String),
    /// A label (or prediction) outside the model's classes.
    #[error(
        "label {label} is not a class of the model ({classes} classes): the batch source's labels must run from 0 to {classes} - 1"
    )]
    Label {
        /// The label.
        label: i64,
        /// The model's number of classes.
        classes: usize,
    },
    /// A checkpoint cannot be resumed.
    #[error("{0}")]
    Checkpoint(String),
    /// A training batch is larger than the device can hold in one buffer (wgpu adapters cap
    /// the size of one tensor; see [`DeviceBatchLimit`]).
    #[error(
        "a batch of {batch} images does not fit this device: {limit}; {}",
        if limit.images == 0 {
            "even one image is too large here: use smaller images (or another device)".to_string()
        } else {
            format!("use a batch size of at most {} (--batch-size {})", limit.images, limit.images)
        }
    )]
    BatchTooLarge {
        /// Images in the batch.
        batch: usize,
        /// What the device holds.
        limit: Box<DeviceBatchLimit>,
    },
}
