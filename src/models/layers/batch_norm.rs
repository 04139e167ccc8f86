//! Batch normalisation with torchvision's names and semantics, running statistics with value
//! semantics, and a flag for BatchNorms that hold no statistics (imported from folded weights).

use crate::kernels::{ConvBackend, batch_norm_train};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::Tensor;

use super::{per_channel_rows, trains};
use crate::models::buffer::Buffer;
use crate::models::summary;

/// Configuration of a [`BatchNorm2d`] (torch's defaults: ε 1e-5, momentum 0.1).
#[derive(Config, Debug, PartialEq)]
pub struct BatchNorm2dConfig {
    /// Number of channels.
    pub num_features: usize,
    /// Added to the variance for numerical stability.
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// Weight of the new batch statistics in the running averages.
    #[config(default = 0.1)]
    pub momentum: f64,
}

impl BatchNorm2dConfig {
    /// An identity BatchNorm (γ = 1, β = 0, mean 0, var 1).
    pub fn init<B: ConvBackend>(&self, device: &B::Device) -> BatchNorm2d<B> {
        let c = self.num_features;
        BatchNorm2d {
            weight: Param::from_tensor(Tensor::ones([c], device)),
            bias: Param::from_tensor(Tensor::zeros([c], device)),
            running_mean: Buffer::new(Tensor::zeros([c], device)),
            running_var: Buffer::new(Tensor::ones([c], device)),
            momentum: self.momentum,
            epsilon: self.epsilon,
            folded: false,
            has_statistics: true,
        }
    }
}

/// Batch normalisation over channels with torchvision's names and semantics (momentum 0.1,
/// running variance updated with the unbiased batch variance).
///
/// It normalises with batch statistics (and updates its running statistics) only in training
/// mode ([`trains`](super::trains): the backend records gradients *and* its affine parameters
/// are trainable); a frozen BatchNorm always uses its running statistics, what the PyTorch
/// recipes get from `model.eval()` on frozen layers.
#[derive(Module, Debug)]
pub struct BatchNorm2d<B: ConvBackend> {
    /// Scale γ `[C]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift β `[C]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Running mean `[C]` (a buffer, not trained by the optimizer; see [`Self::running_mean`]).
    pub(crate) running_mean: Buffer<1, B>,
    /// Running variance `[C]` (a buffer; see [`Self::running_var`]).
    pub(crate) running_var: Buffer<1, B>,
    /// Weight of the new batch statistics in the running averages.
    pub momentum: f64,
    /// Added to the variance for numerical stability.
    pub epsilon: f64,
    /// Set by [`fuse_conv_bn`](super::fuse_conv_bn): the preceding convolution already applies
    /// this layer's eval transform, so in eval mode the layer passes its input through.
    pub folded: bool,
    /// False when the weights came with BatchNorm folded into the convolutions: the layer is an
    /// identity plus shift with no running statistics a network was trained with, so training
    /// it (normalising by batch statistics) would destroy the features. `fit` keeps such layers
    /// frozen and refuses to train them.
    pub has_statistics: bool,
}

impl<B: ConvBackend> BatchNorm2d<B> {
    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.weight.shape()[0]
    }

    /// The running mean `[C]`.
    pub fn running_mean(&self) -> Tensor<B, 1> {
        self.running_mean.value()
    }

    /// The running variance `[C]`.
    pub fn running_var(&self) -> Tensor<B, 1> {
        self.running_var.value()
    }

    /// Whether this layer normalises with batch statistics in the current context.
    pub fn uses_batch_statistics(&self) -> bool {
        trains(&self.weight)
    }

    /// The per-channel affine map `x * scale + shift` equivalent to this layer in eval mode.
    pub fn eval_scale_shift(&self) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let scale = self.weight.val() / self.running_var.value().add_scalar(self.epsilon).sqrt();
        let shift = self.bias.val() - self.running_mean.value() * scale.clone();
        (scale, shift)
    }

    /// Applies the layer to `[N, C, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let dims = x.dims();
        summary::record_layer(self.weight.id, "BatchNorm2d", &dims, 2 * self.channels());
        let batch_statistics = self.uses_batch_statistics();
        if !batch_statistics && self.folded {
            return x;
        }
        let [n, c, h, w] = dims;
        if !batch_statistics {
            // Laid out as [N, C, H·W], the per-channel tensors joining it as [N, C, 1] rows (see
            // `per_channel_rows`).
            let per_row = |t: Tensor<B, 1>| per_channel_rows(t, n);
            let (scale, shift) = self.eval_scale_shift();
            let x = x.reshape([n, c, h * w]);
            return (x * per_row(scale) + per_row(shift)).reshape([n, c, h, w]);
        }
        // One backend operation (the crate's kernel on burn-flex) with its own backward step.
        let (y, mean, var) = batch_norm_train(x, self.weight.val(), self.bias.val(), self.epsilon);
        let count = n * h * w;
        let m = self.momentum;
        let unbiased = var.detach() * (count as f64 / (count.max(2) - 1) as f64);
        let new_mean = self.running_mean.value().mul_scalar(1.0 - m) + mean.detach().mul_scalar(m);
        let new_var = self.running_var.value().mul_scalar(1.0 - m) + unbiased.mul_scalar(m);
        self.running_mean.update(new_mean);
        self.running_var.update(new_var);
        y
    }
}
