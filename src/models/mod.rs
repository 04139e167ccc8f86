//! Native burn implementations of the supported architectures and what they share.
//!
//! Each model's module tree mirrors torchvision's, so [`state_dict`] lists exactly the keys and
//! shapes of the torchvision model's `state_dict()`.

pub mod layers;
pub mod mobilenet_v2;
pub mod resnet;
pub mod state_dict;
pub mod summary;
mod transparent;

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

pub use mobilenet_v2::{MobileNetV2, MobileNetV2Config};
pub use resnet::{ResNet, ResNetConfig};
pub use state_dict::{ParamCount, StateEntry, param_count, state_dict};
pub use summary::{LayerRow, Summary};

/// What every image classifier in this crate offers, whatever its architecture.
pub trait ImageClassifier<B: Backend>: Module<B> + Sized {
    /// Class scores (logits) `[N, num_classes]` for images `[N, 3, H, W]` (any H, W ≥ 32).
    fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2>;

    /// The pooled embedding `[N, feature_dim]` the head sees (1280 for MobileNetV2, 512 for
    /// ResNet18/34).
    fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 2>;

    /// Applies only the head to pooled features: `forward(x) == classify(features(x))`.
    fn classify(&self, features: Tensor<B, 2>) -> Tensor<B, 2>;

    /// Number of classes the head predicts.
    fn num_classes(&self) -> usize;

    /// Width of the pooled embedding.
    fn feature_dim(&self) -> usize;

    /// Replaces the classifier with a freshly initialised one for `num_classes` classes.
    fn with_new_head(self, num_classes: usize, device: &B::Device) -> Self;

    /// Path of the head layer (`classifier.1` or `fc`).
    fn head_path(&self) -> &'static str;

    /// Paths of the backbone's blocks from input to output (`features.0` … `features.18`;
    /// `conv1`, `bn1`, `layer1.0` … `layer4.1`), the units that fine-tuning unfreezes.
    fn block_paths(&self) -> Vec<String>;

    /// One row per layer with its output shape for an input of `[3, H, W]`.
    fn summary_rows(&self, input: [usize; 3]) -> Vec<LayerRow>;

    /// A printable `torchsummary`-style table for an input of `[3, H, W]`.
    fn summary(&self, input: [usize; 3]) -> Summary {
        Summary::new(input, self.summary_rows(input), param_count(self))
    }
}
