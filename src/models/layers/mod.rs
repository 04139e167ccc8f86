//! The building blocks of the native models: convolution, batch normalisation and linear layers
//! that store their tensors exactly as torchvision does (`weight`, `bias`, `running_mean`,
//! `running_var`; a Linear weight is `[out, in]`), so parameter paths equal state-dict keys.
//!
//! Owning these layers (rather than using `burn::nn`'s) is what lets the crate pick the fastest
//! formulation of each operation per backend, keep TensorFlow "SAME" padding exact, and fold a
//! frozen BatchNorm into the preceding convolution. Each is built burn's way:
//! `Conv2dConfig::new([3, 32], 3).with_stride(2).with_bias(false).init(&device)`.
//!
//! One rule decides training behaviour everywhere: a layer behaves as in training (BatchNorm
//! normalises with batch statistics and updates its running ones, dropout drops) only when the
//! backend records gradients *and* its parameters are trainable ([`trains`]). A model made
//! with `.valid()` or `.no_grad()` is therefore always in inference mode.

mod activation;
mod batch_norm;
mod conv;
mod conv_norm;
mod linear;
mod mbconv;
mod padding;
mod squeeze_excitation;

pub use activation::{Activation, hardsigmoid, hardswish, relu, relu6, silu};
pub use batch_norm::{BatchNorm2d, BatchNorm2dConfig};
pub use conv::{Conv2d, Conv2dConfig};
pub use conv_norm::{
    ConvBnInfo, ConvBnMut, ConvMut, ConvNormActivation, conv_bn_activated, fuse_conv_bn,
};
pub use linear::{Linear, LinearConfig};
pub use mbconv::{MBConv, MBConvLayer, MBConvNetwork, MBConvSettings, SqueezeSettings};
pub use padding::Padding;
pub use squeeze_excitation::{SqueezeExcitation, stochastic_depth};

use crate::kernels::ConvBackend;
use burn::module::Param;
use burn::tensor::Tensor;

/// Whether a layer owning `param` is in training mode: the backend records gradients and the
/// parameter is trainable. Frozen layers and inference copies (`.valid()`, `.no_grad()`) are not.
pub fn trains<B: ConvBackend, const D: usize>(param: &Param<Tensor<B, D>>) -> bool {
    let value = param.val();
    B::ad_enabled(&value.device()) && value.is_require_grad()
}

/// A per-channel vector `[C]` laid out as `[N, C, 1]`, to combine with an activation viewed as
/// `[N, C, H·W]`: each broadcast (and its gradient) is then a per-row scalar, which CPU backends
/// vectorise, where a `[1, C, 1, 1]` operand broadcast over N and H, W makes burn-flex walk the
/// activation element by element. The copy costs N·C elements.
pub(crate) fn per_channel_rows<B: ConvBackend>(t: Tensor<B, 1>, n: usize) -> Tensor<B, 3> {
    let [c] = t.dims();
    t.reshape([1, c, 1]).repeat_dim(0, n)
}
