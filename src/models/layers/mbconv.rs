//! The mobile inverted bottleneck with squeeze-and-excitation ("MBConv"): torchvision's
//! MobileNetV3 `InvertedResidual` and EfficientNet `MBConv`, which share one layout:
//! `block.0` 1×1 expansion (where the block expands), then a k×k depthwise convolution, an
//! optional squeeze-and-excitation gate and a linear 1×1 projection, each convolution with its
//! BatchNorm; a residual connection when the shape is unchanged, with stochastic depth on it
//! while training (EfficientNet).

use burn::module::Module;
use burn::tensor::Tensor;

use super::{
    Activation, Conv2dConfig, ConvMut, ConvNormActivation, Padding, SqueezeExcitation,
    stochastic_depth, trains,
};
use crate::kernels::ConvBackend;
use crate::models::torch_paths::transparent_module_enum;

transparent_module_enum! {
    /// One layer of an [`MBConv`]'s `block` sequence.
    pub enum MBConvLayer {
        /// A convolution with its BatchNorm (expansion, depthwise or projection).
        Conv(ConvNormActivation),
        /// The squeeze-and-excitation gate.
        SqueezeExcitation(SqueezeExcitation),
    }
}

/// The squeeze-and-excitation gate of an [`MBConvSettings`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SqueezeSettings {
    /// Channels the gate squeezes to.
    pub channels: usize,
    /// Activation after `fc1`.
    pub activation: Activation,
    /// The gate's activation after `fc2`.
    pub gate: Activation,
}

/// What an [`MBConv`] is built from (torchvision's `InvertedResidualConfig` / `MBConvConfig`
/// after the width multiplier).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MBConvSettings {
    /// Input channels.
    pub input: usize,
    /// Channels after the expansion (equal to `input`: no expansion layer).
    pub expanded: usize,
    /// Output channels.
    pub output: usize,
    /// Depthwise kernel side (3 or 5).
    pub kernel: usize,
    /// Depthwise stride.
    pub stride: usize,
    /// Activation after the expansion and the depthwise convolution.
    pub activation: Activation,
    /// The squeeze-and-excitation gate, if the block has one.
    pub squeeze: Option<SqueezeSettings>,
    /// BatchNorm ε.
    pub epsilon: f64,
    /// BatchNorm momentum.
    pub momentum: f64,
    /// Probability of dropping the residual branch while training (stochastic depth).
    pub stochastic_depth: f64,
    /// Padding layout of the depthwise convolution.
    pub padding: Padding,
}

impl MBConvSettings {
    /// Whether the block starts with a 1×1 expansion (`block.0`).
    pub fn expands(&self) -> bool {
        self.expanded != self.input
    }

    /// Whether the input is added to the output (stride 1, as many channels out as in).
    pub fn has_residual(&self) -> bool {
        self.stride == 1 && self.input == self.output
    }

    /// Output channels of the block's convolutions in execution order (squeeze-and-excitation's
    /// two included), what an ONNX file's convolutions show for it.
    pub fn conv_out_channels(&self) -> Vec<usize> {
        let mut channels = Vec::with_capacity(5);
        if self.expands() {
            channels.push(self.expanded);
        }
        channels.push(self.expanded);
        if let Some(squeeze) = self.squeeze {
            channels.extend([squeeze.channels, self.expanded]);
        }
        channels.push(self.output);
        channels
    }

    /// Builds the block (torchvision's initialisation: Kaiming-normal convolutions, identity
    /// BatchNorms, zero biases).
    pub fn init<B: ConvBackend>(&self, device: &B::Device) -> MBConv<B> {
        let conv = |conv| ConvNormActivation::with_norm(conv, self.epsilon, self.momentum, device);
        let mut block = Vec::with_capacity(4);
        if self.expands() {
            block.push(MBConvLayer::Conv(conv(Conv2dConfig::new(
                [self.input, self.expanded],
                1,
            ))));
        }
        block.push(MBConvLayer::Conv(conv(
            Conv2dConfig::new([self.expanded, self.expanded], self.kernel)
                .with_stride(self.stride)
                .with_groups(self.expanded)
                .with_padding(self.padding),
        )));
        if let Some(squeeze) = self.squeeze {
            block.push(MBConvLayer::SqueezeExcitation(SqueezeExcitation::new(
                self.expanded,
                squeeze.channels,
                squeeze.activation,
                squeeze.gate,
                device,
            )));
        }
        block.push(MBConvLayer::Conv(conv(Conv2dConfig::new(
            [self.expanded, self.output],
            1,
        ))));
        MBConv {
            block,
            activation: self.activation,
            use_residual: self.has_residual(),
            stochastic_depth: self.stochastic_depth,
        }
    }
}

/// The layout of a network built from a stem convolution, MBConv blocks and a last 1×1
/// convolution, each convolution followed by `activation` (MobileNetV3: Hardswish,
/// EfficientNet: SiLU): what ONNX export walks to write the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct MBConvNetwork {
    /// Path of the stem's conv-BN block (`features.0`).
    pub stem: String,
    /// Every block's path (`features.3`, `features.2.1`) and settings, in order.
    pub blocks: Vec<(String, MBConvSettings)>,
    /// Path of the last conv-BN block (`features.12`, `features.8`).
    pub last: String,
    /// The activation after the stem and the last convolution.
    pub activation: Activation,
}

/// A mobile inverted bottleneck block at torchvision's paths (`block.0.0.weight`,
/// `block.2.fc1.weight`, ...): a 1×1 expansion where the block expands, a depthwise
/// convolution, an optional squeeze-and-excitation gate and a linear 1×1 projection, with a
/// residual connection when the shape is unchanged.
#[derive(Module, Debug)]
pub struct MBConv<B: ConvBackend> {
    /// The layers: expansion (optional), depthwise, squeeze-and-excitation (optional),
    /// projection.
    pub block: Vec<MBConvLayer<B>>,
    /// Activation after the expansion and the depthwise convolution.
    pub activation: Activation,
    /// Whether the input is added to the output (stride 1, same channels).
    pub use_residual: bool,
    /// Probability of dropping the residual branch of an image while the block trains.
    pub stochastic_depth: f64,
}

impl<B: ConvBackend> MBConv<B> {
    /// Applies the block.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let last = self.block.len().saturating_sub(1);
        let mut h = x.clone();
        let mut training = false;
        for (i, layer) in self.block.iter().enumerate() {
            h = match layer {
                MBConvLayer::Conv(conv) if i == last => {
                    training = trains(&conv.conv.weight);
                    conv.forward(h)
                }
                MBConvLayer::Conv(conv) => conv.forward_activated(h, self.activation),
                MBConvLayer::SqueezeExcitation(gate) => gate.forward(h),
            };
        }
        if self.use_residual {
            stochastic_depth(h, self.stochastic_depth, training) + x
        } else {
            h
        }
    }

    /// The block's convolutions in execution order, paths relative to the block.
    pub fn convs_mut(&mut self) -> Vec<ConvMut<'_, B>> {
        let mut convs = Vec::with_capacity(5);
        for (i, layer) in self.block.iter_mut().enumerate() {
            match layer {
                MBConvLayer::Conv(conv) => {
                    convs.push(ConvMut::Normalized(conv.pair_mut(&format!("block.{i}"))));
                }
                MBConvLayer::SqueezeExcitation(SqueezeExcitation { fc1, fc2, .. }) => {
                    convs.push(ConvMut::plain(format!("block.{i}.fc1"), fc1));
                    convs.push(ConvMut::plain(format!("block.{i}.fc2"), fc2));
                }
            }
        }
        convs
    }
}
