//! Native burn implementations of the supported architectures and what they share.
//!
//! Each model's module tree mirrors torchvision's, so [`state_dict()`] lists exactly the keys and
//! shapes of the torchvision model's `state_dict()`. One file per architecture holds its
//! configuration, module, forward pass, block list and how it recognises itself in an ONNX
//! graph; the `architectures!` list below registers it (and generates [`ModelSpec`] and
//! [`AnyModel`]). The README's "Adding an architecture" section walks through it.

mod architecture;
pub(crate) mod buffer;
mod classifier;
pub mod layers;
mod registry;
pub mod state_dict;
pub mod summary;
mod torch_paths;

pub use architecture::{Architecture, ArchitectureConfig};
pub use classifier::{HiddenLinear, ImageClassifier};

/// Picks a configuration of one architecture out of a [`ModelSpec`]; generated for every
/// registered configuration (and for `ModelSpec` itself) by the registry.
pub trait FromSpec: Sized {
    /// The configuration when `spec` is of this architecture.
    fn from_spec(spec: &ModelSpec) -> Option<Self>;
}
pub use state_dict::{ParamCount, StateEntry, param_count, state_dict};
pub use summary::{LayerRow, Summary};

// Used by the code `architectures!` generates.
use burn::module::{
    AutodiffModule, Content, HasAutodiffModule, Module, ModuleDisplay, ModuleDisplayDefault,
    ModuleMapper, ModuleVisitor,
};
use burn::record::RecorderError;
use burn::tensor::Tensor;
use layers::{ConvBnMut, ConvMut, Linear};
use std::ops::Range;

use crate::weights::WeightsError;
use crate::weights::import::OnnxBackbone;

// The registry: one line per architecture (`file::Model(Config)`).
registry::architectures! {
    /// A MobileNetV2 of any width.
    mobilenet_v2::MobileNetV2(MobileNetV2Config),
    /// A ResNet18 or ResNet34.
    resnet::ResNet(ResNetConfig),
    /// A MobileNetV3, Small or Large, of any width.
    mobilenet_v3::MobileNetV3(MobileNetV3Config),
    /// An EfficientNet (B0 by default).
    efficientnet::EfficientNet(EfficientNetConfig),
}
