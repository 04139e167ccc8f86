//! # transfer-vision
//!
//! Transfer learning on images in pure Rust, on the [burn](https://burn.dev) framework:
//! native MobileNetV2 and ResNet18/34 whose parameter paths equal torchvision's state-dict keys,
//! ImageNet weights imported from ONNX, and fine-tuning on a CPU or a CUDA GPU.
//!
//! ```no_run
//! use transfer_vision::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = Default::default();
//! let (model, import) = AnyModel::<CpuAutodiff>::from_onnx("weights/mobilenet_v2.onnx", &device)?;
//! println!("{} with {:?}", import.spec.name(), import.preprocessing);
//! let model = model.with_new_head(2, &device);
//! println!("{}", model.summary([3, 224, 224]));
//! # Ok(()) }
//! ```
//!
//! Layout: [`models`] (one file per architecture, the layers they share, the registry),
//! [`weights`] (ONNX import, saved models), [`data`] (datasets, transforms, loader), [`train`]
//! (freezing, `fit`, evaluation), [`predict`] (classifying files), [`run`] (a run's output
//! files), [`viz`] (pictures), [`backend`] (backends and devices), [`kernels`] (the convolution
//! seam and the CPU kernels), [`verify`] (parity checks).
#![warn(missing_docs)]

pub mod backend;
pub mod data;
pub mod imagenet;
pub(crate) mod io;
pub mod kernels;
pub mod models;
pub mod predict;
pub mod run;
pub mod train;
pub mod verify;
pub mod viz;
pub mod weights;

pub use kernels::{AutodiffConvBackend, ConvBackend};
pub use models::{
    AnyModel, Architecture, ImageClassifier, MobileNetV2, MobileNetV2Config, ModelSpec, ResNet,
    ResNetConfig,
};

/// What a fine-tuning program uses, in one import: `use transfer_vision::prelude::*;`.
pub mod prelude {
    #[cfg(any(feature = "flex", feature = "ndarray"))]
    pub use crate::backend::{Cpu, CpuAutodiff};
    pub use crate::backend::{DeviceSpec, Precision, reuse_freed_memory};
    pub use crate::data::{
        DataLoader, FolderOptions, ImageFolder, LoaderConfig, Normalization, Preprocessing,
        TrainVal, presets,
    };
    pub use crate::kernels::{AutodiffConvBackend, ConvBackend};
    pub use crate::models::{
        AnyModel, Architecture, ArchitectureConfig, ImageClassifier, MobileNetV2,
        MobileNetV2Config, ModelSpec, ResNet, ResNetConfig,
    };
    pub use crate::predict::Predictor;
    pub use crate::run::{RunOutputs, RunSummary};
    pub use crate::train::{
        BatchNormPolicy, BatchSource, FitConfig, FitOutcome, History, OptimizerConfig, Schedule,
        TrainError, Trainable, TransferRecipe, TransferRun, evaluate, fit, predict,
    };
    pub use crate::viz::plot_history;
    pub use crate::weights::{ImportReport, ModelInfo, load_model, save_model};
    /// burn's backend trait, for `B::seed(&device, seed)` before drawing a new head.
    pub use burn::tensor::backend::Backend;
}
