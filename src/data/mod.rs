//! Image data: class-per-folder datasets, torchvision-equivalent transforms and a parallel,
//! reproducible batch loader. Burn-free: batches are plain CPU buffers ([`ImageBatch`]).
//!
//! ```no_run
//! use transfer_vision::data::{DataLoader, FolderOptions, LoaderConfig, Normalization, TrainVal, presets};
//!
//! # fn main() -> Result<(), transfer_vision::data::DataError> {
//! let sets = TrainVal::open("../shared/datasets/alpaca", FolderOptions::default(), 0.2, 42)?;
//! println!("{}", sets.train.summary());
//! let loader = DataLoader::new(&sets.train, presets::imagenet_train(224, Normalization::Tf), LoaderConfig::new(16))?;
//! for epoch in 0..2 {
//!     for batch in loader.epoch(epoch) {
//!         let batch = batch?;
//!         assert_eq!(batch.shape[1..], [3, 224, 224]);
//!     }
//! }
//! # Ok(()) }
//! ```

mod decode;
mod error;
mod folder;
mod loader;
mod preprocessing;
pub mod resize;
mod tensor;
pub mod transforms;

pub use decode::{DEFAULT_MAX_PIXELS, DecodeOptions, decode_rgb, decode_rgb_bytes};
pub use error::{DataError, Warning, WarningKind};
pub use folder::{DEFAULT_EXTENSIONS, FolderOptions, ImageFolder, Sample, TrainVal};
pub use loader::{CacheMode, DataLoader, EpochIter, ImageBatch, LoaderConfig};
pub use preprocessing::{EvalResize, Preprocessing};
pub use transforms::{
    CenterCrop, ChwImage, ColorJitter, Compose, CropBox, CustomStep, IMAGENET_MEAN, IMAGENET_STD,
    Normalization, Normalize, Pixels, RandomHorizontalFlip, RandomResizedCrop, RandomRotation,
    Resize, ResizeTo, StepFn, Transform, presets,
};

/// The 8-bit RGB image type the transforms work on (re-exported from the `image` crate).
pub use image::RgbImage;
