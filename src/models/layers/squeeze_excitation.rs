//! torchvision's `SqueezeExcitation` (Hu et al., 2018): a per-channel gate computed from the
//! globally pooled input, used by MobileNetV3 and EfficientNet's blocks.

use burn::module::Module;
use burn::tensor::Tensor;

use super::{Activation, Conv2d, Conv2dConfig};
use crate::kernels::{ConvBackend, channel_scale};

/// `x · scale(fc2(act(fc1(avgpool(x)))))`: `fc1` squeezes the channels, `fc2` restores them, the
/// gate scales each input channel. `fc1`/`fc2` are 1×1 convolutions with biases, as in
/// torchvision (so their state-dict keys and shapes match), run as matrix products on the
/// pooled `[N, C]` vectors.
#[derive(Module, Debug)]
pub struct SqueezeExcitation<B: ConvBackend> {
    /// `C → squeeze` 1×1 convolution.
    pub fc1: Conv2d<B>,
    /// `squeeze → C` 1×1 convolution.
    pub fc2: Conv2d<B>,
    /// After `fc1`: ReLU (MobileNetV3) or SiLU (EfficientNet).
    pub activation: Activation,
    /// The gate: Hardsigmoid (MobileNetV3) or Sigmoid (EfficientNet).
    pub scale_activation: Activation,
}

impl<B: ConvBackend> SqueezeExcitation<B> {
    /// A block over `channels` channels squeezed to `squeeze` (torchvision's initialisation:
    /// Kaiming-normal weights, zero biases).
    pub fn new(
        channels: usize,
        squeeze: usize,
        activation: Activation,
        scale_activation: Activation,
        device: &B::Device,
    ) -> Self {
        Self {
            fc1: Conv2dConfig::new([channels, squeeze], 1).init(device),
            fc2: Conv2dConfig::new([squeeze, channels], 1).init(device),
            activation,
            scale_activation,
        }
    }

    /// Applies the gate to `[N, C, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        // As [N, C, H·W]: the pooling reduces the contiguous last axis.
        let pooled = x.clone().reshape([n, c, h * w]).mean_dim(2).reshape([n, c]);
        let squeezed = self.activation.apply(self.fc1.forward_flat(pooled));
        let gate = self.scale_activation.apply(self.fc2.forward_flat(squeezed));
        // One pass each way through the backend extension (burn's broadcast product took an
        // index iterator per element, and its backward a full-size product before the sum).
        channel_scale(x, gate)
    }
}

/// torchvision's `StochasticDepth(p, "row")` (Huang et al., 2016), used on EfficientNet's
/// residual branches: while `training`, each image's `branch` is dropped with probability `p`
/// and the kept ones scaled by `1 / (1 − p)`; otherwise (and for `p = 0`) the identity.
pub fn stochastic_depth<B: ConvBackend>(
    branch: Tensor<B, 4>,
    p: f64,
    training: bool,
) -> Tensor<B, 4> {
    if !training || p <= 0.0 {
        return branch;
    }
    let [n, c, h, w] = branch.dims();
    let survival = 1.0 - p;
    if survival <= 0.0 {
        return branch.zeros_like();
    }
    let keep = Tensor::<B, 2>::random(
        [n, 1],
        burn::tensor::Distribution::Bernoulli(survival),
        &branch.device(),
    )
    .div_scalar(survival);
    // One scalar per image row of [N, C·H·W]: a per-row broadcast.
    (branch.reshape([n, c * h * w]) * keep).reshape([n, c, h, w])
}
