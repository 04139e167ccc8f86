//! The building blocks of the native models: convolution, batch normalisation and linear layers
//! that store their tensors exactly as torchvision does (`weight`, `bias`, `running_mean`,
//! `running_var`; a Linear weight is `[out, in]`), so parameter paths equal state-dict keys.
//!
//! Owning these layers (rather than using `burn::nn`'s) is what lets the crate pick the fastest
//! formulation of each operation per backend, keep TensorFlow "SAME" padding exact, and fold a
//! frozen BatchNorm into the preceding convolution.

use burn::module::{Module, Param};

use super::buffer::Buffer;
use burn::tensor::backend::Backend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::PaddedConvOptions;
use burn::tensor::{Distribution, Tensor};

/// How the spatial padding of the 3×3 convolutions is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Padding {
    /// PyTorch / torchvision: `kernel / 2` on every side.
    #[default]
    Symmetric,
    /// TensorFlow "SAME": the total padding `max(k - s, 0)` (even inputs) is split with the smaller
    /// half at the top/left, so stride-2 3×3 convolutions pad 0 top/left and 1 bottom/right.
    /// Needed for weights trained in TensorFlow / Keras.
    TfSame,
}

// A constant of the modules that use it: no tensors, no record entry.
use burn::empty;
empty!(Padding);

impl std::fmt::Display for Padding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Padding::Symmetric => write!(f, "symmetric"),
            Padding::TfSame => write!(f, "tf-same"),
        }
    }
}

impl Padding {
    /// Padding `[top, left, bottom, right]` for a square `kernel` with `stride` on an input of
    /// `height × width` (TfSame depends on the input size; Symmetric does not).
    pub fn amounts(self, kernel: usize, stride: usize, height: usize, width: usize) -> [usize; 4] {
        match self {
            Padding::Symmetric => {
                let p = kernel / 2;
                [p, p, p, p]
            }
            Padding::TfSame => {
                let total = |size: usize| {
                    let out = size.div_ceil(stride);
                    ((out - 1) * stride + kernel).saturating_sub(size)
                };
                let (th, tw) = (total(height), total(width));
                [th / 2, tw / 2, th - th / 2, tw - tw / 2]
            }
        }
    }
}

/// 2-D convolution with torchvision's tensor layout: `weight` `[out, in / groups, k, k]`, optional
/// `bias` `[out]`.
#[derive(Module, Debug)]
pub struct Conv2d<B: Backend> {
    /// Kernel `[out_channels, in_channels / groups, kernel, kernel]`.
    pub weight: Param<Tensor<B, 4>>,
    /// Optional bias `[out_channels]` (torchvision convolutions before a BatchNorm have none).
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Stride (same in both directions).
    pub stride: usize,
    /// Number of groups (`in_channels` for a depthwise convolution).
    pub groups: usize,
    /// Padding layout.
    pub padding: Padding,
}

impl<B: Backend> Conv2d<B> {
    /// A convolution with Kaiming-normal (fan-out) weights, torchvision's init for its CNNs.
    #[allow(clippy::too_many_arguments)] // mirrors `nn.Conv2d(in, out, k, stride, padding, groups, bias)`
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
        bias: bool,
        padding: Padding,
        device: &B::Device,
    ) -> Self {
        let fan_out = (out_channels * kernel * kernel / groups).max(1) as f64;
        let std = (2.0 / fan_out).sqrt();
        let weight = Tensor::random(
            [out_channels, in_channels / groups, kernel, kernel],
            Distribution::Normal(0.0, std),
            device,
        );
        Self {
            weight: Param::from_tensor(weight),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([out_channels], device))),
            stride,
            groups,
            padding,
        }
    }

    /// Kernel size (square kernels only).
    pub fn kernel_size(&self) -> usize {
        self.weight.shape()[2]
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.weight.shape()[1] * self.groups
    }

    /// Output spatial size for an input of `height × width`.
    pub fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        let k = self.kernel_size();
        let [t, l, b, r] = self.padding.amounts(k, self.stride, height, width);
        (
            (height + t + b - k) / self.stride + 1,
            (width + l + r - k) / self.stride + 1,
        )
    }

    /// Applies the convolution to `[N, C, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, _, h, w] = x.dims();
        let k = self.kernel_size();
        // Only where gradients are recorded: for inference the backend's own 1×1 path is faster.
        if k == 1 && self.stride == 1 && self.groups == 1 && B::ad_enabled(&x.device()) {
            return self
                .forward_pointwise(x.reshape([n, self.in_channels(), h * w]))
                .reshape([n, self.out_channels(), h, w]);
        }
        let [t, l, b, r] = self.padding.amounts(k, self.stride, h, w);
        let options = PaddedConvOptions::asymmetric(
            [self.stride, self.stride],
            [t, l],
            [b, r],
            [1, 1],
            self.groups,
        );
        conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            options,
        )
    }

    /// A 1×1, stride-1 convolution as one batched matrix product `[Cout, Cin] @ [N, Cin, H·W]`.
    ///
    /// The result equals `conv2d`'s, and the backward pass is two strided matrix products as
    /// well, where a backend's generic convolution backward transposes and copies the
    /// activations and runs a transposed convolution (MobileNetV2's 1×1 layers hold 97 % of
    /// its weights and most of its FLOPs).
    fn forward_pointwise(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, _, _] = x.dims();
        let [out, inp, _, _] = self.weight.dims();
        let y = self.weight.val().reshape([1, out, inp]).matmul(x);
        match &self.bias {
            Some(b) => y + per_channel_rows(b.val(), n),
            None => y,
        }
    }
}

/// A per-channel vector `[C]` laid out as `[N, C, 1]`, to combine with an activation viewed as
/// `[N, C, H·W]`: each broadcast (and its gradient) is then a per-row scalar, which CPU backends
/// vectorise, where a `[1, C, 1, 1]` operand broadcast over N and H, W makes burn-flex walk the
/// activation element by element. The copy costs N·C elements.
fn per_channel_rows<B: Backend>(t: Tensor<B, 1>, n: usize) -> Tensor<B, 3> {
    let [c] = t.dims();
    t.reshape([1, c, 1]).repeat_dim(0, n)
}

/// Batch normalisation over channels with torchvision's names and semantics (momentum 0.1,
/// running variance updated with the unbiased batch variance).
///
/// It normalises with batch statistics (and updates its running statistics) only when the
/// backend records gradients *and* its own affine parameters are trainable; a frozen BatchNorm
/// always uses its running statistics — what the PyTorch recipes get from `model.eval()` on
/// frozen layers.
#[derive(Module, Debug)]
pub struct BatchNorm2d<B: Backend> {
    /// Scale γ `[C]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift β `[C]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Running mean `[C]` (a buffer, not trained by the optimizer).
    pub running_mean: Buffer<1, B>,
    /// Running variance `[C]` (a buffer).
    pub running_var: Buffer<1, B>,
    /// Weight of the new batch statistics in the running averages.
    pub momentum: f64,
    /// Added to the variance for numerical stability.
    pub epsilon: f64,
    /// Set by [`fuse_conv_bn`]: the preceding convolution already applies this layer's eval
    /// transform, so in eval mode the layer passes its input through.
    pub folded: bool,
}

impl<B: Backend> BatchNorm2d<B> {
    /// Identity-initialised BatchNorm over `channels` (γ = 1, β = 0, mean 0, var 1), eps 1e-5.
    pub fn new(channels: usize, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            running_mean: Buffer::new(Tensor::zeros([channels], device)),
            running_var: Buffer::new(Tensor::ones([channels], device)),
            momentum: 0.1,
            epsilon: 1e-5,
            folded: false,
        }
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Whether this layer normalises with batch statistics in the current context.
    pub fn uses_batch_statistics(&self) -> bool {
        let weight = self.weight.val();
        B::ad_enabled(&weight.device()) && weight.is_require_grad()
    }

    /// The per-channel affine map `x * scale + shift` equivalent to this layer in eval mode.
    pub fn eval_scale_shift(&self) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let scale = self.weight.val() / self.running_var.value().add_scalar(self.epsilon).sqrt();
        let shift = self.bias.val() - self.running_mean.value() * scale.clone();
        (scale, shift)
    }

    /// Applies the layer to `[N, C, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let batch_statistics = self.uses_batch_statistics();
        if !batch_statistics && self.folded {
            return x;
        }
        let [n, c, h, w] = x.dims();
        // Laid out as [N, C, H·W]: the reductions run over the contiguous last axis, and the
        // per-channel tensors join it as [N, C, 1] rows (see `per_channel_rows`).
        let x = x.reshape([n, c, h * w]);
        let per_row = |t: Tensor<B, 1>| per_channel_rows(t, n);
        if !batch_statistics {
            let (scale, shift) = self.eval_scale_shift();
            return (x * per_row(scale) + per_row(shift)).reshape([n, c, h, w]);
        }
        let count = n * h * w;
        // [N, C, H·W] -> [C]
        let channel_mean = |t: Tensor<B, 3>| {
            t.sum_dim(2)
                .sum_dim(0)
                .reshape([c])
                .div_scalar(count as f64)
        };
        let mean = channel_mean(x.clone());
        let centered = x - per_row(mean.clone());
        let var = channel_mean(centered.clone().square()); // biased: what normalises
        let scale = var.clone().add_scalar(self.epsilon).sqrt().recip() * self.weight.val();
        let y = (centered * per_row(scale) + per_row(self.bias.val())).reshape([n, c, h, w]);

        let m = self.momentum;
        let unbiased = var.detach() * (count as f64 / (count.max(2) - 1) as f64);
        let new_mean = self.running_mean.value().mul_scalar(1.0 - m) + mean.detach().mul_scalar(m);
        let new_var = self.running_var.value().mul_scalar(1.0 - m) + unbiased.mul_scalar(m);
        self.running_mean.update(new_mean);
        self.running_var.update(new_var);
        y
    }
}

/// Fully connected layer with torchvision's layout: `weight` `[out, in]`, `bias` `[out]`.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// Weight `[out_features, in_features]`.
    pub weight: Param<Tensor<B, 2>>,
    /// Bias `[out_features]`.
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> Linear<B> {
    /// A layer initialised like PyTorch's `nn.Linear` (uniform ±1/√in for weight and bias).
    pub fn new(in_features: usize, out_features: usize, device: &B::Device) -> Self {
        let bound = 1.0 / (in_features as f64).sqrt();
        Self {
            weight: Param::from_tensor(Tensor::random(
                [out_features, in_features],
                Distribution::Uniform(-bound, bound),
                device,
            )),
            bias: Param::from_tensor(Tensor::random(
                [out_features],
                Distribution::Uniform(-bound, bound),
                device,
            )),
        }
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Applies the layer to `[N, in]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        x.matmul(self.weight.val().transpose()) + self.bias.val().unsqueeze()
    }
}

/// Conv → BatchNorm pair: torchvision's `Conv2dNormActivation` without its parameter-free
/// activation, so its parameters live at `.0.*` (conv) and `.1.*` (norm).
pub type ConvBn<B> = (Conv2d<B>, BatchNorm2d<B>);

/// Builds a bias-free conv followed by a BatchNorm.
pub fn conv_bn<B: Backend>(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    groups: usize,
    padding: Padding,
    device: &B::Device,
) -> ConvBn<B> {
    (
        Conv2d::new(
            in_channels,
            out_channels,
            kernel,
            stride,
            groups,
            false,
            padding,
            device,
        ),
        BatchNorm2d::new(out_channels, device),
    )
}

/// Folds the eval-mode transform of `bn` into `conv` (exact in eval mode): the kernel is scaled
/// per output channel and the shift becomes the conv's bias, so inference runs one operation
/// where it ran three. `bn` keeps its tensors (and its trainability) but passes its input through
/// in eval mode. Meant for frozen layers and inference; see `fuse_for_inference` on the models.
pub fn fuse_conv_bn<B: Backend>(conv: &mut Conv2d<B>, bn: &mut BatchNorm2d<B>) {
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

/// Runs a [`ConvBn`] pair.
pub fn forward_conv_bn<B: Backend>(layer: &ConvBn<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    layer.1.forward(layer.0.forward(x))
}

/// ReLU6, `min(max(x, 0), 6)`.
pub fn relu6<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    x.clamp(0.0, 6.0)
}

/// A convolution and the BatchNorm that follows it, with their parameter paths. Models list
/// these in execution order; weight import and BatchNorm folding walk them.
#[derive(Debug)]
pub struct ConvBnRef<'a, B: Backend> {
    /// Path of the convolution (e.g. `features.2.conv.0.0`).
    pub conv_path: String,
    /// The convolution.
    pub conv: &'a Conv2d<B>,
    /// Path of the BatchNorm (e.g. `features.2.conv.0.1`).
    pub bn_path: String,
    /// The BatchNorm.
    pub bn: &'a BatchNorm2d<B>,
}

impl<'a, B: Backend> ConvBnRef<'a, B> {
    /// A pair at explicit paths.
    pub fn new(
        conv_path: &str,
        conv: &'a Conv2d<B>,
        bn_path: &str,
        bn: &'a BatchNorm2d<B>,
    ) -> Self {
        Self {
            conv_path: conv_path.into(),
            conv,
            bn_path: bn_path.into(),
            bn,
        }
    }

    /// A [`ConvBn`] tuple at `path` (conv at `path.0`, BatchNorm at `path.1`).
    pub fn pair(path: &str, layer: &'a ConvBn<B>) -> Self {
        Self::new(
            &format!("{path}.0"),
            &layer.0,
            &format!("{path}.1"),
            &layer.1,
        )
    }

    /// The same pair with `prefix.` put in front of both paths.
    pub fn prefixed(self, prefix: &str) -> Self {
        Self {
            conv_path: format!("{prefix}.{}", self.conv_path),
            bn_path: format!("{prefix}.{}", self.bn_path),
            ..self
        }
    }
}
