//! Adam's step on one parameter tensor as a backend operation ([`ConvBackend::adam_step`]), so
//! that a backend with its own kernel runs it in one in-place pass (burn-flex: [`cpu::adam`])
//! and every other backend runs burn's `Adam` unchanged.
//!
//! [`ConvBackend::adam_step`]: super::ConvBackend::adam_step
#![cfg_attr(feature = "flex", doc = "[`cpu::adam`]: super::cpu::adam")]

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;

/// The tensors of one parameter's Adam step, handed to [`ConvBackend::adam_step`] and given
/// back unchanged where the backend does not run the step itself.
///
/// [`ConvBackend::adam_step`]: super::ConvBackend::adam_step
pub struct AdamOperands<B: Backend> {
    /// The parameter's values.
    pub param: FloatTensor<B>,
    /// Its gradient.
    pub grad: FloatTensor<B>,
    /// The first and second moments, `None` before the first step.
    pub moments: Option<[FloatTensor<B>; 2]>,
}

/// The scalars of one Adam step, as burn computes them (all `f32`, from the configured `f32`
/// betas and epsilon, the step's time and its `f64` learning rate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamCoefficients {
    /// β₁, the first moment's decay.
    pub beta_1: f32,
    /// β₂, the second moment's decay.
    pub beta_2: f32,
    /// `1 - β₁`.
    pub factor_1: f32,
    /// `1 - β₂`.
    pub factor_2: f32,
    /// `sqrt(1 - β₂ᵗ) / (1 - β₁ᵗ)`: both bias corrections folded into the first moment's factor.
    pub combined: f32,
    /// `ε · sqrt(1 - β₂ᵗ)`: epsilon scaled as the folded correction needs.
    pub epsilon: f32,
    /// The learning rate, rounded to `f32` as burn's scalar operations round it.
    pub lr: f32,
    /// The L2 penalty added to the gradient (`weight_decay · param`), if any.
    pub penalty: Option<f32>,
}

impl AdamCoefficients {
    /// The coefficients of step `time` (1 on the first step) with these hyper-parameters.
    pub fn new(
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
        penalty: Option<f32>,
        lr: f64,
        time: usize,
    ) -> Self {
        // As burn: `time as i32`, f32 powers and square root.
        let time = time as i32;
        let correction_2 = (1.0 - beta_2.powi(time)).sqrt();
        Self {
            beta_1,
            beta_2,
            factor_1: 1.0 - beta_1,
            factor_2: 1.0 - beta_2,
            combined: correction_2 / (1.0 - beta_1.powi(time)),
            epsilon: epsilon * correction_2,
            lr: lr as f32,
            penalty,
        }
    }
}
