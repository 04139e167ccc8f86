//! # transfer-vision
//!
//! Transfer learning on images in pure Rust, on the [burn](https://burn.dev) framework:
//! native MobileNetV2 and ResNet18/34 whose parameter paths equal torchvision's state-dict keys,
//! ImageNet weights imported from ONNX, and fine-tuning on a CPU or a CUDA GPU.
//!
//! ```no_run
//! use transfer_vision::models::{ImageClassifier, MobileNetV2Config};
//! use transfer_vision::backend::Cpu;
//!
//! let device = Default::default();
//! let model = MobileNetV2Config::new().init::<Cpu>(&device).with_new_head(2, &device);
//! println!("{}", model.summary([3, 160, 160]));
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod data;
pub mod imagenet;
pub mod io;
pub mod models;
pub mod train;
pub mod verify;
pub mod viz;
pub mod weights;

pub use models::{ImageClassifier, MobileNetV2, MobileNetV2Config, ResNet, ResNetConfig};
