//! MobileNetV2 (Sandler et al., 2018) laid out exactly like torchvision's `mobilenet_v2`:
//! `features.0` (stem conv), `features.1..=17` (inverted residual blocks), `features.18`
//! (1×1 conv to the last channel), `classifier.1` (the linear head after dropout).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::ImageClassifier;
use super::layers::{
    BatchNorm2d, Conv2d, ConvBn, ConvBnRef, Linear, Padding, conv_bn, forward_conv_bn,
    fuse_conv_bn, relu6,
};
use super::summary::LayerRow;
use super::transparent::transparent_module_enum;

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
}

/// 1×1 projection conv and its BatchNorm, the linear bottleneck.
type Projection<B> = (Conv2d<B>, BatchNorm2d<B>);
/// `conv` of a block with expansion: expand (ConvBn), depthwise (ConvBn), project conv, its BN.
type ExpandConvs<B> = (ConvBn<B>, ConvBn<B>, Conv2d<B>, BatchNorm2d<B>);
/// `conv` of a block without expansion (t = 1): depthwise (ConvBn), project conv, its BN.
type DepthwiseConvs<B> = (ConvBn<B>, Conv2d<B>, BatchNorm2d<B>);

transparent_module_enum! {
    /// The `conv` sequence of an inverted residual block (its layout depends on the expansion).
    pub enum BlockConvs {
        /// Expansion ratio > 1: `conv.0` expand, `conv.1` depthwise, `conv.2` project, `conv.3` BN.
        Expand(ExpandConvs),
        /// Expansion ratio 1: `conv.0` depthwise, `conv.1` project, `conv.2` BN.
        Depthwise(DepthwiseConvs),
    }
}

/// Inverted residual block: expand (1×1, ReLU6) → depthwise 3×3 (ReLU6) → linear 1×1 project,
/// with a skip connection when the stride is 1 and the channel count is unchanged.
#[derive(Module, Debug)]
pub struct InvertedResidual<B: Backend> {
    /// The convolutions, at torchvision's `conv.*` paths.
    pub conv: BlockConvs<B>,
    /// Whether the input is added to the output.
    pub use_residual: bool,
}

impl<B: Backend> InvertedResidual<B> {
    /// Builds a block from `inp` to `oup` channels.
    pub fn new(
        inp: usize,
        oup: usize,
        stride: usize,
        expand_ratio: usize,
        padding: Padding,
        device: &B::Device,
    ) -> Self {
        let hidden = inp * expand_ratio;
        let depthwise = conv_bn(hidden, hidden, 3, stride, hidden, padding, device);
        let project: Projection<B> = (
            Conv2d::new(hidden, oup, 1, 1, 1, false, padding, device),
            BatchNorm2d::new(oup, device),
        );
        let conv = if expand_ratio == 1 {
            BlockConvs::Depthwise((depthwise, project.0, project.1))
        } else {
            let expand = conv_bn(inp, hidden, 1, 1, 1, padding, device);
            BlockConvs::Expand((expand, depthwise, project.0, project.1))
        };
        Self {
            conv,
            use_residual: stride == 1 && inp == oup,
        }
    }

    /// Applies the block.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let out = match &self.conv {
            BlockConvs::Expand((expand, dw, project, bn)) => {
                let h = relu6(forward_conv_bn(expand, x.clone()));
                let h = relu6(forward_conv_bn(dw, h));
                bn.forward(project.forward(h))
            }
            BlockConvs::Depthwise((dw, project, bn)) => {
                let h = relu6(forward_conv_bn(dw, x.clone()));
                bn.forward(project.forward(h))
            }
        };
        if self.use_residual { out + x } else { out }
    }

    /// The block's conv/BN pairs in execution order, paths relative to the block.
    pub fn conv_bn_pairs(&self) -> Vec<ConvBnRef<'_, B>> {
        match &self.conv {
            BlockConvs::Expand((e, d, p, bn)) => vec![
                ConvBnRef::pair("conv.0", e),
                ConvBnRef::pair("conv.1", d),
                ConvBnRef::new("conv.2", p, "conv.3", bn),
            ],
            BlockConvs::Depthwise((d, p, bn)) => {
                vec![
                    ConvBnRef::pair("conv.0", d),
                    ConvBnRef::new("conv.1", p, "conv.2", bn),
                ]
            }
        }
    }
}

transparent_module_enum! {
    /// One entry of `features`: a plain conv-BN-ReLU6 (stem and last layer) or a block.
    pub enum Feature {
        /// `features.0` and `features.18`.
        ConvBnAct(ConvBn),
        /// `features.1..=17`.
        Block(InvertedResidual),
    }
}

impl<B: Backend> Feature<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Feature::ConvBnAct(layer) => relu6(forward_conv_bn(layer, x)),
            Feature::Block(block) => block.forward(x),
        }
    }
}

/// MobileNetV2 with torchvision's module tree and parameter names.
#[derive(Module, Debug)]
pub struct MobileNetV2<B: Backend> {
    /// `features.0..=18`.
    pub features: Vec<Feature<B>>,
    /// `classifier.0` dropout, `classifier.1` linear head.
    pub classifier: (Dropout, Linear<B>),
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

    /// Builds the network with torchvision's initialisation (Kaiming-normal convs, identity
    /// BatchNorms, `N(0, 0.01)` head weights would be torchvision's; we use PyTorch's default
    /// Linear init for the head, which fine-tuning recipes re-create anyway).
    pub fn init<B: Backend>(&self, device: &B::Device) -> MobileNetV2<B> {
        let (input_channel, blocks, last_channel) = self.layout();
        let mut features = vec![Feature::ConvBnAct(conv_bn(
            3,
            input_channel,
            3,
            2,
            1,
            self.padding,
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
        features.push(Feature::ConvBnAct(conv_bn(
            inp,
            last_channel,
            1,
            1,
            1,
            self.padding,
            device,
        )));
        MobileNetV2 {
            features,
            classifier: (
                DropoutConfig::new(self.dropout).init(),
                Linear::new(last_channel, self.num_classes, device),
            ),
        }
    }
}

impl<B: Backend> MobileNetV2<B> {
    /// The configuration this network was built with (read back from its tensors).
    pub fn config(&self) -> MobileNetV2Config {
        let stem = self.conv_bn_pairs()[0].conv;
        let stem_channels = stem.out_channels();
        // Invert make_divisible(32 α): exact for torchvision's widths.
        let width_mult = [0.35, 0.5, 0.75, 1.0, 1.3, 1.4, 2.0]
            .into_iter()
            .find(|&w| make_divisible(32.0 * w, 8) == stem_channels)
            .unwrap_or(stem_channels as f64 / 32.0);
        MobileNetV2Config::new()
            .with_num_classes(self.classifier.1.out_features())
            .with_width_mult(width_mult)
            .with_dropout(self.classifier.0.prob)
            .with_padding(stem.padding)
    }

    /// Folds every BatchNorm into its convolution for inference (outputs equal within float
    /// rounding, ~1e-6 relative). For evaluation and frozen-backbone feature extraction: a
    /// BatchNorm that trains afterwards would normalise twice.
    pub fn fuse_for_inference(mut self) -> Self {
        for feature in &mut self.features {
            match feature {
                Feature::ConvBnAct((conv, bn)) => fuse_conv_bn(conv, bn),
                Feature::Block(block) => match &mut block.conv {
                    BlockConvs::Expand((e, d, p, bn)) => {
                        fuse_conv_bn(&mut e.0, &mut e.1);
                        fuse_conv_bn(&mut d.0, &mut d.1);
                        fuse_conv_bn(p, bn);
                    }
                    BlockConvs::Depthwise((d, p, bn)) => {
                        fuse_conv_bn(&mut d.0, &mut d.1);
                        fuse_conv_bn(p, bn);
                    }
                },
            }
        }
        self
    }

    /// Every conv and the BatchNorm after it, in execution order, with full paths.
    pub fn conv_bn_pairs(&self) -> Vec<ConvBnRef<'_, B>> {
        let mut out = Vec::new();
        for (i, feature) in self.features.iter().enumerate() {
            let prefix = format!("features.{i}");
            match feature {
                Feature::ConvBnAct(layer) => out.push(ConvBnRef::pair(&prefix, layer)),
                Feature::Block(block) => out.extend(
                    block
                        .conv_bn_pairs()
                        .into_iter()
                        .map(|r| r.prefixed(&prefix)),
                ),
            }
        }
        out
    }
}

impl<B: Backend> ImageClassifier<B> for MobileNetV2<B> {
    fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.classify(self.features(images))
    }

    fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.pool(self.forward_blocks(images, 0..self.features.len()))
    }

    fn forward_blocks(&self, x: Tensor<B, 4>, blocks: std::ops::Range<usize>) -> Tensor<B, 4> {
        self.features[blocks]
            .iter()
            .fold(x, |x, feature| feature.forward(x))
    }

    fn classify(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        self.classifier
            .1
            .forward(self.classifier.0.forward(features))
    }

    fn num_classes(&self) -> usize {
        self.classifier.1.out_features()
    }

    fn feature_dim(&self) -> usize {
        self.classifier.1.in_features()
    }

    fn with_new_head(mut self, num_classes: usize, device: &B::Device) -> Self {
        self.classifier.1 = Linear::new(self.feature_dim(), num_classes, device);
        self
    }

    fn head(&self) -> &Linear<B> {
        &self.classifier.1
    }

    fn fuse_for_inference(self) -> Self {
        MobileNetV2::fuse_for_inference(self)
    }

    fn head_path(&self) -> &'static str {
        "classifier.1"
    }

    fn block_paths(&self) -> Vec<String> {
        (0..self.features.len())
            .map(|i| format!("features.{i}"))
            .collect()
    }

    fn summary_rows(&self, input: [usize; 3]) -> Vec<LayerRow> {
        let [_, mut h, mut w] = input;
        let mut rows = Vec::new();
        for pair in self.conv_bn_pairs() {
            (h, w) = pair.conv.output_size(h, w);
            rows.push(LayerRow::conv(&pair.conv_path, pair.conv, h, w));
            rows.push(LayerRow::batch_norm(&pair.bn_path, pair.bn, h, w));
        }
        let c = self.feature_dim();
        rows.push(LayerRow::new("pool", "AdaptiveAvgPool2d", vec![c, 1, 1], 0));
        rows.push(LayerRow::new("classifier.0", "Dropout", vec![c], 0));
        rows.push(LayerRow::linear("classifier.1", &self.classifier.1));
        rows
    }
}
