//! 2-D convolution in torchvision's layout, with a faster formulation of 1×1 convolutions while
//! training.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::ops::{ConvOptions, PadMode};
use burn::tensor::{Distribution, Tensor, TensorPrimitive};

use super::activation::apply_kernel;
use super::{Padding, per_channel_rows};
use crate::kernels::{ConvActivation, ConvBackend, matmul, matmul_transposed};
use crate::models::summary::{self, LayerRow};

/// Configuration of a [`Conv2d`], named like `torch.nn.Conv2d(in, out, kernel, stride, groups,
/// bias)`.
#[derive(Config, Debug, PartialEq)]
pub struct Conv2dConfig {
    /// Input and output channels `[in, out]`.
    pub channels: [usize; 2],
    /// Side of the square kernel.
    pub kernel_size: usize,
    /// Stride (same in both directions).
    #[config(default = 1)]
    pub stride: usize,
    /// Number of groups (`in_channels` for a depthwise convolution).
    #[config(default = 1)]
    pub groups: usize,
    /// Whether the layer has a bias (torchvision's convolutions before a BatchNorm have none).
    #[config(default = true)]
    pub bias: bool,
    /// Padding layout.
    #[config(default = "Padding::Symmetric")]
    pub padding: Padding,
}

impl Conv2dConfig {
    /// A convolution with Kaiming-normal (fan-out) weights, torchvision's init for its CNNs, and
    /// a zero bias.
    pub fn init<B: ConvBackend>(&self, device: &B::Device) -> Conv2d<B> {
        let [in_channels, out_channels] = self.channels;
        let k = self.kernel_size;
        let fan_out = (out_channels * k * k / self.groups).max(1) as f64;
        let weight = Tensor::random(
            [out_channels, in_channels / self.groups, k, k],
            Distribution::Normal(0.0, (2.0 / fan_out).sqrt()),
            device,
        );
        Conv2d {
            weight: Param::from_tensor(weight),
            bias: self
                .bias
                .then(|| Param::from_tensor(Tensor::zeros([out_channels], device))),
            stride: self.stride,
            groups: self.groups,
            padding: self.padding,
        }
    }
}

/// 2-D convolution with torchvision's tensor layout: `weight` `[out, in / groups, k, k]`, optional
/// `bias` `[out]`.
#[derive(Module, Debug)]
pub struct Conv2d<B: ConvBackend> {
    /// Kernel `[out_channels, in_channels / groups, kernel, kernel]`.
    pub weight: Param<Tensor<B, 4>>,
    /// Optional bias `[out_channels]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Stride (same in both directions).
    pub stride: usize,
    /// Number of groups (`in_channels` for a depthwise convolution).
    pub groups: usize,
    /// Padding layout.
    pub padding: Padding,
}

impl<B: ConvBackend> Conv2d<B> {
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

    /// Number of parameters (weight and bias).
    pub fn num_params(&self) -> usize {
        self.weight.shape().num_elements() + self.bias.as_ref().map_or(0, |b| b.shape()[0])
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
        self.forward_with(x, None)
    }

    /// `activation(self.forward(x))`, the activation applied by the convolution kernel as it
    /// writes the output where the backend does that ([`ConvBackend::conv2d_activated`]).
    pub fn forward_activated(&self, x: Tensor<B, 4>, activation: ConvActivation) -> Tensor<B, 4> {
        self.forward_with(x, Some(activation))
    }

    fn forward_with(&self, x: Tensor<B, 4>, activation: Option<ConvActivation>) -> Tensor<B, 4> {
        let [n, _, h, w] = x.dims();
        let k = self.kernel_size();
        // Where gradients are recorded on a backend whose convolution backward is generic, and
        // where the backend's own 1×1 path is a matrix product that must be padded (wgpu);
        // otherwise the backend's convolution is faster.
        let as_matmul = (B::POINTWISE_AS_MATMUL_IN_TRAINING && B::ad_enabled(&x.device()))
            || B::MATMUL_NEEDS_PADDING;
        let y = if k == 1 && self.stride == 1 && self.groups == 1 && as_matmul {
            let y = self
                .forward_pointwise(x.reshape([n, self.in_channels(), h * w]))
                .reshape([n, self.out_channels(), h, w]);
            match activation {
                Some(activation) => apply_kernel(y, activation),
                None => y,
            }
        } else {
            let [t, l, b, r] = self.padding.amounts(k, self.stride, h, w);
            conv2d_padded(
                x,
                self.weight.val(),
                self.bias.as_ref().map(|b| b.val()),
                [t, l, b, r],
                self.stride,
                self.groups,
                activation,
            )
        };
        let [_, out, oh, ow] = y.dims();
        let unfolded = if k > 1 && self.groups == 1 {
            self.in_channels() * k * k * oh * ow
        } else {
            0
        };
        let row = LayerRow::new("", "Conv2d", vec![out, oh, ow], self.num_params());
        summary::record_row(self.weight.id, row.with_unfolded(unfolded));
        y
    }

    /// This 1×1 convolution applied to `[N, in]` vectors (a `[N, in, 1, 1]` input flattened),
    /// as one matrix product: squeeze-and-excitation's layers on pooled features.
    pub fn forward_flat(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, _] = x.dims();
        let [out, inp, _, _] = self.weight.dims();
        let y = matmul_transposed(x, self.weight.val().reshape([out, inp]));
        let y = match &self.bias {
            Some(b) => y + b.val().unsqueeze(),
            None => y,
        };
        summary::record_layer(self.weight.id, "Conv2d", &[n, out, 1, 1], self.num_params());
        y
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
        let y = matmul(self.weight.val().reshape([1, out, inp]), x);
        match &self.bias {
            Some(b) => y + per_channel_rows(b.val(), n),
            None => y,
        }
    }
}

/// A 2-D convolution through [`ConvBackend`] with padding `[top, left, bottom, right]`: symmetric
/// padding goes to the kernel, asymmetric padding (TensorFlow's "SAME" at stride 2) is applied
/// to the input first, as burn's own `conv2d` does.
fn conv2d_padded<B: ConvBackend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    [top, left, bottom, right]: [usize; 4],
    stride: usize,
    groups: usize,
    activation: Option<ConvActivation>,
) -> Tensor<B, 4> {
    let (x, padding) = if top == bottom && left == right {
        (x, [top, left])
    } else {
        (
            x.pad((left, right, top, bottom), PadMode::Constant(0.0)),
            [0, 0],
        )
    };
    let options = ConvOptions::new([stride, stride], padding, [1, 1], groups);
    let (x, weight) = (
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
    );
    let bias = bias.map(|b| b.into_primitive().tensor());
    Tensor::new(TensorPrimitive::Float(match activation {
        Some(activation) => B::conv2d_activated(x, weight, bias, options, activation),
        None => B::conv2d_forward(x, weight, bias, options),
    }))
}
