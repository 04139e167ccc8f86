//! EfficientNet (Tan & Le, 2019) laid out exactly like torchvision's `efficientnet_b0`:
//! `features.0` (stem conv, SiLU), `features.1..=7` (stages of MBConv blocks with
//! squeeze-and-excitation, `features.2.0`, `features.2.1`, ...), `features.8` (1×1 conv to 1280
//! channels, SiLU), `classifier.1` (the linear head after dropout). Residual branches use
//! stochastic depth while they train, rising linearly to 0.2 over the blocks.

use crate::kernels::ConvBackend;
use std::ops::Range;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Distribution, Tensor};

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

/// torchvision's `_efficientnet_conf` for B0 (before the width and depth multipliers):
/// expansion, kernel, stride, input channels, output channels, blocks.
const STAGES: [[usize; 6]; 7] = [
    [1, 3, 1, 32, 16, 1],
    [6, 3, 2, 16, 24, 2],
    [6, 5, 2, 24, 40, 2],
    [6, 3, 2, 40, 80, 3],
    [6, 5, 1, 80, 112, 3],
    [6, 5, 2, 112, 192, 4],
    [6, 3, 1, 192, 320, 1],
];

/// torchvision's BatchNorm momentum for B0–B4 (torch's default).
const BN_MOMENTUM: f64 = 0.1;

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Configuration of an [`EfficientNet`]; the defaults are B0's.
#[derive(Config, Debug, PartialEq)]
pub struct EfficientNetConfig {
    /// Number of output classes.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Width multiplier applied to every layer's channels (rounded to multiples of 8).
    #[config(default = 1.0)]
    pub width_mult: f64,
    /// Depth multiplier applied to each stage's number of blocks (rounded up).
    #[config(default = 1.0)]
    pub depth_mult: f64,
    /// Dropout probability before the head (active only while training).
    #[config(default = 0.2)]
    pub dropout: f64,
    /// Stochastic depth probability of the last block (the first block's is 0).
    #[config(default = 0.2)]
    pub stochastic_depth_prob: f64,
    /// Padding layout of the k×k convolutions (TfSame for TensorFlow-trained weights).
    #[config(default = "Padding::Symmetric")]
    pub padding: Padding,
    /// BatchNorm ε (torchvision: 1e-5 for B0–B4).
    #[config(default = 1e-5)]
    pub batch_norm_epsilon: f64,
    /// False for weights whose BatchNorm was folded into the convolutions: the BatchNorms then
    /// hold no statistics and must stay frozen (see
    /// [`BatchNorm2d::has_statistics`](super::layers::BatchNorm2d::has_statistics)).
    #[config(default = true)]
    pub batch_norm_statistics: bool,
}

impl EfficientNetConfig {
    /// `efficientnet_b0` with `num_classes` classes.
    pub fn b0(num_classes: usize) -> Self {
        Self::new().with_num_classes(num_classes)
    }

    fn adjust(&self, channels: usize) -> usize {
        make_divisible(channels as f64 * self.width_mult, 8)
    }

    /// Stem channels and every block's settings, stage by stage.
    fn layout(&self) -> (usize, Vec<Vec<MBConvSettings>>) {
        let depths: Vec<usize> = STAGES
            .iter()
            .map(|s| (s[5] as f64 * self.depth_mult).ceil() as usize)
            .collect();
        let total: usize = depths.iter().sum();
        let mut block_id = 0;
        let mut stages = Vec::with_capacity(STAGES.len());
        for (&[expand, kernel, stride, input, output, _], &depth) in STAGES.iter().zip(&depths) {
            let (input, output) = (self.adjust(input), self.adjust(output));
            let stage = (0..depth)
                .map(|i| {
                    let input = if i == 0 { input } else { output };
                    let settings = MBConvSettings {
                        input,
                        expanded: make_divisible((input * expand) as f64, 8),
                        output,
                        kernel,
                        stride: if i == 0 { stride } else { 1 },
                        activation: Activation::SiLU,
                        squeeze: Some(SqueezeSettings {
                            channels: (input / 4).max(1),
                            activation: Activation::SiLU,
                            gate: Activation::Sigmoid,
                        }),
                        epsilon: self.batch_norm_epsilon,
                        momentum: BN_MOMENTUM,
                        stochastic_depth: self.stochastic_depth_prob * block_id as f64
                            / total as f64,
                        padding: self.padding,
                    };
                    block_id += 1;
                    settings
                })
                .collect();
            stages.push(stage);
        }
        (self.adjust(STAGES[0][3]), stages)
    }

    /// Channels of the last 1×1 convolution (4 × the last stage's).
    fn last_channels(&self) -> usize {
        4 * self.adjust(STAGES[STAGES.len() - 1][4])
    }

    /// The network's layout: stem, blocks (`features.1.0` … `features.7.0`) and last
    /// convolution.
    pub fn network(&self) -> MBConvNetwork {
        let (_, stages) = self.layout();
        let last = format!("features.{}", stages.len() + 1);
        let mut blocks = Vec::new();
        for (i, stage) in stages.into_iter().enumerate() {
            for (j, block) in stage.into_iter().enumerate() {
                blocks.push((format!("features.{}.{j}", i + 1), block));
            }
        }
        MBConvNetwork {
            stem: "features.0".into(),
            blocks,
            last,
            activation: Activation::SiLU,
        }
    }

    /// Output channels of every convolution in execution order (squeeze-and-excitation's
    /// included), computed without building the network: what an ONNX file's convolutions show.
    pub fn conv_out_channels(&self) -> Vec<usize> {
        let (stem, stages) = self.layout();
        let mut channels = vec![stem];
        for block in stages.iter().flatten() {
            channels.extend(block.conv_out_channels());
        }
        channels.push(self.last_channels());
        channels
    }

    /// The width and depth multipliers (among those of torchvision's B0–B7) whose convolutions
    /// have the output channels `channels` in execution order.
    pub fn find(channels: &[usize]) -> Option<(f64, f64)> {
        const WIDTHS: [f64; 7] = [1.0, 1.1, 1.2, 1.4, 1.6, 1.8, 2.0];
        const DEPTHS: [f64; 8] = [1.0, 1.1, 1.2, 1.4, 1.8, 2.2, 2.6, 3.1];
        DEPTHS.iter().find_map(|&d| {
            WIDTHS.iter().find_map(|&w| {
                let config = EfficientNetConfig::new()
                    .with_width_mult(w)
                    .with_depth_mult(d);
                (config.conv_out_channels() == channels).then_some((w, d))
            })
        })
    }

    /// Number of MBConv blocks.
    fn num_blocks(&self) -> usize {
        self.layout().1.iter().map(Vec::len).sum()
    }

    /// Builds the network with torchvision's initialisation (Kaiming-normal convolutions,
    /// identity BatchNorms, a uniform ±1/√classes head, zero biases).
    pub fn init<B: ConvBackend>(&self, device: &B::Device) -> EfficientNet<B> {
        let (stem, stages) = self.layout();
        let conv = |conv| {
            ConvNormActivation::with_norm(conv, self.batch_norm_epsilon, BN_MOMENTUM, device)
        };
        let mut features = vec![Feature::Conv(conv(
            Conv2dConfig::new([3, stem], 3)
                .with_stride(2)
                .with_padding(self.padding),
        ))];
        let mut last = stem;
        for stage in &stages {
            last = stage.last().map_or(last, |b| b.output);
            features.push(Feature::Stage(stage.iter().map(|b| b.init(device)).collect()));
        }
        let last_channels = self.last_channels();
        features.push(Feature::Conv(conv(Conv2dConfig::new([last, last_channels], 1))));
        let bound = 1.0 / (self.num_classes as f64).sqrt();
        let mut model = EfficientNet {
            features,
            classifier: Classifier {
                dropout: DropoutConfig::new(self.dropout).init(),
                linear: Linear {
                    weight: Param::from_tensor(Tensor::random(
                        [self.num_classes, last_channels],
                        Distribution::Uniform(-bound, bound),
                        device,
                    )),
                    bias: Param::from_tensor(Tensor::zeros([self.num_classes], device)),
                },
            },
        };
        for pair in model.conv_bn_pairs_mut() {
            pair.bn.has_statistics = self.batch_norm_statistics;
        }
        model
    }
}

impl ArchitectureConfig for EfficientNetConfig {
    const FAMILY: &'static str = "efficientnet";
    const SIGNATURE: &'static str = "EfficientNet-B0 (81 convolutions, 16 of them depthwise)";

    fn presets() -> Vec<&'static str> {
        vec!["efficientnet_b0"]
    }

    fn preset(name: &str) -> Option<Self> {
        (name == "efficientnet_b0").then(|| Self::b0(1000))
    }

    fn name(&self) -> String {
        if self.width_mult == 1.0 && self.depth_mult == 1.0 {
            "efficientnet_b0".into()
        } else {
            Self::FAMILY.into()
        }
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn fine_tune_from(&self) -> &'static str {
        // The last two stages (192 and 320 channels) and the last 1×1 convolution.
        "features.6"
    }

    fn with_classes(self, num_classes: usize) -> Self {
        self.with_num_classes(num_classes)
    }

    fn check(&self) -> Result<(), String> {
        check_classes(self.num_classes)?;
        check_multiplier("width_mult", self.width_mult)?;
        check_multiplier("depth_mult", self.depth_mult)?;
        check_probability("dropout", self.dropout)?;
        check_probability("stochastic_depth_prob", self.stochastic_depth_prob)?;
        if !(self.batch_norm_epsilon > 0.0 && self.batch_norm_epsilon < 1.0) {
            return Err(format!(
                "batch_norm_epsilon is {}; it must lie within (0, 1)",
                self.batch_norm_epsilon
            ));
        }
        Ok(())
    }

    fn recognise(onnx: &OnnxBackbone<'_>) -> Option<Result<Self, WeightsError>> {
        if !onnx.hidden_linears.is_empty() {
            return None;
        }
        let (width_mult, depth_mult) = EfficientNetConfig::find(&onnx.out_channels())?;
        Some(onnx.padding().map(|padding| {
            EfficientNetConfig::new()
                .with_num_classes(onnx.num_classes)
                .with_width_mult(width_mult)
                .with_depth_mult(depth_mult)
                .with_padding(padding)
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Modules
// ---------------------------------------------------------------------------------------------

/// A stage of MBConv blocks (`features.1` … `features.7`), numbered from 0 like torchvision's
/// `nn.Sequential`.
pub type Stage<B> = Vec<MBConv<B>>;

transparent_module_enum! {
    /// One entry of `features`: a conv-BN-SiLU or a stage of blocks.
    pub enum Feature {
        /// `features.0` (the stem) and `features.8` (the last 1×1 convolution).
        Conv(ConvNormActivation),
        /// `features.1..=7`.
        Stage(Stage),
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

/// EfficientNet with torchvision's module tree and parameter names.
#[derive(Module, Debug)]
pub struct EfficientNet<B: ConvBackend> {
    /// `features.0..=8`.
    pub features: Vec<Feature<B>>,
    /// `classifier.0` dropout, `classifier.1` linear head.
    pub classifier: Classifier<B>,
}

impl<B: ConvBackend> EfficientNet<B> {
    /// Every block as (path, runner): the stem, each MBConv, the last convolution.
    fn blocks(&self) -> Vec<(String, Block<'_, B>)> {
        let mut blocks = Vec::new();
        for (i, feature) in self.features.iter().enumerate() {
            match feature {
                Feature::Conv(conv) => blocks.push((format!("features.{i}"), Block::Conv(conv))),
                Feature::Stage(stage) => blocks.extend(
                    stage
                        .iter()
                        .enumerate()
                        .map(|(j, b)| (format!("features.{i}.{j}"), Block::MBConv(b))),
                ),
            }
        }
        blocks
    }
}

/// One unit of [`EfficientNet::blocks`].
enum Block<'a, B: ConvBackend> {
    Conv(&'a ConvNormActivation<B>),
    MBConv(&'a MBConv<B>),
}

impl<B: ConvBackend> ImageClassifier<B> for EfficientNet<B> {
    fn forward_blocks(&self, x: Tensor<B, 4>, blocks: Range<usize>) -> Tensor<B, 4> {
        let all = self.blocks();
        all[blocks].iter().fold(x, |x, (_, block)| match block {
            Block::Conv(conv) => conv.forward_activated(x, Activation::SiLU),
            Block::MBConv(block) => block.forward(x),
        })
    }

    fn classify(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        let Classifier { dropout, linear } = &self.classifier;
        // Dropout drops only while the head it feeds trains (see `layers::trains`).
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

    fn head_mut(&mut self) -> &mut Linear<B> {
        &mut self.classifier.linear
    }

    fn head_path(&self) -> &'static str {
        "classifier.1"
    }

    fn with_dropout(mut self, prob: f64) -> Self {
        self.classifier.dropout.prob = prob;
        self
    }

    fn block_paths(&self) -> Vec<String> {
        self.blocks().into_iter().map(|(path, _)| path).collect()
    }

    fn convs_mut(&mut self) -> Vec<ConvMut<'_, B>> {
        let mut convs = Vec::new();
        for (i, feature) in self.features.iter_mut().enumerate() {
            match feature {
                Feature::Conv(layer) => {
                    convs.push(ConvMut::Normalized(layer.pair_mut(&format!("features.{i}"))));
                }
                Feature::Stage(stage) => {
                    for (j, block) in stage.iter_mut().enumerate() {
                        let prefix = format!("features.{i}.{j}");
                        convs.extend(block.convs_mut().into_iter().map(|c| c.prefixed(&prefix)));
                    }
                }
            }
        }
        convs
    }

    fn conv_bn_pairs_mut(&mut self) -> Vec<ConvBnMut<'_, B>> {
        ConvMut::pairs(self.convs_mut())
    }
}

impl<B: ConvBackend> Architecture<B> for EfficientNet<B> {
    type Config = EfficientNetConfig;

    fn config(&self) -> EfficientNetConfig {
        let pairs = self.conv_bn_pairs();
        let (width_mult, depth_mult) =
            EfficientNetConfig::find(&self.conv_out_channels()).unwrap_or((1.0, 1.0));
        let shape = EfficientNetConfig::new()
            .with_width_mult(width_mult)
            .with_depth_mult(depth_mult);
        let last_block = self.blocks().iter().rev().find_map(|(_, b)| match b {
            Block::MBConv(b) => Some(b.stochastic_depth),
            Block::Conv(_) => None,
        });
        // The last of n blocks drops with probability p · (n − 1) / n.
        let n = shape.num_blocks() as f64;
        let stochastic_depth_prob = last_block.map_or(0.2, |last| last * n / (n - 1.0).max(1.0));
        shape
            .with_num_classes(self.num_classes())
            .with_dropout(self.classifier.dropout.prob)
            .with_stochastic_depth_prob(stochastic_depth_prob)
            .with_padding(pairs.first().map_or(Padding::Symmetric, |p| p.padding))
            .with_batch_norm_epsilon(pairs.first().map_or(1e-5, |p| p.epsilon))
            .with_batch_norm_statistics(pairs.iter().all(|p| p.has_statistics))
    }

    fn from_config(config: &EfficientNetConfig, device: &B::Device) -> Self {
        config.init(device)
    }
}
