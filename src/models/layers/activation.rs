//! The activations of the supported networks, as one serialisable [`Activation`] that blocks
//! store (MobileNetV3 mixes ReLU and Hardswish block by block), and as functions.
//!
//! ReLU6, Hardswish and SiLU, which run on every activation map, go through the backend
//! extension ([`ConvBackend`]: the crate's kernels on burn-flex); the gates' activations, on
//! `[N, C]` vectors, are burn's own operations (`sigmoid`, `hard_sigmoid`), with PyTorch's
//! constants:
//! `Hardsigmoid(x) = ReLU6(x + 3) / 6`, `Hardswish(x) = x · Hardsigmoid(x)`,
//! `SiLU(x) = x · σ(x)`.

use burn::empty;
use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::kernels::{ConvActivation, ConvBackend};

/// An element-wise activation, named as in `torch.nn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    /// `max(x, 0)`.
    ReLU,
    /// `min(max(x, 0), 6)` (MobileNetV2).
    ReLU6,
    /// `x · ReLU6(x + 3) / 6` (MobileNetV3).
    Hardswish,
    /// `ReLU6(x + 3) / 6` (MobileNetV3's squeeze-and-excitation gate).
    Hardsigmoid,
    /// `x · σ(x)`, also called swish (EfficientNet).
    SiLU,
    /// `σ(x) = 1 / (1 + e^(−x))` (EfficientNet's squeeze-and-excitation gate).
    Sigmoid,
}

// A constant of the modules that hold it: no tensors, no record entry.
empty!(Activation);

impl Activation {
    /// Applies the activation to a tensor of any rank.
    pub fn apply<B: ConvBackend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match (self, self.conv_activation()) {
            (_, Some(kernel)) => apply_kernel(x, kernel),
            (Activation::Hardsigmoid, None) => hardsigmoid(x),
            (_, None) => activation::sigmoid(x),
        }
    }

    /// The same activation as a convolution kernel can apply it to its output, where it can
    /// (not the gates' Hardsigmoid and Sigmoid).
    pub fn conv_activation(self) -> Option<ConvActivation> {
        match self {
            Activation::ReLU => Some(ConvActivation::Relu),
            Activation::ReLU6 => Some(ConvActivation::Hardtanh { min: 0.0, max: 6.0 }),
            Activation::Hardswish => Some(ConvActivation::Hardswish),
            Activation::SiLU => Some(ConvActivation::Silu),
            Activation::Hardsigmoid | Activation::Sigmoid => None,
        }
    }

    /// torch's class name (`ReLU`, `Hardswish`, ...), for summaries.
    pub fn torch_name(self) -> &'static str {
        match self {
            Activation::ReLU => "ReLU",
            Activation::ReLU6 => "ReLU6",
            Activation::Hardswish => "Hardswish",
            Activation::Hardsigmoid => "Hardsigmoid",
            Activation::SiLU => "SiLU",
            Activation::Sigmoid => "Sigmoid",
        }
    }

    /// The derivative of the activation at `x`, element-wise: what an exact Grad-CAM through a
    /// hidden layer of the classifier needs (see
    /// [`ImageClassifier::logit_gradient`](crate::models::ImageClassifier::logit_gradient)).
    /// At the kinks it takes the values torch's backward takes.
    pub fn derivative<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::ReLU => x.greater_elem(0.0).float(),
            Activation::ReLU6 => x
                .clone()
                .greater_elem(0.0)
                .float()
                .mul(x.lower_elem(6.0).float()),
            // torch: 0 for x < -3, 1 for x > 3, (2x + 3) / 6 in between.
            Activation::Hardswish => {
                let middle = x.clone().mul_scalar(2.0 / 6.0).add_scalar(0.5);
                let below = x.clone().lower_elem(-3.0);
                let above = x.greater_elem(3.0);
                middle.mask_fill(below, 0.0).mask_fill(above, 1.0)
            }
            Activation::Hardsigmoid => {
                let inside = x
                    .clone()
                    .greater_elem(-3.0)
                    .float()
                    .mul(x.lower_elem(3.0).float());
                inside.div_scalar(6.0)
            }
            Activation::SiLU => {
                let s = activation::sigmoid(x.clone());
                s.clone() * (x * (s.clone().neg().add_scalar(1.0))).add_scalar(1.0)
            }
            Activation::Sigmoid => {
                let s = activation::sigmoid(x);
                s.clone() * s.neg().add_scalar(1.0)
            }
        }
    }
}

/// ReLU, `max(x, 0)`, through the backend extension's Hardtanh with bounds 0 and ∞: in place
/// where it can be on burn-flex, and under autodiff one recorded step that keeps its output (the
/// next layer's input, kept anyway) with torch's gradient (the output gradient where the output
/// is positive). burn's `relu` keeps its input instead: ResNet18's full step at batch 32 peaked
/// 145 MiB higher with it.
pub fn relu<B: ConvBackend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    apply_kernel(x, ConvActivation::Relu)
}

/// `activation` on a tensor of any rank through [`ConvActivation::apply`], which holds each
/// activation's one definition (the convolutions' epilogues use the same).
pub(crate) fn apply_kernel<B: ConvBackend, const D: usize>(
    x: Tensor<B, D>,
    activation: ConvActivation,
) -> Tensor<B, D> {
    let y = activation.apply::<B>(x.into_primitive().tensor());
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// ReLU6, `min(max(x, 0), 6)` (MobileNetV2's activation), through the backend extension's
/// Hardtanh: one pass each way on burn-flex, one recorded operation under autodiff whose
/// gradient is torch's (the output gradient where `0 < x < 6`).
pub fn relu6<B: ConvBackend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    apply_kernel(x, ConvActivation::Hardtanh { min: 0.0, max: 6.0 })
}

/// Hardsigmoid, `ReLU6(x + 3) / 6` (torch.nn.Hardsigmoid).
pub fn hardsigmoid<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    activation::hard_sigmoid(x, 1.0 / 6.0, 0.5)
}

/// SiLU, `x · σ(x)` (torch.nn.SiLU), through the backend extension: one vectorised pass on
/// burn-flex (its `sigmoid` is scalar `expf`, half of an EfficientNet forward pass), one recorded
/// operation with its own backward under autodiff.
pub fn silu<B: ConvBackend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    apply_kernel(x, ConvActivation::Silu)
}

/// Hardswish, `x · ReLU6(x + 3) / 6` (torch.nn.Hardswish), through the backend extension,
/// rounded as torch rounds it: one pass each way on burn-flex, one recorded operation under
/// autodiff that keeps only `x` (burn's `x · hard_sigmoid(x)` took two passes and kept both
/// factors).
pub fn hardswish<B: ConvBackend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    apply_kernel(x, ConvActivation::Hardswish)
}

impl std::fmt::Display for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.torch_name())
    }
}
