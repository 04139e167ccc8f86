//! The wgpu backend on the convolution seam: burn's CubeCL kernels, with two ways around one
//! fault of burn-cubecl 0.21's matrix product on wgpu.
//!
//! The fault: a product whose summed dimension `K` is 8 modulo 16 (40, 72, 120, 168... terms)
//! is wrong at some sizes, in every operand layout and whatever the Vulkan driver's vector width
//! (`[2, 120, 72] · [2, 72, 784]`: errors of 40 % of the largest value; measured on lavapipe,
//! `K` = 4..200 in steps of 4 and odd sizes: every wrong product had `K` = 8 mod 16, and no
//! other). Autotuning picks kernels by speed, so a run may or may not meet it. MobileNetV3-Large
//! does (`features.5`: 40 → 120 channels; squeeze-and-excitation 672 → 168 → 672).
//!
//! - The crate's own products (fully connected layers, squeeze-and-excitation, 1×1 convolutions
//!   while training) go through [`matmul`](super::matmul), which pads such dimensions with zeros
//!   to a multiple of 16 here ([`ConvBackend::MATMUL_NEEDS_PADDING`]).
//! - burn's 1×1 forward convolution autotunes between a direct kernel and a matrix product
//!   (`conv_im2col_1x1`), so 1×1 convolutions run as that padded product instead:
//!   `weight [1, C_out, C_in] × x [N, C_in, H·W]`. Other convolutions, and every convolution
//!   gradient, use burn's kernels, which agree with the CPU's for the five networks' shapes.

use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps};
use burn::tensor::{Tensor, TensorMetadata, TensorPrimitive};

use super::{ConvBackend, matmul};
use crate::backend::Wgpu;

impl ConvBackend for Wgpu {
    const MATMUL_NEEDS_PADDING: bool = true;

    fn conv2d_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        if !is_pointwise(&weight.shape().dims::<4>(), &options) {
            return Self::conv2d(x, weight, bias, options);
        }
        pointwise_as_matmul::<Self>(x, weight, bias)
    }
}

/// A 1×1 convolution that keeps the image's size and mixes all channels.
fn is_pointwise(weight: &[usize; 4], options: &ConvOptions<2>) -> bool {
    weight[2..] == [1, 1]
        && options.stride == [1, 1]
        && options.padding == [0, 0]
        && options.dilation == [1, 1]
        && options.groups == 1
}

/// `y[n] = W · x[n] (+ b)` with `x[n]` the `[C_in, H·W]` image: the pointwise convolution as a
/// batched matrix product.
fn pointwise_as_matmul<B: ConvBackend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
) -> FloatTensor<B> {
    let [n, c_in, h, w] = x.shape().dims::<4>();
    let c_out = weight.shape().dims::<4>()[0];
    let x = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x)).reshape([n, c_in, h * w]);
    let weight = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(weight))
        .reshape([1, c_out, c_in])
        .expand([n, c_out, c_in]);
    let mut y = matmul(weight, x);
    if let Some(bias) = bias {
        y = y + Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(bias)).reshape([1, c_out, 1]);
    }
    y.reshape([n, c_out, h, w]).into_primitive().tensor()
}
