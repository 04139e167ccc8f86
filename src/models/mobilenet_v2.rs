//! MobileNetV2 (Sandler et al., 2018) laid out exactly like torchvision's `mobilenet_v2`:
//! `features.0` (stem conv), `features.1..=17` (inverted residual blocks), `features.18`
//! (1×1 conv to the last channel), `classifier.1` (the linear head after dropout).

use crate::kernels::ConvBackend;
use std::ops::Range;

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::Tensor;

use super::layers::{
    Activation, BatchNorm2d, BatchNorm2dConfig, Conv2d, Conv2dConfig, ConvBnMut, ConvNormActivation, Linear,
    LinearConfig, Padding, trains,
};
use super::summary;
use super::torch_paths::{numbered_module, transparent_module_enum};
use super::architecture::{check_classes, check_multiplier, check_probability};
use super::{Architecture, ArchitectureConfig, ImageClassifier};
use crate::weights::WeightsError;
use crate::weights::import::OnnxBackbone;

/// torchvision's inverted residual settings: expansion t, output channels c, repeats n, stride s.
const INVERTED_RESIDUAL_SETTING: [[usize; 4]; 7] = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
];

/// torchvision's `_make_divisible`: round `value` to the nearest multiple of `divisor`, never
/// going more than 10% below `value`.
pub fn make_divisible(value: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new = ((value + d / 2.0) / d).floor() * d;
    new = new.max(d);
    if new < 0.9 * value {
        new += d;
    }
    new as usize
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Configuration of a [`MobileNetV2`].
#[derive(Config, Debug, PartialEq)]
pub struct MobileNetV2Config {
    /// Number of output classes.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Width multiplier α applied to every layer's channels.
    #[config(default = 1.0)]
    pub width_mult: f64,
    /// Channels are rounded to a multiple of this.
    #[config(default = 8)]
    pub round_nearest: usize,
    /// Dropout probability before the classifier (active only while training).
    #[config(default = 0.2)]
    pub dropout: f64,
    /// Padding layout of the 3×3 convolutions (TfSame for TensorFlow-trained weights).
    #[config(default = "Padding::Symmetric")]
    pub padding: Padding,
    /// False for weights whose BatchNorm was folded into the convolutions: the BatchNorms then
    /// hold no statistics and must stay frozen (see [`BatchNorm2d::has_statistics`]).
    #[config(default = true)]
    pub batch_norm_statistics: bool,
}

impl MobileNetV2Config {
    /// Stem channels, each inverted residual block as `[in, out, stride, expansion]`, and the
    /// channels of the last 1x1 convolution, for this width.
    fn layout(&self) -> (usize, Vec<[usize; 4]>, usize) {
        let r = self.round_nearest;
        let input_channel = make_divisible(32.0 * self.width_mult, r);
        let last_channel = make_divisible(1280.0 * self.width_mult.max(1.0), r);
        let mut blocks = Vec::new();
        let mut inp = input_channel;
        for [t, c, n, s] in INVERTED_RESIDUAL_SETTING {
            let out = make_divisible(c as f64 * self.width_mult, r);
            for i in 0..n {
                blocks.push([inp, out, if i == 0 { s } else { 1 }, t]);
                inp = out;
            }
        }
        (input_channel, blocks, last_channel)
    }

    /// Output channels of the network's 52 convolutions in execution order (stem, then each
    /// block's expansion (where `t > 1`), depthwise and projection, then the last 1x1), computed
    /// without building it: what an ONNX file's convolutions must show for this width.
    pub fn conv_out_channels(&self) -> Vec<usize> {
        let (stem, blocks, last) = self.layout();
        let mut channels = vec![stem];
        for [inp, out, _, t] in blocks {
            let hidden = inp * t;
            if t != 1 {
                channels.push(hidden);
            }
            channels.extend([hidden, out]);
        }
        channels.push(last);
        channels
    }

    /// The width multiplier whose 52 convolutions have the output channels `channels` (in
    /// execution order): the standard widths first, then any multiple of 0.01 up to 4. Rounding
    /// to multiples of 8 makes several widths give the same network; the first is as good as
    /// any, since they build the same one.
    pub fn width_for(channels: &[usize]) -> Option<f64> {
        let standard = [1.0, 0.35, 0.5, 0.75, 1.3, 1.4, 2.0];
        let fine = (1..=400).map(|k| f64::from(k) / 100.0);
        standard.into_iter().chain(fine).find(|&w| {
            MobileNetV2Config::new()
                .with_width_mult(w)
                .conv_out_channels()
                == channels
        })
    }

    /// Builds the network with torchvision's initialisation (Kaiming-normal convs, identity
    /// BatchNorms; the head takes PyTorch's default Linear init, which fine-tuning recipes
    /// re-create anyway).
    pub fn init<B: ConvBackend>(&self, device: &B::Device) -> MobileNetV2<B> {
        let (input_channel, blocks, last_channel) = self.layout();
        let conv = |inp: usize, out: usize, kernel: usize| {
            Conv2dConfig::new([inp, out], kernel).with_padding(self.padding)
        };
        let mut features = vec![Feature::Stem(ConvNormActivation::new(
            conv(3, input_channel, 3).with_stride(2),
            device,
        ))];
        for &[inp, out, stride, t] in &blocks {
            features.push(Feature::Block(InvertedResidual::new(
                inp,
                out,
                stride,
                t,
                self.padding,
                device,
            )));
        }
        let inp = blocks.last().map_or(input_channel, |b| b[1]);
        features.push(Feature::Stem(ConvNormActivation::new(
            conv(inp, last_channel, 1),
            device,
        )));
        let mut model = MobileNetV2 {
            features,
            classifier: Classifier {
                dropout: DropoutConfig::new(self.dropout).init(),
                linear: LinearConfig::new(last_channel, self.num_classes).init(device),
            },
        };
        for pair in model.conv_bn_pairs_mut() {
            pair.bn.has_statistics = self.batch_norm_statistics;
        }
        model
    }
}

impl ArchitectureConfig for MobileNetV2Config {
    const FAMILY: &'static str = "mobilenet_v2";
    const SIGNATURE: &'static str = "MobileNetV2 (52 convolutions, 17 of them depthwise)";

    fn presets() -> Vec<&'static str> {
        vec!["mobilenet_v2"]
    }

    fn preset(name: &str) -> Option<Self> {
        (name == "mobilenet_v2").then(MobileNetV2Config::new)
    }

    fn name(&self) -> String {
        Self::FAMILY.into()
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn fine_tune_from(&self) -> &'static str {
        "features.14"
    }

    fn with_classes(self, num_classes: usize) -> Self {
        self.with_num_classes(num_classes)
    }

    fn check(&self) -> Result<(), String> {
        check_classes(self.num_classes)?;
        check_multiplier("width_mult", self.width_mult)?;
        check_probability("dropout", self.dropout)?;
        if !(1..=256).contains(&self.round_nearest) {
            return Err(format!(
                "round_nearest is {}; channel counts round to a multiple within 1..=256 \
                 (torchvision: 8)",
                self.round_nearest
            ));
        }
        Ok(())
    }

    fn recognise(onnx: &OnnxBackbone<'_>) -> Option<Result<Self, WeightsError>> {
        if onnx.convs.len() != 52 || onnx.depthwise_count() != 17 {
            return None;
        }
        let found = onnx.out_channels();
        let Some(width_mult) = MobileNetV2Config::width_for(&found) else {
            return Some(Err(onnx.unexpected(
                "MobileNetV2 of some width (channel counts of a torchvision MobileNetV2)",
                format!(
                    "stem of {} channels, last convolution of {}",
                    found[0],
                    found[found.len() - 1]
                ),
            )));
        };
        Some(onnx.padding().map(|padding| {
            MobileNetV2Config::new()
                .with_num_classes(onnx.num_classes)
                .with_width_mult(width_mult)
                .with_padding(padding)
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Modules
// ---------------------------------------------------------------------------------------------

numbered_module! {
    /// `conv` of a block with expansion (t > 1).
    pub struct ExpandedConvs {
        /// 1×1 expansion (ReLU6).
        expand(0): ConvNormActivation<B>,
        /// 3×3 depthwise (ReLU6).
        depthwise(1): ConvNormActivation<B>,
        /// 1×1 linear projection.
        project(2): Conv2d<B>,
        /// The projection's BatchNorm.
        project_bn(3): BatchNorm2d<B>,
    }
}

numbered_module! {
    /// `conv` of a block without expansion (t = 1).
    pub struct DepthwiseConvs {
        /// 3×3 depthwise (ReLU6).
        depthwise(0): ConvNormActivation<B>,
        /// 1×1 linear projection.
        project(1): Conv2d<B>,
        /// The projection's BatchNorm.
        project_bn(2): BatchNorm2d<B>,
    }
}

transparent_module_enum! {
    /// The `conv` sequence of an inverted residual block (its layout depends on the expansion).
    pub enum BlockConvs {
        /// Expansion ratio > 1.
        Expanded(ExpandedConvs),
        /// Expansion ratio 1.
        Depthwise(DepthwiseConvs),
    }
}

/// Inverted residual block: expand (1×1, ReLU6) → depthwise 3×3 (ReLU6) → linear 1×1 project,
/// with a skip connection when the stride is 1 and the channel count is unchanged.
#[derive(Module, Debug)]
pub struct InvertedResidual<B: ConvBackend> {
    /// The convolutions, at torchvision's `conv.*` paths.
    pub conv: BlockConvs<B>,
    /// Whether the input is added to the output.
    pub use_residual: bool,
}

impl<B: ConvBackend> InvertedResidual<B> {
    /// A block from `inp` to `oup` channels.
    pub fn new(
        inp: usize,
        oup: usize,
        stride: usize,
        expand_ratio: usize,
        padding: Padding,
        device: &B::Device,
    ) -> Self {
        let hidden = inp * expand_ratio;
        let depthwise = ConvNormActivation::new(
            Conv2dConfig::new([hidden, hidden], 3)
                .with_stride(stride)
                .with_groups(hidden)
                .with_padding(padding),
            device,
        );
        let project = Conv2dConfig::new([hidden, oup], 1)
            .with_bias(false)
            .init(device);
        let project_bn = BatchNorm2dConfig::new(oup).init(device);
        let conv = if expand_ratio == 1 {
            BlockConvs::Depthwise(DepthwiseConvs {
                depthwise,
                project,
                project_bn,
            })
        } else {
            let expand = ConvNormActivation::new(Conv2dConfig::new([inp, hidden], 1), device);
            BlockConvs::Expanded(ExpandedConvs {
                expand,
                depthwise,
                project,
                project_bn,
            })
        };
        Self {
            conv,
            use_residual: stride == 1 && inp == oup,
        }
    }

    /// Applies the block.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let out = match &self.conv {
            BlockConvs::Expanded(c) => {
                let h = c.expand.forward_activated(x.clone(), Activation::ReLU6);
                let h = c.depthwise.forward_activated(h, Activation::ReLU6);
                c.project_bn.forward(c.project.forward(h))
            }
            BlockConvs::Depthwise(c) => {
                let h = c.depthwise.forward_activated(x.clone(), Activation::ReLU6);
                c.project_bn.forward(c.project.forward(h))
            }
        };
        if self.use_residual { out + x } else { out }
    }

    /// The block's conv/BN pairs in execution order, paths relative to the block.
    fn conv_bn_pairs_mut(&mut self) -> Vec<ConvBnMut<'_, B>> {
        match &mut self.conv {
            BlockConvs::Expanded(c) => vec![
                c.expand.pair_mut("conv.0"),
                c.depthwise.pair_mut("conv.1"),
                ConvBnMut::new(
                    "conv.2".into(),
                    &mut c.project,
                    "conv.3".into(),
                    &mut c.project_bn,
                ),
            ],
            BlockConvs::Depthwise(c) => vec![
                c.depthwise.pair_mut("conv.0"),
                ConvBnMut::new(
                    "conv.1".into(),
                    &mut c.project,
                    "conv.2".into(),
                    &mut c.project_bn,
                ),
            ],
        }
    }
}

transparent_module_enum! {
    /// One entry of `features`: a plain conv-BN-ReLU6 or an inverted residual block.
    pub enum Feature {
        /// `features.0` (the stem) and `features.18` (the last 1×1 convolution).
        Stem(ConvNormActivation),
        /// `features.1..=17`.
        Block(InvertedResidual),
    }
}

impl<B: ConvBackend> Feature<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Feature::Stem(layer) => layer.forward_activated(x, Activation::ReLU6),
            Feature::Block(block) => block.forward(x),
        }
    }
}

numbered_module! {
    /// torchvision's `classifier`: dropout at `.0`, the linear head at `.1`.
    pub struct Classifier {
        /// Dropout before the head (active while the head trains).
        dropout(0): Dropout,
        /// The linear head.
        linear(1): Linear<B>,
    }
}

/// MobileNetV2 with torchvision's module tree and parameter names.
#[derive(Module, Debug)]
pub struct MobileNetV2<B: ConvBackend> {
    /// `features.0..=18`.
    pub features: Vec<Feature<B>>,
    /// `classifier.0` dropout, `classifier.1` linear head.
    pub classifier: Classifier<B>,
}

impl<B: ConvBackend> ImageClassifier<B> for MobileNetV2<B> {
    fn forward_blocks(&self, x: Tensor<B, 4>, blocks: Range<usize>) -> Tensor<B, 4> {
        self.features[blocks]
            .iter()
            .fold(x, |x, feature| feature.forward(x))
    }

    fn classify(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        let Classifier { dropout, linear } = &self.classifier;
        // Dropout follows the crate's one training rule (see `layers::trains`): it drops only
        // while the head it feeds trains.
        let features = if trains(&linear.weight) {
            dropout.forward(features)
        } else {
            features
        };
        summary::record_named("classifier.0", "Dropout", &features.dims());
        linear.forward(features)
    }

    fn head(&self) -> &Linear<B> {
        &self.classifier.linear
    }

    fn with_dropout(mut self, prob: f64) -> Self {
        self.classifier.dropout.prob = prob;
        self
    }

    fn head_mut(&mut self) -> &mut Linear<B> {
        &mut self.classifier.linear
    }

    fn head_path(&self) -> &'static str {
        "classifier.1"
    }

    fn block_paths(&self) -> Vec<String> {
        (0..self.features.len())
            .map(|i| format!("features.{i}"))
            .collect()
    }

    fn conv_bn_pairs_mut(&mut self) -> Vec<ConvBnMut<'_, B>> {
        let mut pairs = Vec::new();
        for (i, feature) in self.features.iter_mut().enumerate() {
            let prefix = format!("features.{i}");
            match feature {
                Feature::Stem(layer) => pairs.push(layer.pair_mut(&prefix)),
                Feature::Block(block) => pairs.extend(
                    block
                        .conv_bn_pairs_mut()
                        .into_iter()
                        .map(|pair| pair.prefixed(&prefix)),
                ),
            }
        }
        pairs
    }
}

impl<B: ConvBackend> Architecture<B> for MobileNetV2<B> {
    type Config = MobileNetV2Config;

    fn config(&self) -> MobileNetV2Config {
        let pairs = self.conv_bn_pairs();
        let channels: Vec<usize> = pairs.iter().map(|p| p.conv_shape[0]).collect();
        let width_mult = MobileNetV2Config::width_for(&channels)
            .unwrap_or(channels.first().map_or(1.0, |&c| c as f64 / 32.0));
        MobileNetV2Config::new()
            .with_num_classes(self.num_classes())
            .with_width_mult(width_mult)
            .with_dropout(self.classifier.dropout.prob)
            .with_padding(pairs.first().map_or(Padding::Symmetric, |p| p.padding))
            .with_batch_norm_statistics(pairs.iter().all(|p| p.has_statistics))
    }

    fn from_config(config: &MobileNetV2Config, device: &B::Device) -> Self {
        config.init(device)
    }
}
