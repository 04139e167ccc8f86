//! A convolution with the BatchNorm after it: torchvision's `Conv2dNormActivation` block, and the
//! (convolution, BatchNorm) pairs that weight import, BatchNorm folding and `fit`'s statistics
//! check walk in every model.

use burn::module::Param;
use burn::tensor::Tensor;

use super::{Activation, BatchNorm2d, BatchNorm2dConfig, Conv2d, Conv2dConfig};
use crate::kernels::ConvBackend;
use crate::models::torch_paths::numbered_module;

numbered_module! {
    /// Conv → BatchNorm, torchvision's `Conv2dNormActivation` (its activation has no parameters,
    /// so the model's forward applies it): the conv at `.0`, the BatchNorm at `.1`.
    pub struct ConvNormActivation {
        /// The bias-free convolution.
        conv(0): Conv2d<B>,
        /// Its BatchNorm.
        bn(1): BatchNorm2d<B>,
    }
}

impl<B: ConvBackend> ConvNormActivation<B> {
    /// A bias-free convolution built from `conv` (its `bias` is ignored) and a BatchNorm over its
    /// output channels.
    pub fn new(conv: Conv2dConfig, device: &B::Device) -> Self {
        let defaults = BatchNorm2dConfig::new(0);
        Self::with_norm(conv, defaults.epsilon, defaults.momentum, device)
    }

    /// [`new`](Self::new) with the BatchNorm's ε and momentum (MobileNetV3's 0.001 and 0.01).
    pub fn with_norm(conv: Conv2dConfig, epsilon: f64, momentum: f64, device: &B::Device) -> Self {
        let bn = BatchNorm2dConfig::new(conv.channels[1])
            .with_epsilon(epsilon)
            .with_momentum(momentum);
        Self {
            conv: conv.with_bias(false).init(device),
            bn: bn.init(device),
        }
    }

    /// Convolution then BatchNorm (no activation).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.bn.forward(self.conv.forward(x))
    }

    /// Convolution, BatchNorm, then `activation`: see [`conv_bn_activated`].
    pub fn forward_activated(&self, x: Tensor<B, 4>, activation: Activation) -> Tensor<B, 4> {
        conv_bn_activated(&self.conv, &self.bn, x, activation)
    }
}

/// `activation(bn(conv(x)))`. Where the BatchNorm is folded into the convolution and not
/// normalising with batch statistics (inference on folded weights, or a frozen, folded prefix),
/// it is the identity, and the convolution kernel applies the activation as it writes its
/// output ([`Conv2d::forward_activated`]): one pass over the activation map fewer per layer.
pub fn conv_bn_activated<B: ConvBackend>(
    conv: &Conv2d<B>,
    bn: &BatchNorm2d<B>,
    x: Tensor<B, 4>,
    activation: Activation,
) -> Tensor<B, 4> {
    match activation.conv_activation() {
        Some(fused) if bn.folded && !bn.uses_batch_statistics() => {
            // The folded BatchNorm returns its input; called for the summary's row.
            bn.forward(conv.forward_activated(x, fused))
        }
        _ => activation.apply(bn.forward(conv.forward(x))),
    }
}

impl<B: ConvBackend> ConvNormActivation<B> {
    /// This pair as a [`ConvBnMut`] at `path` (conv at `path.0`, BatchNorm at `path.1`).
    pub fn pair_mut(&mut self, path: &str) -> ConvBnMut<'_, B> {
        ConvBnMut::new(
            format!("{path}.0"),
            &mut self.conv,
            format!("{path}.1"),
            &mut self.bn,
        )
    }
}

/// A convolution and the BatchNorm that normalises its output, with their parameter paths.
/// Each model lists its pairs once, in execution order (`ImageClassifier::conv_bn_pairs_mut`);
/// import, folding, summaries and checks all use that one list.
#[derive(Debug)]
pub struct ConvBnMut<'a, B: ConvBackend> {
    /// Path of the convolution (e.g. `features.2.conv.0.0`).
    pub conv_path: String,
    /// The convolution.
    pub conv: &'a mut Conv2d<B>,
    /// Path of the BatchNorm (e.g. `features.2.conv.0.1`).
    pub bn_path: String,
    /// The BatchNorm.
    pub bn: &'a mut BatchNorm2d<B>,
}

impl<'a, B: ConvBackend> ConvBnMut<'a, B> {
    /// A pair at explicit paths.
    pub fn new(
        conv_path: String,
        conv: &'a mut Conv2d<B>,
        bn_path: String,
        bn: &'a mut BatchNorm2d<B>,
    ) -> Self {
        Self {
            conv_path,
            conv,
            bn_path,
            bn,
        }
    }

    /// The same pair with `prefix.` put in front of both paths.
    pub fn prefixed(self, prefix: &str) -> Self {
        Self {
            conv_path: format!("{prefix}.{}", self.conv_path),
            bn_path: format!("{prefix}.{}", self.bn_path),
            ..self
        }
    }

    /// What the pair is, without the borrows.
    pub fn info(&self) -> ConvBnInfo {
        ConvBnInfo {
            conv_path: self.conv_path.clone(),
            conv_shape: self.conv.weight.shape().to_vec(),
            stride: self.conv.stride,
            padding: self.conv.padding,
            bn_path: self.bn_path.clone(),
            epsilon: self.bn.epsilon,
            has_statistics: self.bn.has_statistics,
            folded: self.bn.folded,
        }
    }

    /// Folds the BatchNorm into the convolution (see [`fuse_conv_bn`]).
    pub fn fuse(self) {
        fuse_conv_bn(self.conv, self.bn);
    }
}

/// One convolution of a model with its path, and the BatchNorm after it where there is one:
/// what [`ImageClassifier::convs_mut`](crate::models::ImageClassifier::convs_mut) lists, every
/// convolution in execution order, for weight import and export.
#[derive(Debug)]
pub enum ConvMut<'a, B: ConvBackend> {
    /// A convolution normalised by the BatchNorm after it (every backbone convolution).
    Normalized(ConvBnMut<'a, B>),
    /// A convolution with a bias of its own and no BatchNorm (squeeze-and-excitation's `fc1`,
    /// `fc2`).
    Plain {
        /// Path of the convolution (e.g. `features.4.block.2.fc1`).
        path: String,
        /// The convolution.
        conv: &'a mut Conv2d<B>,
    },
}

impl<'a, B: ConvBackend> ConvMut<'a, B> {
    /// A convolution without BatchNorm at `path`.
    pub fn plain(path: impl Into<String>, conv: &'a mut Conv2d<B>) -> Self {
        ConvMut::Plain {
            path: path.into(),
            conv,
        }
    }

    /// Path of the convolution.
    pub fn path(&self) -> &str {
        match self {
            ConvMut::Normalized(pair) => &pair.conv_path,
            ConvMut::Plain { path, .. } => path,
        }
    }

    /// The convolution.
    pub fn conv(&self) -> &Conv2d<B> {
        match self {
            ConvMut::Normalized(pair) => pair.conv,
            ConvMut::Plain { conv, .. } => conv,
        }
    }

    /// The (convolution, BatchNorm) pairs among `convs`: how a network that lists every
    /// convolution in `convs_mut` gives its `conv_bn_pairs_mut`.
    pub fn pairs(convs: Vec<Self>) -> Vec<ConvBnMut<'a, B>> {
        convs.into_iter().filter_map(ConvMut::into_pair).collect()
    }

    /// The (convolution, BatchNorm) pair, for a normalised convolution.
    pub fn into_pair(self) -> Option<ConvBnMut<'a, B>> {
        match self {
            ConvMut::Normalized(pair) => Some(pair),
            ConvMut::Plain { .. } => None,
        }
    }

    /// The same convolution with `prefix.` put in front of its paths.
    pub fn prefixed(self, prefix: &str) -> Self {
        match self {
            ConvMut::Normalized(pair) => ConvMut::Normalized(pair.prefixed(prefix)),
            ConvMut::Plain { path, conv } => ConvMut::Plain {
                path: format!("{prefix}.{path}"),
                conv,
            },
        }
    }
}

/// A (convolution, BatchNorm) pair described: paths, shapes and settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvBnInfo {
    /// Path of the convolution.
    pub conv_path: String,
    /// Shape of its weight `[out, in / groups, k, k]`.
    pub conv_shape: Vec<usize>,
    /// Its stride.
    pub stride: usize,
    /// Its padding layout.
    pub padding: super::Padding,
    /// Path of the BatchNorm.
    pub bn_path: String,
    /// The BatchNorm's ε.
    pub epsilon: f64,
    /// Whether the BatchNorm holds real running statistics (see [`BatchNorm2d::has_statistics`]).
    pub has_statistics: bool,
    /// Whether the BatchNorm is folded into the convolution ([`fuse_conv_bn`]).
    pub folded: bool,
}

/// Folds the eval-mode transform of `bn` into `conv` (exact in eval mode): the kernel is scaled
/// per output channel and the shift becomes the conv's bias, so inference runs one operation
/// where it ran three. `bn` keeps its tensors (and its trainability) but passes its input through
/// in eval mode. Meant for frozen layers and inference (`ImageClassifier::fuse_for_inference`).
pub fn fuse_conv_bn<B: ConvBackend>(conv: &mut Conv2d<B>, bn: &mut BatchNorm2d<B>) {
    if bn.folded {
        return;
    }
    let (scale, shift) = bn.eval_scale_shift();
    let out = conv.out_channels();
    let weight = conv.weight.val().detach() * scale.clone().reshape([out, 1, 1, 1]);
    let bias = match &conv.bias {
        Some(b) => b.val().detach() * scale + shift,
        None => shift,
    };
    conv.weight = Param::initialized(conv.weight.id, weight);
    conv.bias = Some(Param::from_tensor(bias.detach()));
    bn.folded = true;
}
