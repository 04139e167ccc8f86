//! MobileNetV3 (Howard et al., 2019), Small and Large, laid out exactly like torchvision's
//! `mobilenet_v3_small` / `mobilenet_v3_large`: `features.0` (stem conv, Hardswish),
//! `features.1..` (inverted residual blocks with optional squeeze-and-excitation, ReLU or
//! Hardswish), the last 1×1 conv (Hardswish), then `classifier.0` (a hidden linear layer),
//! Hardswish, dropout and `classifier.3` (the head).

use crate::kernels::ConvBackend;
use std::ops::Range;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Distribution, Tensor};

use super::classifier::HiddenLinear;
use super::layers::{
    Activation, Conv2dConfig, ConvBnMut, ConvMut, ConvNormActivation, Linear,
    MBConv, MBConvNetwork, MBConvSettings, Padding, SqueezeSettings, trains,
};
use super::mobilenet_v2::make_divisible;
use super::summary;
use super::torch_paths::{numbered_module, transparent_module_enum};
use super::architecture::{check_classes, check_multiplier, check_probability};
use super::{Architecture, ArchitectureConfig, ImageClassifier};
use crate::weights::WeightsError;
use crate::weights::import::OnnxBackbone;

/// torchvision's BatchNorm settings for MobileNetV3.
const BN_EPSILON: f64 = 0.001;
const BN_MOMENTUM: f64 = 0.01;

/// One row of torchvision's `_mobilenet_v3_conf`: input, kernel, expanded and output channels
/// (before the width multiplier), squeeze-and-excitation, Hardswish (else ReLU), stride.
type BneckRow = (usize, usize, usize, usize, bool, bool, usize);

const LARGE: [BneckRow; 15] = [
    (16, 3, 16, 16, false, false, 1),
    (16, 3, 64, 24, false, false, 2),
    (24, 3, 72, 24, false, false, 1),
    (24, 5, 72, 40, true, false, 2),
    (40, 5, 120, 40, true, false, 1),
    (40, 5, 120, 40, true, false, 1),
    (40, 3, 240, 80, false, true, 2),
    (80, 3, 200, 80, false, true, 1),
    (80, 3, 184, 80, false, true, 1),
    (80, 3, 184, 80, false, true, 1),
    (80, 3, 480, 112, true, true, 1),
    (112, 3, 672, 112, true, true, 1),
    (112, 5, 672, 160, true, true, 2),
    (160, 5, 960, 160, true, true, 1),
    (160, 5, 960, 160, true, true, 1),
];

const SMALL: [BneckRow; 11] = [
    (16, 3, 16, 16, true, false, 2),
    (16, 3, 72, 24, false, false, 2),
    (24, 3, 88, 24, false, false, 1),
    (24, 5, 96, 40, true, true, 2),
    (40, 5, 240, 40, true, true, 1),
    (40, 5, 240, 40, true, true, 1),
    (40, 5, 120, 48, true, true, 1),
    (48, 5, 144, 48, true, true, 1),
    (48, 5, 288, 96, true, true, 2),
    (96, 5, 576, 96, true, true, 1),
    (96, 5, 576, 96, true, true, 1),
];

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// The two MobileNetV3 sizes of the paper and torchvision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MobileNetV3Variant {
    /// `mobilenet_v3_small`: 11 blocks, 576 pooled features, a 1024-wide hidden layer.
    Small,
    /// `mobilenet_v3_large`: 15 blocks, 960 pooled features, a 1280-wide hidden layer.
    Large,
}

impl MobileNetV3Variant {
    fn rows(self) -> &'static [BneckRow] {
        match self {
            MobileNetV3Variant::Small => &SMALL,
            MobileNetV3Variant::Large => &LARGE,
        }
    }

    /// torchvision's name of the variant.
    pub fn name(self) -> &'static str {
        match self {
            MobileNetV3Variant::Small => "mobilenet_v3_small",
            MobileNetV3Variant::Large => "mobilenet_v3_large",
        }
    }
}

/// Configuration of a [`MobileNetV3`].
#[derive(Config, Debug, PartialEq)]
pub struct MobileNetV3Config {
    /// Small or Large.
    pub variant: MobileNetV3Variant,
    /// Number of output classes.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Width multiplier α applied to every layer's channels (rounded to multiples of 8).
    #[config(default = 1.0)]
    pub width_mult: f64,
    /// Dropout probability before the head (active only while training).
    #[config(default = 0.2)]
    pub dropout: f64,
    /// Padding layout of the k×k convolutions (TfSame for TensorFlow-trained weights).
    #[config(default = "Padding::Symmetric")]
    pub padding: Padding,
    /// False for weights whose BatchNorm was folded into the convolutions: the BatchNorms then
    /// hold no statistics and must stay frozen (see
    /// [`BatchNorm2d::has_statistics`](super::layers::BatchNorm2d::has_statistics)).
    #[config(default = true)]
    pub batch_norm_statistics: bool,
}

/// The channel counts of one configuration: stem, blocks, last convolution, hidden layer.
struct Layout {
    stem: usize,
    blocks: Vec<MBConvSettings>,
    last_conv: usize,
    hidden: usize,
}

impl MobileNetV3Config {
    /// `mobilenet_v3_small` with `num_classes` classes.
    pub fn small(num_classes: usize) -> Self {
        Self::new(MobileNetV3Variant::Small).with_num_classes(num_classes)
    }

    /// `mobilenet_v3_large` with `num_classes` classes.
    pub fn large(num_classes: usize) -> Self {
        Self::new(MobileNetV3Variant::Large).with_num_classes(num_classes)
    }

    fn layout(&self) -> Layout {
        let adjust = |c: usize| make_divisible(c as f64 * self.width_mult, 8);
        let rows = self.variant.rows();
        let blocks: Vec<MBConvSettings> = rows
            .iter()
            .map(|&(input, kernel, expanded, output, se, hs, stride)| {
                let expanded = adjust(expanded);
                MBConvSettings {
                    input: adjust(input),
                    expanded,
                    output: adjust(output),
                    kernel,
                    stride,
                    activation: if hs {
                        Activation::Hardswish
                    } else {
                        Activation::ReLU
                    },
                    squeeze: se.then(|| SqueezeSettings {
                        channels: make_divisible((expanded / 4) as f64, 8),
                        activation: Activation::ReLU,
                        gate: Activation::Hardsigmoid,
                    }),
                    epsilon: BN_EPSILON,
                    momentum: BN_MOMENTUM,
                    stochastic_depth: 0.0,
                    padding: self.padding,
                }
            })
            .collect();
        let last_block = blocks.last().map_or(16, |b| b.output);
        let hidden = match self.variant {
            MobileNetV3Variant::Small => adjust(1024),
            MobileNetV3Variant::Large => adjust(1280),
        };
        Layout {
            stem: blocks.first().map_or(16, |b| b.input),
            blocks,
            last_conv: 6 * last_block,
            hidden,
        }
    }

    /// The network's layout: stem, blocks (`features.1..`) and last convolution.
    pub fn network(&self) -> MBConvNetwork {
        let blocks = self.layout().blocks;
        let last = format!("features.{}", blocks.len() + 1);
        MBConvNetwork {
            stem: "features.0".into(),
            blocks: blocks
                .into_iter()
                .enumerate()
                .map(|(i, block)| (format!("features.{}", i + 1), block))
                .collect(),
            last,
            activation: Activation::Hardswish,
        }
    }

    /// Output channels of every convolution in execution order (squeeze-and-excitation's
    /// included), computed without building the network: what an ONNX file's convolutions show.
    pub fn conv_out_channels(&self) -> Vec<usize> {
        let layout = self.layout();
        let mut channels = vec![layout.stem];
        for block in &layout.blocks {
            channels.extend(block.conv_out_channels());
        }
        channels.push(layout.last_conv);
        channels
    }

    /// The variant and width whose convolutions have the output channels `channels` (in
    /// execution order): the standard widths first, then any multiple of 0.05 up to 4.
    pub fn find(channels: &[usize]) -> Option<(MobileNetV3Variant, f64)> {
        let standard = [1.0, 0.75, 0.5, 0.35, 1.25, 1.5, 2.0];
        let fine = (1..=80).map(|k| f64::from(k) / 20.0);
        let widths: Vec<f64> = standard.into_iter().chain(fine).collect();
        [MobileNetV3Variant::Small, MobileNetV3Variant::Large]
            .into_iter()
            .find_map(|variant| {
                widths.iter().copied().find_map(|w| {
                    (MobileNetV3Config::new(variant)
                        .with_width_mult(w)
                        .conv_out_channels()
                        == channels)
                        .then_some((variant, w))
                })
            })
    }

    /// Builds the network with torchvision's initialisation (Kaiming-normal convolutions,
    /// identity BatchNorms, N(0, 0.01) linear weights, zero biases).
    pub fn init<B: ConvBackend>(&self, device: &B::Device) -> MobileNetV3<B> {
        let layout = self.layout();
        let conv = |conv| ConvNormActivation::with_norm(conv, BN_EPSILON, BN_MOMENTUM, device);
        let mut features = vec![Feature::Conv(conv(
            Conv2dConfig::new([3, layout.stem], 3)
                .with_stride(2)
                .with_padding(self.padding),
        ))];
        let last_block = layout.blocks.last().map_or(layout.stem, |b| b.output);
        features.extend(
            layout
                .blocks
                .iter()
                .map(|block| Feature::Block(block.init(device))),
        );
        features.push(Feature::Conv(conv(Conv2dConfig::new(
            [last_block, layout.last_conv],
            1,
        ))));
        let linear = |inputs: usize, outputs: usize| Linear {
            weight: Param::from_tensor(Tensor::random(
                [outputs, inputs],
                Distribution::Normal(0.0, 0.01),
                device,
            )),
            bias: Param::from_tensor(Tensor::zeros([outputs], device)),
        };
        let mut model = MobileNetV3 {
            features,
            classifier: Classifier {
                hidden: linear(layout.last_conv, layout.hidden),
                activation: Activation::Hardswish,
                dropout: DropoutConfig::new(self.dropout).init(),
                head: linear(layout.hidden, self.num_classes),
            },
        };
        for pair in model.conv_bn_pairs_mut() {
            pair.bn.has_statistics = self.batch_norm_statistics;
        }
        model
    }
}

impl ArchitectureConfig for MobileNetV3Config {
    const FAMILY: &'static str = "mobilenet_v3";
    const SIGNATURE: &'static str = "MobileNetV3 (Small: 52 convolutions, 11 of them depthwise; \
                                     Large: 62 and 15)";

    fn presets() -> Vec<&'static str> {
        vec!["mobilenet_v3_small", "mobilenet_v3_large"]
    }

    fn preset(name: &str) -> Option<Self> {
        match name {
            "mobilenet_v3_small" => Some(Self::small(1000)),
            "mobilenet_v3_large" => Some(Self::large(1000)),
            _ => None,
        }
    }

    fn name(&self) -> String {
        self.variant.name().into()
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn fine_tune_from(&self) -> &'static str {
        // The last stage (C4 of the paper): its blocks and the last 1×1 convolution.
        match self.variant {
            MobileNetV3Variant::Small => "features.9",
            MobileNetV3Variant::Large => "features.13",
        }
    }

    fn with_classes(self, num_classes: usize) -> Self {
        self.with_num_classes(num_classes)
    }

    fn check(&self) -> Result<(), String> {
        check_classes(self.num_classes)?;
        check_multiplier("width_mult", self.width_mult)?;
        check_probability("dropout", self.dropout)
    }

    fn recognise(onnx: &OnnxBackbone<'_>) -> Option<Result<Self, WeightsError>> {
        let depthwise = onnx.depthwise_count();
        let known = [SMALL.len(), LARGE.len()];
        if !known.contains(&depthwise) || onnx.hidden_linears.len() != 1 {
            return None;
        }
        let (variant, width_mult) = MobileNetV3Config::find(&onnx.out_channels())?;
        Some(onnx.padding().map(|padding| {
            MobileNetV3Config::new(variant)
                .with_num_classes(onnx.num_classes)
                .with_width_mult(width_mult)
                .with_padding(padding)
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Modules
// ---------------------------------------------------------------------------------------------

transparent_module_enum! {
    /// One entry of `features`: a conv-BN-Hardswish or an inverted residual block.
    pub enum Feature {
        /// `features.0` (the stem) and the last 1×1 convolution.
        Conv(ConvNormActivation),
        /// The inverted residual blocks.
        Block(MBConv),
    }
}

impl<B: ConvBackend> Feature<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Feature::Conv(layer) => layer.forward_activated(x, Activation::Hardswish),
            Feature::Block(block) => block.forward(x),
        }
    }
}

numbered_module! {
    /// torchvision's `classifier`: hidden linear, Hardswish, dropout, head.
    pub struct Classifier {
        /// `classifier.0`, pooled features → hidden width.
        hidden(0): Linear<B>,
        /// `classifier.1`, Hardswish.
        activation(1): Activation,
        /// `classifier.2`, dropout (active while the head trains).
        dropout(2): Dropout,
        /// `classifier.3`, the head.
        head(3): Linear<B>,
    }
}

/// MobileNetV3 with torchvision's module tree and parameter names.
#[derive(Module, Debug)]
pub struct MobileNetV3<B: ConvBackend> {
    /// `features.0..`: stem, blocks, last 1×1 convolution.
    pub features: Vec<Feature<B>>,
    /// `classifier.0..=3`.
    pub classifier: Classifier<B>,
}

impl<B: ConvBackend> ImageClassifier<B> for MobileNetV3<B> {
    fn forward_blocks(&self, x: Tensor<B, 4>, blocks: Range<usize>) -> Tensor<B, 4> {
        self.features[blocks]
            .iter()
            .fold(x, |x, feature| feature.forward(x))
    }

    fn classify(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        let Classifier {
            hidden,
            activation,
            dropout,
            head,
        } = &self.classifier;
        let x = activation.apply(hidden.forward(features));
        summary::record_named("classifier.1", activation.torch_name(), &x.dims());
        // Dropout drops only while the head it feeds trains (see `layers::trains`).
        let x = if trains(&head.weight) {
            dropout.forward(x)
        } else {
            x
        };
        summary::record_named("classifier.2", "Dropout", &x.dims());
        head.forward(x)
    }

    fn head(&self) -> &Linear<B> {
        &self.classifier.head
    }

    fn head_mut(&mut self) -> &mut Linear<B> {
        &mut self.classifier.head
    }

    fn head_path(&self) -> &'static str {
        "classifier.3"
    }

    fn hidden_linears(&self) -> Vec<HiddenLinear<'_, B>> {
        vec![HiddenLinear {
            path: "classifier.0",
            linear: &self.classifier.hidden,
            activation: self.classifier.activation,
        }]
    }

    fn with_dropout(mut self, prob: f64) -> Self {
        self.classifier.dropout.prob = prob;
        self
    }

    fn block_paths(&self) -> Vec<String> {
        (0..self.features.len())
            .map(|i| format!("features.{i}"))
            .collect()
    }

    fn convs_mut(&mut self) -> Vec<ConvMut<'_, B>> {
        let mut convs = Vec::new();
        for (i, feature) in self.features.iter_mut().enumerate() {
            let prefix = format!("features.{i}");
            match feature {
                Feature::Conv(layer) => convs.push(ConvMut::Normalized(layer.pair_mut(&prefix))),
                Feature::Block(block) => convs.extend(
                    block
                        .convs_mut()
                        .into_iter()
                        .map(|conv| conv.prefixed(&prefix)),
                ),
            }
        }
        convs
    }

    fn conv_bn_pairs_mut(&mut self) -> Vec<ConvBnMut<'_, B>> {
        ConvMut::pairs(self.convs_mut())
    }
}

impl<B: ConvBackend> Architecture<B> for MobileNetV3<B> {
    type Config = MobileNetV3Config;

    fn config(&self) -> MobileNetV3Config {
        let channels = self.conv_out_channels();
        let padding = self
            .conv_bn_pairs()
            .first()
            .map_or(Padding::Symmetric, |p| p.padding);
        let (variant, width_mult) = MobileNetV3Config::find(&channels).unwrap_or(
            if self.features.len() == SMALL.len() + 2 {
                (MobileNetV3Variant::Small, 1.0)
            } else {
                (MobileNetV3Variant::Large, 1.0)
            },
        );
        MobileNetV3Config::new(variant)
            .with_num_classes(self.num_classes())
            .with_width_mult(width_mult)
            .with_dropout(self.classifier.dropout.prob)
            .with_padding(padding)
            .with_batch_norm_statistics(self.has_batch_norm_statistics())
    }

    fn from_config(config: &MobileNetV3Config, device: &B::Device) -> Self {
        config.init(device)
    }
}
