//! Fully connected layer in torchvision's layout (`weight` `[out, in]`): the classifier heads.

use crate::kernels::{ConvBackend, matmul_transposed};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Distribution, Tensor};

use crate::models::summary;

/// Configuration of a [`Linear`] layer, like `torch.nn.Linear(in_features, out_features)`.
#[derive(Config, Debug, PartialEq)]
pub struct LinearConfig {
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
}

impl LinearConfig {
    /// A layer initialised like PyTorch's `nn.Linear` (uniform ±1/√in for weight and bias).
    pub fn init<B: ConvBackend>(&self, device: &B::Device) -> Linear<B> {
        let bound = 1.0 / (self.in_features as f64).sqrt();
        let uniform = Distribution::Uniform(-bound, bound);
        Linear {
            weight: Param::from_tensor(Tensor::random(
                [self.out_features, self.in_features],
                uniform,
                device,
            )),
            bias: Param::from_tensor(Tensor::random([self.out_features], uniform, device)),
        }
    }
}

/// Fully connected layer with torchvision's layout: `weight` `[out, in]`, `bias` `[out]`.
#[derive(Module, Debug)]
pub struct Linear<B: ConvBackend> {
    /// Weight `[out_features, in_features]`.
    pub weight: Param<Tensor<B, 2>>,
    /// Bias `[out_features]`.
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: ConvBackend> Linear<B> {
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
        let y = matmul_transposed(x, self.weight.val()) + self.bias.val().unsqueeze();
        let params = (self.in_features() + 1) * self.out_features();
        summary::record_layer(self.weight.id, "Linear", &y.dims(), params);
        y
    }
}
