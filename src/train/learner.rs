//! One optimisation step at a time: what `fit` drives, and what benchmarks and parity tests
//! drive directly.

use crate::kernels::AutodiffConvBackend;
use burn::module::{AutodiffModule, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use super::TrainError;
use super::evaluate::{argmax_rows, labels_tensor, scalar};
use super::loss::cross_entropy;
use super::optim::{Optim, OptimizerConfig};
use crate::models::ImageClassifier;

/// The optimizer and its state, the loss settings, and the per-group learning rates.
pub struct Learner<B: AutodiffConvBackend, M: AutodiffModule<B>> {
    pub(crate) optim: Optim<B, M>,
    config: OptimizerConfig,
    label_smoothing: f64,
}

/// What one step reports.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// Mean loss of the batch (before the update).
    pub loss: f64,
    /// Predicted class per image (before the update).
    pub predicted: Vec<i64>,
}

impl<B, M> Learner<B, M>
where
    B: AutodiffConvBackend,
    M: ImageClassifier<B> + AutodiffModule<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
{
    /// A learner with fresh optimizer state.
    pub fn new(config: &OptimizerConfig, label_smoothing: f64) -> Self {
        Self {
            optim: config.init(),
            config: config.clone(),
            label_smoothing,
        }
    }

    /// The optimizer settings.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// The optimizer state as bytes (for checkpoints).
    pub(crate) fn state_bytes(&self) -> Result<Vec<u8>, TrainError> {
        self.optim.to_bytes()
    }

    /// This learner with the optimizer state of [`Learner::state_bytes`].
    pub(crate) fn with_state_bytes(
        mut self,
        bytes: Vec<u8>,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        self.optim = self.optim.load_bytes(bytes, device)?;
        Ok(self)
    }

    /// Backpropagates the loss of `logits` against `labels` and updates `model` (the classifier
    /// at the head rate, the trainable backbone at the backbone rate of `epoch_in_phase`).
    pub fn step_logits(
        &mut self,
        model: M,
        logits: Tensor<B, 2>,
        labels: &[i64],
        epoch_in_phase: usize,
    ) -> (M, StepOutput) {
        let device = logits.device();
        let (lr_head, lr_backbone) = self.config.rates(epoch_in_phase);
        let loss = cross_entropy(
            logits.clone(),
            labels_tensor(labels, &device),
            self.label_smoothing,
        );
        let output = StepOutput {
            loss: scalar(loss.clone().inner()),
            predicted: argmax_rows(logits.inner()),
        };
        let mut grads = loss.backward();
        // The classifier trains at the head's rate: the head and its hidden linears
        // (MobileNetV3's `classifier.0`).
        let classifier: Vec<ParamId> = model
            .hidden_linears()
            .iter()
            .map(|h| h.linear)
            .chain([model.head()])
            .flat_map(|l| [l.weight.id, l.bias.id])
            .collect();
        let head_grads = GradientsParams::from_params(&mut grads, &model, &classifier);
        let rest = GradientsParams::from_grads(grads, &model);
        let model = if rest.is_empty() {
            model
        } else {
            self.optim.step(lr_backbone, model, rest)
        };
        (self.optim.step(lr_head, model, head_grads), output)
    }

    /// One step on a batch of images whose features come from `backbone`, a frozen copy of the
    /// model without autodiff (e.g. `model.valid().fuse_for_inference()`, made once per
    /// phase): only the head records gradients.
    pub fn step_frozen(
        &mut self,
        model: M,
        backbone: &M::InnerModule,
        images: Tensor<B, 4>,
        labels: &[i64],
        epoch_in_phase: usize,
    ) -> (M, StepOutput) {
        let blocks = model.block_paths().len();
        self.step_frozen_prefix(model, backbone, blocks, images, labels, epoch_in_phase)
    }

    /// One step on a batch of images whose first `blocks` backbone blocks (of
    /// [`ImageClassifier::block_paths`]) are frozen: they run on `prefix`, a frozen copy of the
    /// model without autodiff (e.g. `model.valid().fuse_for_inference()`, made once per phase),
    /// and the rest of the network records gradients as in [`Learner::step`].
    pub fn step_frozen_prefix(
        &mut self,
        model: M,
        prefix: &M::InnerModule,
        blocks: usize,
        images: Tensor<B, 4>,
        labels: &[i64],
        epoch_in_phase: usize,
    ) -> (M, StepOutput) {
        let total = model.block_paths().len();
        let x = prefix.forward_blocks(images.inner(), 0..blocks);
        let x = model.forward_blocks(Tensor::from_inner(x), blocks..total);
        let logits = model.classify(model.pool(x));
        self.step_logits(model, logits, labels, epoch_in_phase)
    }

    /// One step on a batch of images. With `frozen_backbone`, the backbone runs without
    /// autodiff (its parameters cannot change) and only the head records gradients.
    pub fn step(
        &mut self,
        model: M,
        images: Tensor<B, 4>,
        labels: &[i64],
        epoch_in_phase: usize,
        frozen_backbone: bool,
    ) -> (M, StepOutput) {
        let logits = if frozen_backbone {
            let features = model.valid().features(images.inner());
            model.classify(Tensor::from_inner(features))
        } else {
            model.forward(images)
        };
        self.step_logits(model, logits, labels, epoch_in_phase)
    }
}
