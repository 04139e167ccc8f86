//! ResNet18 / ResNet34 (He et al., 2016) with basic residual blocks, laid out exactly like
//! torchvision's `resnet18` / `resnet34`: `conv1`, `bn1`, `layer1..=4`, `fc`.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::max_pool2d;

use super::ImageClassifier;
use super::layers::{
    BatchNorm2d, Conv2d, ConvBn, ConvBnRef, Linear, Padding, conv_bn, fuse_conv_bn,
};
use super::summary::LayerRow;

/// Configuration of a [`ResNet`] built from basic blocks.
#[derive(Config, Debug, PartialEq)]
pub struct ResNetConfig {
    /// Basic blocks per stage: `[2, 2, 2, 2]` is ResNet18, `[3, 4, 6, 3]` ResNet34.
    pub layers: [usize; 4],
    /// Number of output classes.
    #[config(default = 1000)]
    pub num_classes: usize,
}

impl ResNetConfig {
    /// ResNet18.
    pub fn resnet18(num_classes: usize) -> Self {
        Self::new([2, 2, 2, 2]).with_num_classes(num_classes)
    }

    /// ResNet34.
    pub fn resnet34(num_classes: usize) -> Self {
        Self::new([3, 4, 6, 3]).with_num_classes(num_classes)
    }

    /// Builds the network (Kaiming-normal convs, identity BatchNorms, PyTorch-default `fc`).
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResNet<B> {
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
        ResNet {
            conv1: Conv2d::new(3, 64, 7, 2, 1, false, Padding::Symmetric, device),
            bn1: BatchNorm2d::new(64, device),
            layer1,
            layer2,
            layer3,
            layer4,
            fc: Linear::new(512, self.num_classes, device),
        }
    }
}

/// Two 3×3 convolutions with a skip connection; `downsample` (1×1 conv + BN) adapts the skip
/// when the stride or the channel count changes.
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    /// First 3×3 conv (carries the stride).
    pub conv1: Conv2d<B>,
    /// BatchNorm after `conv1`.
    pub bn1: BatchNorm2d<B>,
    /// Second 3×3 conv.
    pub conv2: Conv2d<B>,
    /// BatchNorm after `conv2`.
    pub bn2: BatchNorm2d<B>,
    /// Projection of the skip connection: `downsample.0` conv, `downsample.1` BN.
    pub downsample: Option<ConvBn<B>>,
}

impl<B: Backend> BasicBlock<B> {
    /// A block from `inplanes` to `planes` channels.
    pub fn new(inplanes: usize, planes: usize, stride: usize, device: &B::Device) -> Self {
        let sym = Padding::Symmetric;
        Self {
            conv1: Conv2d::new(inplanes, planes, 3, stride, 1, false, sym, device),
            bn1: BatchNorm2d::new(planes, device),
            conv2: Conv2d::new(planes, planes, 3, 1, 1, false, sym, device),
            bn2: BatchNorm2d::new(planes, device),
            downsample: (stride != 1 || inplanes != planes)
                .then(|| conv_bn(inplanes, planes, 1, stride, 1, sym, device)),
        }
    }

    /// Applies the block.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let identity = match &self.downsample {
            Some((conv, bn)) => bn.forward(conv.forward(x.clone())),
            None => x.clone(),
        };
        let out = self.bn1.forward(self.conv1.forward(x)).clamp_min(0.0);
        let out = self.bn2.forward(self.conv2.forward(out));
        (out + identity).clamp_min(0.0)
    }

    fn conv_bn_pairs(&self, prefix: &str) -> Vec<ConvBnRef<'_, B>> {
        let mut out = vec![
            ConvBnRef::new("conv1", &self.conv1, "bn1", &self.bn1).prefixed(prefix),
            ConvBnRef::new("conv2", &self.conv2, "bn2", &self.bn2).prefixed(prefix),
        ];
        if let Some(down) = &self.downsample {
            out.push(ConvBnRef::pair("downsample", down).prefixed(prefix));
        }
        out
    }
}

/// ResNet with basic blocks and torchvision's parameter names.
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
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

impl<B: Backend> ResNet<B> {
    /// The configuration this network was built with.
    pub fn config(&self) -> ResNetConfig {
        ResNetConfig::new(self.stages().map(|(_, s)| s.len()))
            .with_num_classes(self.fc.out_features())
    }

    fn stages(&self) -> [(&'static str, &Vec<BasicBlock<B>>); 4] {
        [
            ("layer1", &self.layer1),
            ("layer2", &self.layer2),
            ("layer3", &self.layer3),
            ("layer4", &self.layer4),
        ]
    }

    /// Folds every BatchNorm into its convolution for inference (see
    /// [`MobileNetV2::fuse_for_inference`](super::MobileNetV2::fuse_for_inference)).
    pub fn fuse_for_inference(mut self) -> Self {
        fuse_conv_bn(&mut self.conv1, &mut self.bn1);
        for stage in [
            &mut self.layer1,
            &mut self.layer2,
            &mut self.layer3,
            &mut self.layer4,
        ] {
            for block in stage.iter_mut() {
                fuse_conv_bn(&mut block.conv1, &mut block.bn1);
                fuse_conv_bn(&mut block.conv2, &mut block.bn2);
                if let Some((conv, bn)) = &mut block.downsample {
                    fuse_conv_bn(conv, bn);
                }
            }
        }
        self
    }

    /// Every conv and its BatchNorm in execution order (torchvision's order: in each block
    /// `conv1`, `conv2`, then `downsample`).
    pub fn conv_bn_pairs(&self) -> Vec<ConvBnRef<'_, B>> {
        let mut out = vec![ConvBnRef::new("conv1", &self.conv1, "bn1", &self.bn1)];
        for (name, stage) in self.stages() {
            for (i, block) in stage.iter().enumerate() {
                out.extend(block.conv_bn_pairs(&format!("{name}.{i}")));
            }
        }
        out
    }
}

impl<B: Backend> ImageClassifier<B> for ResNet<B> {
    fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.classify(self.features(images))
    }

    fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let blocks = 2 + self.stages().iter().map(|(_, s)| s.len()).sum::<usize>();
        self.pool(self.forward_blocks(images, 0..blocks))
    }

    /// Blocks as in [`ImageClassifier::block_paths`]: 0 `conv1`, 1 `bn1` (with its ReLU and the
    /// max pool), then each basic block of `layer1` … `layer4`.
    fn forward_blocks(&self, x: Tensor<B, 4>, blocks: std::ops::Range<usize>) -> Tensor<B, 4> {
        let mut x = x;
        if blocks.contains(&0) {
            x = self.conv1.forward(x);
        }
        if blocks.contains(&1) {
            x = self.bn1.forward(x).clamp_min(0.0);
            x = max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], false);
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

    fn num_classes(&self) -> usize {
        self.fc.out_features()
    }

    fn feature_dim(&self) -> usize {
        self.fc.in_features()
    }

    fn with_new_head(mut self, num_classes: usize, device: &B::Device) -> Self {
        self.fc = Linear::new(self.feature_dim(), num_classes, device);
        self
    }

    fn head(&self) -> &Linear<B> {
        &self.fc
    }

    fn fuse_for_inference(self) -> Self {
        ResNet::fuse_for_inference(self)
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

    fn summary_rows(&self, input: [usize; 3]) -> Vec<LayerRow> {
        let [_, h, w] = input;
        let mut rows = Vec::new();
        let (mut h, mut w) = self.conv1.output_size(h, w);
        rows.push(LayerRow::conv("conv1", &self.conv1, h, w));
        rows.push(LayerRow::batch_norm("bn1", &self.bn1, h, w));
        (h, w) = ((h + 2 - 3) / 2 + 1, (w + 2 - 3) / 2 + 1);
        rows.push(LayerRow::new("maxpool", "MaxPool2d", vec![64, h, w], 0));
        for pair in self.conv_bn_pairs().into_iter().skip(1) {
            // conv1 of a block sets the block's output size; downsample matches it.
            if pair.conv_path.ends_with("conv1") {
                (h, w) = pair.conv.output_size(h, w);
            }
            rows.push(LayerRow::conv(&pair.conv_path, pair.conv, h, w));
            rows.push(LayerRow::batch_norm(&pair.bn_path, pair.bn, h, w));
        }
        rows.push(LayerRow::new(
            "avgpool",
            "AdaptiveAvgPool2d",
            vec![512, 1, 1],
            0,
        ));
        rows.push(LayerRow::linear("fc", &self.fc));
        rows
    }
}
