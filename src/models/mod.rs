//! Native burn implementations of the supported architectures and what they share.
//!
//! Each model's module tree mirrors torchvision's, so [`state_dict`] lists exactly the keys and
//! shapes of the torchvision model's `state_dict()`.

pub mod buffer;
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

    /// Runs the backbone blocks `blocks` (indices into [`ImageClassifier::block_paths`]) on `x`,
    /// the input images when `blocks` starts at 0, else the output of block `blocks.start - 1`.
    /// `features(x) == pool(forward_blocks(x, 0..block_paths().len()))`: a frozen prefix of the
    /// backbone can run on another (folded, gradient-free) copy of the model.
    fn forward_blocks(&self, x: Tensor<B, 4>, blocks: std::ops::Range<usize>) -> Tensor<B, 4>;

    /// Global average pooling of the last block's output to the `[N, feature_dim]` embedding.
    fn pool(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let [n, c, _, _] = x.dims();
        x.mean_dim(3).mean_dim(2).reshape([n, c])
    }

    /// Applies only the head to pooled features: `forward(x) == classify(features(x))`.
    fn classify(&self, features: Tensor<B, 2>) -> Tensor<B, 2>;

    /// Number of classes the head predicts.
    fn num_classes(&self) -> usize;

    /// Width of the pooled embedding.
    fn feature_dim(&self) -> usize;

    /// Replaces the classifier with a freshly initialised one for `num_classes` classes.
    fn with_new_head(self, num_classes: usize, device: &B::Device) -> Self;

    /// The head (the final linear layer).
    fn head(&self) -> &layers::Linear<B>;

    /// Path of the head layer (`classifier.1` or `fc`).
    fn head_path(&self) -> &'static str;

    /// Paths of the backbone's blocks from input to output (`features.0` … `features.18`;
    /// `conv1`, `bn1`, `layer1.0` … `layer4.1`), the units that fine-tuning unfreezes.
    fn block_paths(&self) -> Vec<String>;

    /// The same network with every BatchNorm folded into its convolution: equal eval outputs,
    /// faster inference. For frozen backbones and evaluation, not for layers that still train.
    fn fuse_for_inference(self) -> Self;

    /// One row per layer with its output shape for an input of `[3, H, W]`.
    fn summary_rows(&self, input: [usize; 3]) -> Vec<LayerRow>;

    /// A printable `torchsummary`-style table for an input of `[3, H, W]`.
    fn summary(&self, input: [usize; 3]) -> Summary {
        Summary::new(input, self.summary_rows(input), param_count(self))
    }
}

/// A serialisable description of a network: enough to rebuild it before loading its weights.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "architecture", content = "config", rename_all = "snake_case")]
pub enum ModelSpec {
    /// A [`MobileNetV2`].
    MobileNetV2(MobileNetV2Config),
    /// A [`ResNet`] (18 or 34).
    ResNet(ResNetConfig),
}

impl ModelSpec {
    /// Architecture family, as [`Architecture::NAME`]: `mobilenet_v2` or `resnet`.
    pub fn family(&self) -> &'static str {
        match self {
            Self::MobileNetV2(_) => "mobilenet_v2",
            Self::ResNet(_) => "resnet",
        }
    }

    /// Short name: `mobilenet_v2`, `resnet18`, `resnet34` or `resnet`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::MobileNetV2(_) => "mobilenet_v2",
            Self::ResNet(c) if c.layers == [2, 2, 2, 2] => "resnet18",
            Self::ResNet(c) if c.layers == [3, 4, 6, 3] => "resnet34",
            Self::ResNet(_) => "resnet",
        }
    }
}

/// A classifier that can describe itself as a [`ModelSpec`] and be rebuilt from one.
pub trait Architecture<B: Backend>: ImageClassifier<B> {
    /// Architecture family name (`mobilenet_v2`, `resnet`).
    const NAME: &'static str;

    /// The description of this network.
    fn spec(&self) -> ModelSpec;

    /// A freshly initialised network for `spec`, or `None` when `spec` is another architecture.
    fn from_spec(spec: &ModelSpec, device: &B::Device) -> Option<Self>;
}

impl<B: Backend> Architecture<B> for MobileNetV2<B> {
    const NAME: &'static str = "mobilenet_v2";

    fn spec(&self) -> ModelSpec {
        ModelSpec::MobileNetV2(self.config())
    }

    fn from_spec(spec: &ModelSpec, device: &B::Device) -> Option<Self> {
        match spec {
            ModelSpec::MobileNetV2(config) => Some(config.init(device)),
            ModelSpec::ResNet(_) => None,
        }
    }
}

impl<B: Backend> Architecture<B> for ResNet<B> {
    const NAME: &'static str = "resnet";

    fn spec(&self) -> ModelSpec {
        ModelSpec::ResNet(self.config())
    }

    fn from_spec(spec: &ModelSpec, device: &B::Device) -> Option<Self> {
        match spec {
            ModelSpec::ResNet(config) => Some(config.init(device)),
            ModelSpec::MobileNetV2(_) => None,
        }
    }
}
