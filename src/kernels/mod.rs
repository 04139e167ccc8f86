//! The convolution seam: one backend extension through which every convolution of the native
//! models runs, forward and backward, and the layers around them that need kernels of their own.
//!
//! [`ConvBackend`] has three convolution operations: the forward convolution, the gradient with
//! respect to its input and the gradient with respect to its weight; the forward convolution
//! with its activation applied as the output is written ([`ConvActivation`], the inference path
//! on folded weights); SiLU, Hardtanh and Hardswish with their gradients; the
//! squeeze-and-excitation gate's channel scale with its gradient; a training-mode BatchNorm
//! with its gradients; and max pooling with its gradient.
//! Their default bodies are the backend's own (`B::conv2d`, `B::conv2d_x_backward`,
//! `B::conv2d_weight_backward`; `x · sigmoid(x)`), which is what NdArray and CUDA use. burn-flex,
//! the default CPU backend, overrides them with the crate's own kernels ([`cpu`]), and the [`Autodiff`](burn::backend::Autodiff) implementation records a backward step that calls
//! the inner backend's gradients, so training on `Autodiff<Flex>` runs the crate's kernels both
//! ways. wgpu keeps burn's kernels, with its matrix products padded (`src/kernels/wgpu.rs` says why).
//! Another burn backend joins here with one line, `impl ConvBackend for Rocm {}` say (the orphan
//! rule keeps that line in this crate); a backend type of a user's own joins in the user's crate
//! the same way.
//!
//! burn's book calls this pattern a backend extension: burn's `ModuleOps` cannot be implemented
//! again for a backend the crate does not own, so the models are generic over this trait instead
//! of `Backend` alone.

mod adam;
mod autodiff;
#[cfg(feature = "flex")]
pub mod cpu;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "wgpu")]
mod wgpu;

pub use adam::{AdamCoefficients, AdamOperands};

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{ConvOptions, FloatTensor, PadMode};
use burn::tensor::{Tensor, TensorMetadata, TensorPrimitive};

/// SiLU with the backend's own operations: `x · σ(x)`.
fn silu_with_ops<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::float_mul(x.clone(), B::sigmoid(x))
}

/// SiLU's gradient with the backend's own operations: `grad · σ(x) · (1 + x · (1 − σ(x)))`.
fn silu_grad_with_ops<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let s = B::sigmoid(x.clone());
    let one_minus_s = B::float_add_scalar(B::float_neg(s.clone()), 1.0.into());
    let slope = B::float_add_scalar(B::float_mul(x, one_minus_s), 1.0.into());
    B::float_mul(grad, B::float_mul(s, slope))
}

/// Hardtanh's gradient with the backend's own operations.
fn hardtanh_grad_with_ops<B: Backend>(
    x: FloatTensor<B>,
    grad: FloatTensor<B>,
    min: f32,
    max: f32,
) -> FloatTensor<B> {
    // Flat, so that one body serves every rank.
    let shape = x.shape();
    let flat =
        |t: FloatTensor<B>| float::<B, 1>(B::float_reshape(t, [shape.num_elements()].into()));
    let (x, grad) = (flat(x), flat(grad));
    let outside = x
        .clone()
        .lower_equal_elem(min)
        .bool_or(x.greater_equal_elem(max));
    B::float_reshape(
        grad.mask_fill(outside, 0.0).into_primitive().tensor(),
        shape,
    )
}

/// Hardswish with the backend's own operations, in torch's order of rounding:
/// `x · clamp(x + 3, 0, 6) / 6`.
fn hardswish_with_ops<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let gate = B::float_clamp(
        B::float_add_scalar(x.clone(), 3.0.into()),
        0.0.into(),
        6.0.into(),
    );
    B::float_div_scalar(B::float_mul(x, gate), 6.0.into())
}

/// Hardswish's gradient with the backend's own operations, torch's `hardswish_backward`: 0 for
/// `x < −3`, `grad · (x / 3 + 0.5)` for `−3 ≤ x ≤ 3`, `grad` above.
fn hardswish_grad_with_ops<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let shape = x.shape();
    let flat =
        |t: FloatTensor<B>| float::<B, 1>(B::float_reshape(t, [shape.num_elements()].into()));
    let (x, grad) = (flat(x), flat(grad));
    let slope = x.clone().div_scalar(3.0).add_scalar(0.5);
    let middle = grad.clone() * slope;
    let dx = middle
        .mask_where(x.clone().greater_elem(3.0), grad)
        .mask_fill(x.lower_elem(-3.0), 0.0);
    B::float_reshape(dx.into_primitive().tensor(), shape)
}

/// [`ConvBackend::channel_scale`] with the backend's own operations: a `[N, C, 1]` broadcast
/// over `[N, C, H·W]`.
fn channel_scale_with_ops<B: Backend>(x: FloatTensor<B>, scale: FloatTensor<B>) -> FloatTensor<B> {
    let x = float::<B, 4>(x);
    let [n, c, h, w] = x.dims();
    let scale = float::<B, 2>(scale).reshape([n, c, 1]);
    (x.reshape([n, c, h * w]) * scale)
        .reshape([n, c, h, w])
        .into_primitive()
        .tensor()
}

/// [`ConvBackend::channel_scale_grad`] with the backend's own operations.
fn channel_scale_grad_with_ops<B: Backend>(
    x: FloatTensor<B>,
    output_grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let x = float::<B, 4>(x);
    let [n, c, h, w] = x.dims();
    let dy = float::<B, 4>(output_grad).reshape([n, c, h * w]);
    (x.reshape([n, c, h * w]) * dy)
        .sum_dim(2)
        .reshape([n, c])
        .into_primitive()
        .tensor()
}

fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// The per-channel `[C]` tensor `t` as `[1, C, 1]`, to broadcast over `[N, C, H·W]`.
fn channel_rows<B: Backend>(t: Tensor<B, 1>) -> Tensor<B, 3> {
    let [c] = t.dims();
    t.reshape([1, c, 1])
}

/// `1 / √(var + ε)`, rounded once as the division it is. Not `recip()`: burn-ndarray computes
/// that with the processor's approximate reciprocal (`rcp14`, 14 bits) in its SIMD lanes and
/// exactly in the scalar remainder, so the BatchNorm's scale depended on where the buffer
/// happened to start: training on burn-ndarray was not repeatable in the 7th digit.
fn inv_std<B: Backend>(var: Tensor<B, 1>, epsilon: f64) -> Tensor<B, 1> {
    let std = var.add_scalar(epsilon).sqrt();
    Tensor::ones_like(&std) / std
}

/// [`ConvBackend::batch_norm_train`] with the backend's own operations.
fn batch_norm_train_with_ops<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let x = float::<B, 4>(x);
    let [n, c, h, w] = x.dims();
    let count = (n * h * w) as f64;
    // [N, C, H·W]: the reductions run over the contiguous last axis.
    let x = x.reshape([n, c, h * w]);
    let channel_mean = |t: Tensor<B, 3>| t.sum_dim(2).sum_dim(0).reshape([c]).div_scalar(count);
    let mean = channel_mean(x.clone());
    let centered = x - channel_rows(mean.clone());
    let var = channel_mean(centered.clone().square());
    let scale = inv_std(var.clone(), epsilon) * float::<B, 1>(gamma);
    let y = centered * channel_rows(scale) + channel_rows(float::<B, 1>(beta));
    (
        y.reshape([n, c, h, w]).into_primitive().tensor(),
        mean.into_primitive().tensor(),
        var.into_primitive().tensor(),
    )
}

/// [`ConvBackend::batch_norm_train_grad`] with the backend's own operations.
fn batch_norm_train_grad_with_ops<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    mean: FloatTensor<B>,
    var: FloatTensor<B>,
    epsilon: f64,
    output_grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let x = float::<B, 4>(x);
    let [n, c, h, w] = x.dims();
    let count = (n * h * w) as f64;
    let per_channel_sum = |t: Tensor<B, 3>| t.sum_dim(2).sum_dim(0).reshape([c]);
    let inv_std = inv_std(float::<B, 1>(var), epsilon);
    let x_hat = (x.reshape([n, c, h * w]) - channel_rows(float::<B, 1>(mean)))
        * channel_rows(inv_std.clone());
    let dy = float::<B, 4>(output_grad).reshape([n, c, h * w]);
    let dbeta = per_channel_sum(dy.clone());
    let dgamma = per_channel_sum(dy.clone() * x_hat.clone());
    let k = float::<B, 1>(gamma) * inv_std;
    let dx = (dy
        - channel_rows(dbeta.clone().div_scalar(count))
        - x_hat * channel_rows(dgamma.clone().div_scalar(count)))
        * channel_rows(k);
    (
        dx.reshape([n, c, h, w]).into_primitive().tensor(),
        dgamma.into_primitive().tensor(),
        dbeta.into_primitive().tensor(),
    )
}

/// [`ConvBackend::max_pool2d_input_grad`] with the backend's own operations: its indexed max
/// pooling, then the backward pass of that.
fn max_pool2d_input_grad_with_ops<B: Backend>(
    x: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> FloatTensor<B> {
    let indices =
        B::max_pool2d_with_indices(x.clone(), kernel, stride, padding, [1, 1], false).indices;
    B::max_pool2d_with_indices_backward(
        x,
        kernel,
        stride,
        padding,
        [1, 1],
        false,
        output_grad,
        indices,
    )
    .x_grad
}

/// An element-wise activation that a convolution can apply as it writes its output
/// ([`ConvBackend::conv2d_activated`]): at inference, with the BatchNorm folded into the
/// convolution, what follows each convolution of these networks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConvActivation {
    /// `max(x, 0)` (ResNet, MobileNetV3's first blocks).
    Relu,
    /// `clamp(x, min, max)`: ReLU6 is `Hardtanh { min: 0.0, max: 6.0 }` (MobileNetV2).
    Hardtanh {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// `x · clamp(x + 3, 0, 6) / 6` (MobileNetV3).
    Hardswish,
    /// `x · σ(x)` (EfficientNet).
    Silu,
}

impl ConvActivation {
    /// `(min, max)` for an activation that is a clamp (ReLU is `(0, ∞)`), so that a kernel can
    /// apply it in registers; `None` for the others.
    pub fn bounds(self) -> Option<(f32, f32)> {
        match self {
            ConvActivation::Relu => Some((0.0, f32::INFINITY)),
            ConvActivation::Hardtanh { min, max } => Some((min, max)),
            ConvActivation::Hardswish | ConvActivation::Silu => None,
        }
    }

    /// The activation through the backend's operations (recorded under autodiff).
    pub fn apply<B: ConvBackend>(self, y: FloatTensor<B>) -> FloatTensor<B> {
        match self {
            // The Hardtanh step keeps the output (the next layer's input, kept anyway), where
            // burn's `relu` keeps its input (ResNet18's full step peaked 145 MiB higher with it).
            ConvActivation::Relu => B::hardtanh(y, 0.0, f32::INFINITY),
            ConvActivation::Hardtanh { min, max } => B::hardtanh(y, min, max),
            ConvActivation::Hardswish => B::hardswish(y),
            ConvActivation::Silu => B::silu(y),
        }
    }
}

/// A backend whose 2-D convolutions the native models call: forward (plain, or with its
/// activation), input gradient and weight gradient; and the activations, gate, BatchNorm and
/// pooling listed in the [module](self) documentation. Every method has the backend's own
/// implementation as its default.
///
/// Shapes, as in burn's `ModuleOps::conv2d`: `x` `[N, C_in, H, W]`, `weight`
/// `[C_out, C_in / groups, kH, kW]`, `bias` `[C_out]`, output gradient `[N, C_out, oH, oW]`.
pub trait ConvBackend: Backend {
    /// Whether this backend's matrix product needs every matrix dimension that is 8 modulo 16
    /// padded with zeros to a multiple of 16 to be exact (burn-cubecl 0.21 on wgpu; see
    /// `src/kernels/wgpu.rs`). The crate's layers multiply through [`matmul`], which does it.
    const MATMUL_NEEDS_PADDING: bool = false;

    /// Whether the layers run a 1×1, stride-1 convolution as a matrix product where gradients
    /// are recorded, instead of through [`conv2d_forward`](Self::conv2d_forward) and its
    /// gradients. True by default: a backend's generic convolution backward transposes and
    /// copies the activations and runs a transposed convolution, where the matrix product's
    /// backward is two products. False on burn-flex, whose convolution gradients are the crate's
    /// kernels (a 1×1 layer multiplies the activation in place, and its weight gradient sums
    /// per-thread products): MobileNetV2's last-blocks training step took 20 % less that way.
    const POINTWISE_AS_MATMUL_IN_TRAINING: bool = true;

    /// The largest buffer, in bytes, one tensor may occupy on `device`, where the backend has
    /// such a limit below the device's memory (wgpu: the adapter's storage-buffer binding size,
    /// 128 MiB on some drivers); `None` where only the memory itself limits a tensor. Batches
    /// are sized by it (see [`crate::train::DeviceBatchLimit`]), since a backend asked for a
    /// larger buffer aborts the process.
    fn max_buffer_bytes(_device: &Self::Device) -> Option<u64> {
        None
    }

    /// Runs `pass`, a whole inference pass, on the threads that this backend's CPU kernels split
    /// their work over, and returns what it returns. The default runs it where it is called.
    /// burn-flex runs it on a worker of rayon's pool: called from another thread, every
    /// parallel operation is handed to the pool while the caller sleeps until it ends, two
    /// thread wake-ups per operation, which at batch 1 cost a third of MobileNetV2's inference
    /// time on two cores. The pool's other workers spin between the pass's operations instead
    /// of parking (for at most half a millisecond without work). Nested calls run in place.
    /// Autodiff backends keep the default: a training step's forward pass on a worker
    /// allocated its tensors from another thread's heap than the rest of the step's (glibc),
    /// which raised ResNet18's peak memory at batch 32 from 770 to 865 MiB, for no speed
    /// measured at batch 16.
    fn on_kernel_threads<R: Send>(pass: impl FnOnce() -> R + Send) -> R {
        pass()
    }

    /// The convolution `y = x ⋆ weight + bias`.
    fn conv2d_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, bias, options)
    }

    /// `activation(x ⋆ weight + bias)`: the convolution and the activation after it, which
    /// a backend may apply as it writes the output (burn-flex: one pass over the output instead
    /// of two). The default is [`conv2d_forward`](Self::conv2d_forward), then the activation;
    /// under autodiff, where anything is tracked, the two recorded operations.
    fn conv2d_activated(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
        activation: ConvActivation,
    ) -> FloatTensor<Self> {
        activation.apply::<Self>(Self::conv2d_forward(x, weight, bias, options))
    }

    /// The gradient of the loss with respect to `x`, given the output gradient.
    fn conv2d_input_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, output_grad, options)
    }

    /// The gradient of the loss with respect to `weight`, given the output gradient.
    fn conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, output_grad, options)
    }

    /// SiLU, `x · σ(x)`, element-wise on a tensor of any rank (EfficientNet's activation).
    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        silu_with_ops::<Self>(x)
    }

    /// The gradient of the loss with respect to SiLU's input `x`, given the output gradient.
    fn silu_grad(x: FloatTensor<Self>, output_grad: FloatTensor<Self>) -> FloatTensor<Self> {
        silu_grad_with_ops::<Self>(x, output_grad)
    }

    /// One step of Adam (burn's `Adam`: L2 weight decay, no AMSGrad) on one parameter tensor:
    /// the new parameter and its first and second moments, where this backend runs the step as
    /// its own operation; else `Err` with the operands unchanged, for burn's `Adam` to run. The
    /// result must be the same bits as burn's (see [`AdamCoefficients`]). Not by default;
    /// burn-flex runs it in one in-place pass over `f32` tensors.
    fn adam_step(
        operands: AdamOperands<Self>,
        _coefficients: &AdamCoefficients,
    ) -> Result<[FloatTensor<Self>; 3], AdamOperands<Self>> {
        Err(operands)
    }

    /// Hardtanh, `clamp(x, min, max)`, element-wise on a tensor of any rank (ReLU6 is
    /// Hardtanh(0, 6)).
    fn hardtanh(x: FloatTensor<Self>, min: f32, max: f32) -> FloatTensor<Self> {
        Self::float_clamp(x, min.into(), max.into())
    }

    /// The gradient of the loss with respect to Hardtanh's input `x`, given the output gradient:
    /// the output gradient where `min < x < max`, else 0 (torch's `hardtanh_backward`). `x` may
    /// be the output `hardtanh(x, min, max)` instead (the autodiff step passes it): it lies
    /// strictly inside the bounds exactly where the input does.
    fn hardtanh_grad(
        x: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        min: f32,
        max: f32,
    ) -> FloatTensor<Self> {
        hardtanh_grad_with_ops::<Self>(x, output_grad, min, max)
    }

    /// Hardswish, `x · ReLU6(x + 3) / 6` (MobileNetV3's activation), element-wise on a tensor
    /// of any rank, rounded as torch rounds it: `x · clamp(x + 3, 0, 6) / 6`.
    fn hardswish(x: FloatTensor<Self>) -> FloatTensor<Self> {
        hardswish_with_ops::<Self>(x)
    }

    /// The gradient of the loss with respect to Hardswish's input `x`, given the output
    /// gradient: torch's `hardswish_backward` (0 below −3, `grad · (x / 3 + 0.5)` from −3 to 3,
    /// `grad` above).
    fn hardswish_grad(x: FloatTensor<Self>, output_grad: FloatTensor<Self>) -> FloatTensor<Self> {
        hardswish_grad_with_ops::<Self>(x, output_grad)
    }

    /// Each channel of `x` `[N, C, H, W]` times its own factor of `scale` `[N, C]`: the gate of
    /// a squeeze-and-excitation block (MobileNetV3, EfficientNet). Its gradient with respect to
    /// `x` is this same operation on the output gradient.
    fn channel_scale(x: FloatTensor<Self>, scale: FloatTensor<Self>) -> FloatTensor<Self> {
        channel_scale_with_ops::<Self>(x, scale)
    }

    /// The gradient of the loss with respect to [`channel_scale`](Self::channel_scale)'s
    /// `scale` `[N, C]`, given its input `x` and output gradient: `Σ_{h,w} x · grad` per
    /// (image, channel).
    fn channel_scale_grad(
        x: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        channel_scale_grad_with_ops::<Self>(x, output_grad)
    }

    /// Batch normalisation of `x` `[N, C, H, W]` with the batch's statistics (a BatchNorm in
    /// training mode): `(y, mean, var)` with `y = γ · (x − mean) / √(var + ε) + β`, the
    /// per-channel `mean` and biased `var` `[C]` (what normalises), `gamma` and `beta` `[C]`.
    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        batch_norm_train_with_ops::<Self>(x, gamma, beta, epsilon)
    }

    /// The gradients of [`batch_norm_train`](Self::batch_norm_train) with respect to `x`, `gamma`
    /// and `beta`, given the output gradient and the forward pass's `mean` and `var`.
    fn batch_norm_train_grad(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        epsilon: f64,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        batch_norm_train_grad_with_ops::<Self>(x, gamma, mean, var, epsilon, output_grad)
    }

    /// 2-D max pooling of `x` `[N, C, H, W]` (dilation 1, output sizes rounded down, padding
    /// never the maximum), as torch's `max_pool2d`.
    fn max_pool2d_forward(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        Self::max_pool2d(x, kernel, stride, padding, [1, 1], false)
    }

    /// The gradient of the loss with respect to [`max_pool2d_forward`](Self::max_pool2d_forward)'s
    /// input `x`, given the output gradient: each window's gradient goes to its maximum.
    fn max_pool2d_input_grad(
        x: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        max_pool2d_input_grad_with_ops::<Self>(x, output_grad, kernel, stride, padding)
    }
}

/// A BatchNorm in training mode on `x` `[N, C, H, W]` through [`ConvBackend::batch_norm_train`]:
/// `(y, mean, var)`, the batch's per-channel mean and biased variance (detached from the graph:
/// they feed the running statistics).
pub fn batch_norm_train<B: ConvBackend>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
) -> (Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 1>) {
    let (y, mean, var) = B::batch_norm_train(
        x.into_primitive().tensor(),
        gamma.into_primitive().tensor(),
        beta.into_primitive().tensor(),
        epsilon,
    );
    (float(y), float(mean), float(var))
}

/// Each channel of `x` `[N, C, H, W]` times its factor in `scale` `[N, C]`, through
/// [`ConvBackend::channel_scale`] (a squeeze-and-excitation gate).
pub fn channel_scale<B: ConvBackend>(x: Tensor<B, 4>, scale: Tensor<B, 2>) -> Tensor<B, 4> {
    float(B::channel_scale(
        x.into_primitive().tensor(),
        scale.into_primitive().tensor(),
    ))
}

/// 2-D max pooling of `x` `[N, C, H, W]` through [`ConvBackend::max_pool2d_forward`] (torch's
/// `max_pool2d` with dilation 1; ResNet's pool after the stem).
pub fn max_pool2d<B: ConvBackend>(
    x: Tensor<B, 4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> Tensor<B, 4> {
    float(B::max_pool2d_forward(
        x.into_primitive().tensor(),
        kernel,
        stride,
        padding,
    ))
}

/// `a · b`, batched over the leading dimensions, exact on every backend: where
/// [`ConvBackend::MATMUL_NEEDS_PADDING`], each of `M`, `K` and `N` that is 8 modulo 16 is padded
/// with zeros to the next multiple of 16 and the result cut back. Zeros add nothing to the sums,
/// and padding all three keeps the two products of the backward pass exact too.
pub fn matmul<B: ConvBackend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    if !B::MATMUL_NEEDS_PADDING {
        return a.matmul(b);
    }
    let pad = |size: usize| if size % 16 == 8 { 8 } else { 0 };
    let (a_dims, b_dims) = (a.dims(), b.dims());
    let (m, k, n) = (a_dims[D - 2], a_dims[D - 1], b_dims[D - 1]);
    if pad(m) + pad(k) + pad(n) == 0 {
        return a.matmul(b);
    }
    let zero = PadMode::Constant(0.0);
    let a = a.pad((0, pad(k), 0, pad(m)), zero);
    let b = b.pad((0, pad(n), 0, pad(k)), zero);
    let y = a.matmul(b);
    let mut kept = y.dims().map(|size| 0..size);
    kept[D - 2] = 0..m;
    kept[D - 1] = 0..n;
    y.slice(kept)
}

/// `x · weightᵀ` for `x` `[N, in]` and `weight` `[out, in]`: a fully connected layer in torch's
/// layout, through [`matmul`].
pub fn matmul_transposed<B: ConvBackend>(x: Tensor<B, 2>, weight: Tensor<B, 2>) -> Tensor<B, 2> {
    matmul(x, weight.transpose())
}

/// An autodiff backend whose inner backend is a [`ConvBackend`] too: what training needs, so
/// that the inference copy of a trained model (`.valid()`) runs the same kernels.
pub trait AutodiffConvBackend: AutodiffBackend<InnerBackend: ConvBackend> + ConvBackend {}

impl<B> AutodiffConvBackend for B where B: AutodiffBackend<InnerBackend: ConvBackend> + ConvBackend {}

#[cfg(feature = "ndarray")]
impl ConvBackend for burn::backend::NdArray<f32> {}

#[cfg(feature = "cuda")]
impl ConvBackend for crate::backend::Cuda {}
#[cfg(feature = "cuda")]
impl ConvBackend for crate::backend::CudaF16 {}
#[cfg(feature = "cuda")]
impl ConvBackend for crate::backend::CudaBf16 {}
