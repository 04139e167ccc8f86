//! ResNet18 / ResNet34 (He et al., 2016) with basic residual blocks, laid out exactly like
//! torchvision's `resnet18` / `resnet34`: `conv1`, `bn1`, `layer1..=4`, `fc`.

use crate::kernels::{ConvBackend, max_pool2d};
use std::ops::Range;

use burn::config::Config;
use burn::module::Module;
use burn::tensor::Tensor;

use super::layers::{
    Activation, BatchNorm2d, BatchNorm2dConfig, Conv2d, Conv2dConfig, ConvBnMut, ConvNormActivation, Linear,
    LinearConfig, conv_bn_activated,
};
use super::summary;
use super::architecture::check_classes;
use super::{Architecture, ArchitectureConfig, ImageClassifier};
use crate::weights::WeightsError;
use crate::weights::import::OnnxBackbone;

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Configuration of a [`ResNet`] built from basic blocks.
#[derive(Config, Debug, PartialEq)]
pub struct ResNetConfig {
    /// Basic blocks per stage: `[2, 2, 2, 2]` is ResNet18, `[3, 4, 6, 3]` ResNet34.
    pub layers: [usize; 4],
    /// Number of output classes.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// False for weights whose BatchNorm was folded into the convolutions: the BatchNorms then
    /// hold no statistics and must stay frozen (see [`BatchNorm2d::has_statistics`]).
    #[config(default = true)]
    pub batch_norm_statistics: bool,
}

const RESNET18: [usize; 4] = [2, 2, 2, 2];
const RESNET34: [usize; 4] = [3, 4, 6, 3];

impl ResNetConfig {
    /// ResNet18.
    pub fn resnet18(num_classes: usize) -> Self {
        Self::new(RESNET18).with_num_classes(num_classes)
    }

    /// ResNet34.
    pub fn resnet34(num_classes: usize) -> Self {
        Self::new(RESNET34).with_num_classes(num_classes)
    }

    /// Builds the network (Kaiming-normal convs, identity BatchNorms, PyTorch-default `fc`).
    pub fn init<B: ConvBackend>(&self, device: &B::Device) -> ResNet<B> {
        let mut inplanes = 64;
        let mut stage = |planes: usize, blocks: usize, stride: usize| {
            let stage: Vec<BasicBlock<B>> = (0..blocks)
                .map(|i| {
                    let block_stride = if i == 0 { stride } else { 1 };
                    let block = BasicBlock::new(inplanes, planes, block_stride, device);
                    inplanes = planes;
                    block
                })
                .collect();
            stage
        };
        let layer1 = stage(64, self.layers[0], 1);
        let layer2 = stage(128, self.layers[1], 2);
        let layer3 = stage(256, self.layers[2], 2);
        let layer4 = stage(512, self.layers[3], 2);
        let mut model = ResNet {
            conv1: Conv2dConfig::new([3, 64], 7)
                .with_stride(2)
                .with_bias(false)
                .init(device),
            bn1: BatchNorm2dConfig::new(64).init(device),
            layer1,
            layer2,
            layer3,
            layer4,
            fc: LinearConfig::new(512, self.num_classes).init(device),
        };
        for pair in model.conv_bn_pairs_mut() {
            pair.bn.has_statistics = self.batch_norm_statistics;
        }
        model
    }
}

impl ArchitectureConfig for ResNetConfig {
    const FAMILY: &'static str = "resnet";
    const SIGNATURE: &'static str =
        "ResNet18 / ResNet34 (a 7×7 stem, a max pool, 20 / 36 convolutions)";

    fn presets() -> Vec<&'static str> {
        vec!["resnet18", "resnet34"]
    }

    fn preset(name: &str) -> Option<Self> {
        match name {
            "resnet18" => Some(Self::resnet18(1000)),
            "resnet34" => Some(Self::resnet34(1000)),
            _ => None,
        }
    }

    fn name(&self) -> String {
        match self.layers {
            RESNET18 => "resnet18",
            RESNET34 => "resnet34",
            _ => Self::FAMILY,
        }
        .into()
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn fine_tune_from(&self) -> &'static str {
        "layer4"
    }

    fn with_classes(self, num_classes: usize) -> Self {
        self.with_num_classes(num_classes)
    }

    fn check(&self) -> Result<(), String> {
        check_classes(self.num_classes)?;
        // torchvision's deepest stage (ResNet152's third) has 36 blocks.
        if self.layers.iter().any(|&n| !(1..=64).contains(&n)) {
            return Err(format!(
                "layers is {:?}; each stage has 1 to 64 blocks",
                self.layers
            ));
        }
        Ok(())
    }

    fn recognise(onnx: &OnnxBackbone<'_>) -> Option<Result<Self, WeightsError>> {
        let stem = onnx.convs.first()?;
        if onnx.depthwise_count() > 0 || stem.conv.kernel != [7, 7] || onnx.count("MaxPool") == 0
        {
            return None;
        }
        let layers = match onnx.convs.len() {
            20 => RESNET18,
            36 => RESNET34,
            n => {
                return Some(Err(onnx.unexpected(
                    "ResNet18 (20 convolutions) or ResNet34 (36)",
                    format!("a ResNet-like graph with {n} convolutions"),
                )));
            }
        };
        Some(Ok(
            ResNetConfig::new(layers).with_num_classes(onnx.num_classes)
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Modules
// ---------------------------------------------------------------------------------------------

/// Two 3×3 convolutions with a skip connection; `downsample` (1×1 conv + BN) adapts the skip
/// when the stride or the channel count changes.
#[derive(Module, Debug)]
pub struct BasicBlock<B: ConvBackend> {
    /// First 3×3 conv (carries the stride).
    pub conv1: Conv2d<B>,
    /// BatchNorm after `conv1`.
    pub bn1: BatchNorm2d<B>,
    /// Second 3×3 conv.
    pub conv2: Conv2d<B>,
    /// BatchNorm after `conv2`.
    pub bn2: BatchNorm2d<B>,
    /// Projection of the skip connection: `downsample.0` conv, `downsample.1` BN.
    pub downsample: Option<ConvNormActivation<B>>,
}

impl<B: ConvBackend> BasicBlock<B> {
    /// A block from `inplanes` to `planes` channels.
    pub fn new(inplanes: usize, planes: usize, stride: usize, device: &B::Device) -> Self {
        let conv3x3 = |inp: usize, stride: usize| {
            Conv2dConfig::new([inp, planes], 3)
                .with_stride(stride)
                .with_bias(false)
                .init(device)
        };
        Self {
            conv1: conv3x3(inplanes, stride),
            bn1: BatchNorm2dConfig::new(planes).init(device),
            conv2: conv3x3(planes, 1),
            bn2: BatchNorm2dConfig::new(planes).init(device),
            downsample: (stride != 1 || inplanes != planes).then(|| {
                ConvNormActivation::new(
                    Conv2dConfig::new([inplanes, planes], 1).with_stride(stride),
                    device,
                )
            }),
        }
    }

    /// Applies the block.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let out = conv_bn_activated(&self.conv1, &self.bn1, x.clone(), Activation::ReLU);
        let out = self.bn2.forward(self.conv2.forward(out));
        let identity = match &self.downsample {
            Some(down) => down.forward(x),
            None => x,
        };
        Activation::ReLU.apply(out + identity)
    }

    /// The block's pairs in torchvision's order: `conv1`, `conv2`, then `downsample`.
    fn conv_bn_pairs_mut(&mut self, prefix: &str) -> Vec<ConvBnMut<'_, B>> {
        let mut pairs = vec![
            ConvBnMut::new(
                format!("{prefix}.conv1"),
                &mut self.conv1,
                format!("{prefix}.bn1"),
                &mut self.bn1,
            ),
            ConvBnMut::new(
                format!("{prefix}.conv2"),
                &mut self.conv2,
                format!("{prefix}.bn2"),
                &mut self.bn2,
            ),
        ];
        if let Some(down) = &mut self.downsample {
            pairs.push(down.pair_mut(&format!("{prefix}.downsample")));
        }
        pairs
    }
}

/// ResNet with basic blocks and torchvision's parameter names.
#[derive(Module, Debug)]
pub struct ResNet<B: ConvBackend> {
    /// Stem 7×7 stride-2 conv.
    pub conv1: Conv2d<B>,
    /// BatchNorm after the stem.
    pub bn1: BatchNorm2d<B>,
    /// Stage 1 (64 channels, 1/4 resolution).
    pub layer1: Vec<BasicBlock<B>>,
    /// Stage 2 (128 channels, 1/8).
    pub layer2: Vec<BasicBlock<B>>,
    /// Stage 3 (256 channels, 1/16).
    pub layer3: Vec<BasicBlock<B>>,
    /// Stage 4 (512 channels, 1/32).
    pub layer4: Vec<BasicBlock<B>>,
    /// Linear classifier.
    pub fc: Linear<B>,
}

impl<B: ConvBackend> ResNet<B> {
    fn stages(&self) -> [(&'static str, &Vec<BasicBlock<B>>); 4] {
        [
            ("layer1", &self.layer1),
            ("layer2", &self.layer2),
            ("layer3", &self.layer3),
            ("layer4", &self.layer4),
        ]
    }
}

impl<B: ConvBackend> ImageClassifier<B> for ResNet<B> {
    /// Blocks as in [`ImageClassifier::block_paths`]: 0 `conv1`, 1 `bn1` (with its ReLU and the
    /// max pool), then each basic block of `layer1` … `layer4`.
    fn forward_blocks(&self, x: Tensor<B, 4>, blocks: Range<usize>) -> Tensor<B, 4> {
        let mut x = x;
        if blocks.contains(&0) && blocks.contains(&1) {
            x = conv_bn_activated(&self.conv1, &self.bn1, x, Activation::ReLU);
        } else if blocks.contains(&0) {
            x = self.conv1.forward(x);
        } else if blocks.contains(&1) {
            x = Activation::ReLU.apply(self.bn1.forward(x));
        }
        if blocks.contains(&1) {
            x = max_pool2d(x, [3, 3], [2, 2], [1, 1]);
            summary::record_named("maxpool", "MaxPool2d", &x.dims());
        }
        self.stages()
            .into_iter()
            .flat_map(|(_, stage)| stage.iter())
            .enumerate()
            .filter(|(i, _)| blocks.contains(&(i + 2)))
            .fold(x, |x, (_, block)| block.forward(x))
    }

    fn classify(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        self.fc.forward(features)
    }

    fn head(&self) -> &Linear<B> {
        &self.fc
    }

    fn head_mut(&mut self) -> &mut Linear<B> {
        &mut self.fc
    }

    fn head_path(&self) -> &'static str {
        "fc"
    }

    fn block_paths(&self) -> Vec<String> {
        let mut out = vec!["conv1".to_string(), "bn1".to_string()];
        for (name, stage) in self.stages() {
            out.extend((0..stage.len()).map(|i| format!("{name}.{i}")));
        }
        out
    }

    fn conv_bn_pairs_mut(&mut self) -> Vec<ConvBnMut<'_, B>> {
        let mut pairs = vec![ConvBnMut::new(
            "conv1".into(),
            &mut self.conv1,
            "bn1".into(),
            &mut self.bn1,
        )];
        let stages = [
            ("layer1", &mut self.layer1),
            ("layer2", &mut self.layer2),
            ("layer3", &mut self.layer3),
            ("layer4", &mut self.layer4),
        ];
        for (name, stage) in stages {
            for (i, block) in stage.iter_mut().enumerate() {
                pairs.extend(block.conv_bn_pairs_mut(&format!("{name}.{i}")));
            }
        }
        pairs
    }
}

impl<B: ConvBackend> Architecture<B> for ResNet<B> {
    type Config = ResNetConfig;

    fn config(&self) -> ResNetConfig {
        ResNetConfig::new(self.stages().map(|(_, stage)| stage.len()))
            .with_num_classes(self.num_classes())
            .with_batch_norm_statistics(self.has_batch_norm_statistics())
    }

    fn from_config(config: &ResNetConfig, device: &B::Device) -> Self {
        config.init(device)
    }
}
