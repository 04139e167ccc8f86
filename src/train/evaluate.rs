//! Evaluation: loss, accuracy and confusion of a model on a batch source, always in inference
//! mode.

use crate::kernels::ConvBackend;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::loss::cross_entropy;
use super::metrics::{Accumulator, EvalReport};
use super::predict::{argmax, host_rows};
use super::source::BatchSource;
use super::{FittingPasses, TrainError};
use crate::models::ImageClassifier;

/// Evaluates `model` on every batch of `source`'s epoch 0, in inference mode whatever model it
/// is given: a copy without gradients and with its BatchNorms folded runs (burn-train's
/// `model.valid()` for its validation step), so even the autodiff model `fit` returns can be
/// passed, and its BatchNorm statistics and dropout are left alone.
pub fn evaluate<B: ConvBackend, M: ImageClassifier<B>>(
    model: &M,
    source: &dyn BatchSource,
    device: &B::Device,
) -> Result<EvalReport, TrainError> {
    let model = inference_copy(model);
    let mut acc = Accumulator::new(model.num_classes());
    let mut passes = FittingPasses::new(&model, device);
    for batch in source.batches(0) {
        let batch = batch?;
        let logits = passes.run(batch.images_tensor::<B>(device), M::forward);
        add_logits(&mut acc, logits, &batch.labels, device)?;
    }
    Ok(acc.report())
}

/// `model` for inference: every BatchNorm folded into its convolution, then no parameter
/// recording gradients (so no layer trains, on any backend, and no graph is built).
pub(crate) fn inference_copy<B: ConvBackend, M: ImageClassifier<B>>(model: &M) -> M {
    model.clone().fuse_for_inference().no_grad()
}

/// Adds the loss and predictions of `logits` against `labels` to `acc`.
pub(crate) fn add_logits<B: Backend>(
    acc: &mut Accumulator,
    logits: Tensor<B, 2>,
    labels: &[i64],
    device: &B::Device,
) -> Result<(), TrainError> {
    check_labels(labels, logits.dims()[1])?;
    let targets = labels_tensor::<B>(labels, device);
    let loss = scalar(cross_entropy(logits.clone(), targets, 0.0));
    acc.add(loss, labels, &argmax_rows(logits))
}

/// An error for the first label that is not a class of a `classes`-class model (before a loss
/// is computed with it, which would index out of the logits).
pub(crate) fn check_labels(labels: &[i64], classes: usize) -> Result<(), TrainError> {
    match labels
        .iter()
        .find(|&&l| usize::try_from(l).map_or(true, |l| l >= classes))
    {
        Some(&label) => Err(TrainError::Label { label, classes }),
        None => Ok(()),
    }
}

/// Labels as an integer tensor.
pub(crate) fn labels_tensor<B: Backend>(labels: &[i64], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(labels.to_vec(), [labels.len()]), device)
}

/// Predicted class of each row of `logits`.
pub(crate) fn argmax_rows<B: Backend>(logits: Tensor<B, 2>) -> Vec<i64> {
    host_rows(logits)
        .iter()
        .map(|row| argmax(row) as i64)
        .collect()
}

/// The value of a one-element tensor (NaN if it cannot be read).
pub(crate) fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .ok()
        .and_then(|v| v.first().copied())
        .unwrap_or(f64::NAN)
}
