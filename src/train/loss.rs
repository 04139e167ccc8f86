//! Cross-entropy, as `torch.nn.CrossEntropyLoss(label_smoothing=…)` computes it.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// Mean cross-entropy of `logits` `[N, C]` against class indices `targets` `[N]`, with label
/// smoothing `smoothing` in [0, 1) (0 = plain cross-entropy).
pub fn cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    smoothing: f64,
) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    let log_probs = log_softmax(logits, 1);
    let nll = log_probs
        .clone()
        .gather(1, targets.reshape([n, 1]))
        .mean()
        .neg();
    if smoothing == 0.0 {
        return nll;
    }
    let uniform = log_probs.mean().neg();
    nll.mul_scalar(1.0 - smoothing) + uniform.mul_scalar(smoothing)
}
