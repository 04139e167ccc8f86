//! What every image classifier in this crate offers, whatever its architecture.

use crate::kernels::ConvBackend;
use std::ops::Range;

use burn::module::Module;
use burn::tensor::Tensor;

use super::layers::{Activation, ConvBnInfo, ConvBnMut, ConvMut, Linear, LinearConfig};
use super::summary::{self, Summary};

/// A linear layer of the classifier before the head, with its path and the activation after it
/// (MobileNetV3's `classifier.0` and Hardswish).
#[derive(Debug, Clone, Copy)]
pub struct HiddenLinear<'a, B: ConvBackend> {
    /// Path of the layer (`classifier.0`).
    pub path: &'static str,
    /// The layer.
    pub linear: &'a Linear<B>,
    /// The activation applied to its output.
    pub activation: Activation,
}

/// A CNN that maps images `[N, 3, H, W]` to class scores through a backbone of blocks, a global
/// average pool and a classifier: a linear head, after hidden linear layers in some networks
/// ([`hidden_linears`](Self::hidden_linears)).
///
/// A model file implements the required methods: its forward pass block by block, its head, the
/// list of its blocks and of its (convolution, BatchNorm) pairs. Everything else (features,
/// new heads, BatchNorm folding, summaries) is derived from those.
///
/// **Training or inference is decided by the model's type and trainability, not by a mode
/// switch:** layers behave as in training (batch statistics, dropout) only on an autodiff backend
/// and where their parameters are trainable ([`trains`](super::layers::trains)). `.valid()` (the
/// model on the inner backend) or `.no_grad()` always gives inference, which is what
/// [`evaluate`](crate::train::evaluate), [`predict`](crate::train::predict()) and
/// [`Predictor`](crate::predict::Predictor) use, whatever model they are given.
pub trait ImageClassifier<B: ConvBackend>: Module<B> + Sync + Sized {
    /// Runs the backbone blocks `blocks` (indices into [`ImageClassifier::block_paths`]) on `x`,
    /// the input images when `blocks` starts at 0, else the output of block `blocks.start - 1`.
    /// `features(x) == pool(forward_blocks(x, 0..block_paths().len()))`: a frozen prefix of the
    /// backbone can run on another (folded, gradient-free) copy of the model.
    fn forward_blocks(&self, x: Tensor<B, 4>, blocks: Range<usize>) -> Tensor<B, 4>;

    /// Applies only the head (and its dropout) to pooled features:
    /// `forward(x) == classify(features(x))`.
    fn classify(&self, features: Tensor<B, 2>) -> Tensor<B, 2>;

    /// The head (the final linear layer).
    fn head(&self) -> &Linear<B>;

    /// The head, to replace or change.
    fn head_mut(&mut self) -> &mut Linear<B>;

    /// Path of the head layer (`classifier.1` or `fc`).
    fn head_path(&self) -> &'static str;

    /// Paths of the backbone's blocks from input to output (`features.0` … `features.18`;
    /// `conv1`, `bn1`, `layer1.0` … `layer4.1`), the units that fine-tuning unfreezes.
    fn block_paths(&self) -> Vec<String>;

    /// Every convolution with the BatchNorm after it, in execution order, with their paths: the
    /// one walk over the layers that weight import, BatchNorm folding and checks share.
    fn conv_bn_pairs_mut(&mut self) -> Vec<ConvBnMut<'_, B>>;

    /// Every convolution in execution order, with the BatchNorm after it where there is one: the
    /// walk that weight import (by name or by structure) and export share. The default lists
    /// [`conv_bn_pairs_mut`](Self::conv_bn_pairs_mut); networks with convolutions outside such
    /// pairs (squeeze-and-excitation) list them all here and derive their pairs from it.
    fn convs_mut(&mut self) -> Vec<ConvMut<'_, B>> {
        self.conv_bn_pairs_mut()
            .into_iter()
            .map(ConvMut::Normalized)
            .collect()
    }

    /// Output channels of every convolution in execution order ([`convs_mut`](Self::convs_mut)):
    /// what an ONNX file's convolutions show, and how a configuration is read back.
    fn conv_out_channels(&self) -> Vec<usize> {
        // Cloning a module copies tensor handles, not data.
        let mut copy = self.clone();
        copy.convs_mut()
            .iter()
            .map(|conv| conv.conv().out_channels())
            .collect()
    }

    /// The linear layers between the pooled features and the head, in order (MobileNetV3's
    /// `classifier.0`); none by default. They are part of the classifier: they train whenever
    /// the head does, at the head's rate, and [`classify`](Self::classify) applies them.
    fn hidden_linears(&self) -> Vec<HiddenLinear<'_, B>> {
        Vec::new()
    }

    /// Paths of every layer of the classifier: the [hidden linears](Self::hidden_linears) and
    /// the head. What feature extraction trains.
    fn classifier_paths(&self) -> Vec<&'static str> {
        let mut paths: Vec<&'static str> = self.hidden_linears().iter().map(|h| h.path).collect();
        paths.push(self.head_path());
        paths
    }

    /// `∂ logits[class] / ∂ features` `[N, feature_dim]` at pooled features `[N, feature_dim]`
    /// (inference: no dropout), by the chain rule through the hidden linears: the head's row for
    /// a pool + linear network. Grad-CAM's channel weights are this gradient.
    fn logit_gradient(&self, features: Tensor<B, 2>, class: usize) -> Tensor<B, 2> {
        let [n, _] = features.dims();
        let hidden = self.hidden_linears();
        let mut pre_activations = Vec::with_capacity(hidden.len());
        let mut x = features;
        for layer in &hidden {
            let z = layer.linear.forward(x);
            pre_activations.push(z.clone());
            x = layer.activation.apply(z);
        }
        let weight = self.head().weight.val();
        let width = weight.dims()[1];
        let mut gradient = weight.slice([class..class + 1, 0..width]).repeat_dim(0, n);
        for (layer, z) in hidden.iter().zip(pre_activations).rev() {
            gradient = crate::kernels::matmul(
                gradient * layer.activation.derivative(z),
                layer.linear.weight.val(),
            );
        }
        gradient
    }

    /// Class scores (logits) `[N, num_classes]` for images `[N, 3, H, W]` (any H, W ≥ 32).
    fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        B::on_kernel_threads(|| self.classify(self.features(images)))
    }

    /// The pooled embedding `[N, feature_dim]` the classifier sees (1280 for MobileNetV2, 512 for
    /// ResNet18/34, 576 for MobileNetV3-Small).
    fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let blocks = self.block_paths().len();
        B::on_kernel_threads(|| self.pool(self.forward_blocks(images, 0..blocks)))
    }

    /// Global average pooling of the last block's output to the `[N, feature_dim]` embedding.
    fn pool(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let [n, c, _, _] = x.dims();
        let pooled = x.mean_dim(3).mean_dim(2);
        summary::record_named("avgpool", "AdaptiveAvgPool2d", &pooled.dims());
        pooled.reshape([n, c])
    }

    /// Number of classes the head predicts.
    fn num_classes(&self) -> usize {
        self.head().out_features()
    }

    /// Width of the pooled embedding (the input of the first hidden linear, else of the head).
    fn feature_dim(&self) -> usize {
        self.hidden_linears()
            .first()
            .map_or_else(|| self.head().in_features(), |h| h.linear.in_features())
    }

    /// Replaces the head with a freshly initialised one for `num_classes` classes (PyTorch's
    /// `nn.Linear` init; call `B::seed` first for a repeatable head). Hidden linears before it
    /// are kept, as `model.classifier[3] = nn.Linear(1024, n)` keeps MobileNetV3's.
    fn with_new_head(mut self, num_classes: usize, device: &B::Device) -> Self {
        let inputs = self.head().in_features();
        *self.head_mut() = LinearConfig::new(inputs, num_classes).init(device);
        self
    }

    /// The same network with the dropout before its head set to `prob` (torchvision's
    /// `model.classifier[0].p = prob`); networks without dropout are returned as they are.
    fn with_dropout(self, _prob: f64) -> Self {
        self
    }

    /// The (convolution, BatchNorm) pairs described: paths, shapes, settings.
    fn conv_bn_pairs(&self) -> Vec<ConvBnInfo> {
        // Cloning a module copies tensor handles, not data.
        let mut copy = self.clone();
        copy.conv_bn_pairs_mut()
            .iter()
            .map(ConvBnMut::info)
            .collect()
    }

    /// Whether the BatchNorms hold real running statistics, i.e. the weights did not come with
    /// BatchNorm folded into the convolutions (see
    /// [`BatchNorm2d::has_statistics`](super::layers::BatchNorm2d::has_statistics)).
    fn has_batch_norm_statistics(&self) -> bool {
        self.conv_bn_pairs().iter().all(|p| p.has_statistics)
    }

    /// The same network with every BatchNorm folded into its convolution: equal eval outputs,
    /// faster inference. For frozen backbones and evaluation, not for layers that still train.
    fn fuse_for_inference(mut self) -> Self {
        for pair in self.conv_bn_pairs_mut() {
            pair.fuse();
        }
        self
    }

    /// A `torchsummary`-style table for an input of `[3, H, W]`, recorded from a forward pass.
    fn summary(&self, input: [usize; 3]) -> Summary {
        Summary::of(self, input)
    }
}
