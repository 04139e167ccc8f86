//! The two phases of transfer learning as one value: feature extraction (frozen backbone, new
//! head), then fine-tuning of the last blocks at a lower rate. The examples' recipes (the
//! PyTorch tutorial's, the Keras exercise's) are constructors here.

use crate::kernels::AutodiffConvBackend;
use std::path::Path;

use burn::module::AutodiffModule;
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::config::FitConfig;
use super::fit::{FitOutcome, fit};
use super::freeze::Trainable;
use super::history::History;
use super::optim::{OptimizerConfig, Schedule};
use super::source::BatchSource;
use crate::models::{Architecture, ImageClassifier};

/// Settings of both phases. Run them with [`TransferRecipe::run`], or with two
/// [`fit`](super::fit) calls, which is all `run` does:
///
/// ```no_run
/// # use transfer_vision::prelude::*;
/// # fn run(model: MobileNetV2<CpuAutodiff>, train: &DataLoader, val: &DataLoader) -> Result<(), TrainError> {
/// let device = Default::default();
/// let recipe = TransferRecipe::keras_exercise("features.14");
/// let head = fit(model, train, val, &recipe.feature_extraction, &device)?;
/// let tuned = fit(head.model.clone(), train, val, &recipe.fine_tuning_after(&head), &device)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferRecipe {
    /// Phase 1: only the new head trains (`feature_extraction`).
    pub feature_extraction: FitConfig,
    /// Phase 2: the head and the blocks from the unfreeze point on train (`fine_tuning`).
    pub fine_tuning: FitConfig,
}

impl TransferRecipe {
    /// `head_epochs` of feature extraction with `head_optimizer`, then `fine_epochs` of
    /// fine-tuning from block `unfreeze_from` (e.g. `features.14`, `layer4`) with
    /// `fine_optimizer`.
    pub fn new(
        (head_epochs, head_optimizer): (usize, OptimizerConfig),
        (fine_epochs, fine_optimizer): (usize, OptimizerConfig),
        unfreeze_from: &str,
    ) -> Self {
        Self {
            feature_extraction: FitConfig::new(head_epochs, head_optimizer, Trainable::HeadOnly)
                .with_phase("feature_extraction"),
            fine_tuning: FitConfig::new(
                fine_epochs,
                fine_optimizer,
                Trainable::FromBlock(unfreeze_from.into()),
            )
            .with_phase("fine_tuning"),
        }
    }

    /// The PyTorch transfer-learning tutorial's optimisation in both phases: SGD with
    /// learning rate 1e-3 and momentum 0.9, decayed ×0.1 every 7 epochs (`StepLR(7, 0.1)`).
    pub fn pytorch_tutorial(head_epochs: usize, fine_epochs: usize, unfreeze_from: &str) -> Self {
        let sgd = OptimizerConfig::sgd(1e-3, 0.9).with_schedule(Schedule::Step {
            step_size: 7,
            gamma: 0.1,
        });
        Self::new(
            (head_epochs, sgd.clone()),
            (fine_epochs, sgd),
            unfreeze_from,
        )
    }

    /// The Keras MobileNetV2 exercise's: 5 epochs of Adam at 1e-3, then 5 at 1e-4 from
    /// `unfreeze_from` on (the exercise unfreezes from layer 120 of Keras' MobileNetV2,
    /// torchvision's `features.14`).
    pub fn keras_exercise(unfreeze_from: &str) -> Self {
        Self::new(
            (5, OptimizerConfig::adam(1e-3)),
            (5, OptimizerConfig::adam(1e-4)),
            unfreeze_from,
        )
    }

    /// With other epoch counts (e.g. 1 and 1 for a smoke run).
    pub fn with_epochs(mut self, head_epochs: usize, fine_epochs: usize) -> Self {
        self.feature_extraction.epochs = head_epochs;
        self.fine_tuning.epochs = fine_epochs;
        self
    }

    /// Both phases seeded with `seed` (dropout).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.feature_extraction.seed = seed;
        self.fine_tuning.seed = seed;
        self
    }

    /// Both phases quiet or not.
    pub fn with_quiet(mut self, quiet: bool) -> Self {
        self.feature_extraction.quiet = quiet;
        self.fine_tuning.quiet = quiet;
        self
    }

    /// Both phases checkpointed every epoch under `dir` (`<phase>.ckpt`), resumed from there
    /// after an interruption.
    pub fn with_checkpoints_in(mut self, dir: &Path) -> Self {
        for phase in [&mut self.feature_extraction, &mut self.fine_tuning] {
            phase.checkpoint = Some(dir.join(format!("{}.ckpt", phase.phase)));
        }
        self
    }

    /// The fine-tuning settings, its epochs counted on from the feature-extraction phase's.
    pub fn fine_tuning_after<M>(&self, head: &FitOutcome<M>) -> FitConfig {
        self.fine_tuning
            .clone()
            .with_first_epoch(self.feature_extraction.first_epoch + head.history.epochs.len())
    }
}

/// Both phases of a [`TransferRecipe`] run.
#[derive(Debug, Clone)]
pub struct TransferRun<M> {
    /// Feature extraction: the new head trained on the frozen backbone.
    pub feature_extraction: FitOutcome<M>,
    /// Fine-tuning, started from feature extraction's best weights.
    pub fine_tuning: FitOutcome<M>,
}

impl<M> TransferRun<M> {
    /// The fine-tuned model (fine-tuning's best validation weights).
    pub fn model(&self) -> &M {
        &self.fine_tuning.model
    }

    /// Every epoch of both phases, to plot or save.
    pub fn history(&self) -> History {
        self.feature_extraction
            .history
            .then(&self.fine_tuning.history)
    }
}

impl TransferRecipe {
    /// Feature extraction, then fine-tuning of `model` (which carries its new head): two
    /// [`fit`] calls, the second from the first's best weights, its epochs counted on. The
    /// unfreeze point is checked before anything trains. A phase set to 0 epochs is skipped
    /// (both at 0: the model comes back as it was given).
    pub fn run<B, M>(
        &self,
        model: M,
        train: &dyn BatchSource,
        val: &dyn BatchSource,
        device: &B::Device,
    ) -> Result<TransferRun<M>, TrainError>
    where
        B: AutodiffConvBackend,
        M: Architecture<B> + AutodiffModule<B>,
        M::InnerModule: ImageClassifier<B::InnerBackend>,
    {
        self.fine_tuning.trainable.prefixes(&model)?;
        // A phase of 0 epochs is skipped (feature extraction only, or fine-tuning straight
        // away): its outcome is the model it was given, with an empty history.
        let head = match self.feature_extraction.epochs {
            0 => FitOutcome::skipped(model),
            _ => fit(model, train, val, &self.feature_extraction, device)?,
        };
        let tuned = match self.fine_tuning.epochs {
            0 => FitOutcome::skipped(head.model.clone()),
            _ => fit(
                head.model.clone(),
                train,
                val,
                &self.fine_tuning_after(&head),
                device,
            )?,
        };
        Ok(TransferRun {
            feature_extraction: head,
            fine_tuning: tuned,
        })
    }
}
