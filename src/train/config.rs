//! The settings of one training phase.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::freeze::{BatchNormPolicy, Trainable};
use super::optim::OptimizerConfig;

/// Settings of one training phase (`fit` call), built like burn's configs:
/// `FitConfig::new(5, OptimizerConfig::adam(1e-3), Trainable::HeadOnly).with_phase("feature_extraction")`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitConfig {
    /// Epochs of this phase.
    pub epochs: usize,
    /// Optimizer, learning rates and schedule.
    pub optimizer: OptimizerConfig,
    /// What trains.
    pub trainable: Trainable,
    /// Whether the BatchNorms of the trainable blocks train (see [`BatchNormPolicy`]; the
    /// default does what the weights allow).
    pub batch_norm: BatchNormPolicy,
    /// Label smoothing of the cross-entropy (0 = none).
    pub label_smoothing: f64,
    /// Stop when validation accuracy has not improved for this many epochs.
    pub early_stopping_patience: Option<usize>,
    /// Checkpoint written (atomically) after every epoch; an existing one is resumed from.
    pub checkpoint: Option<PathBuf>,
    /// Phase name recorded in the history (`feature_extraction`, `fine_tuning`, ...).
    pub phase: String,
    /// Number of the first epoch (to continue the count of an earlier phase).
    pub first_epoch: usize,
    /// Seed of dropout (re-seeded each epoch, so a resumed run repeats exactly).
    pub seed: u64,
    /// With a frozen backbone and deterministic training transforms, compute the backbone
    /// features once and train the head on them.
    pub feature_cache: bool,
    /// `fit` reports nothing (no progress bars or epoch lines); see `fit_with` for other
    /// observers.
    pub quiet: bool,
}

impl FitConfig {
    /// `epochs` epochs of `optimizer` training what `trainable` says.
    pub fn new(epochs: usize, optimizer: OptimizerConfig, trainable: Trainable) -> Self {
        Self {
            epochs,
            optimizer,
            trainable,
            batch_norm: BatchNormPolicy::Auto,
            label_smoothing: 0.0,
            early_stopping_patience: None,
            checkpoint: None,
            phase: "training".into(),
            first_epoch: 0,
            seed: 0,
            feature_cache: true,
            quiet: false,
        }
    }

    /// With a phase name.
    pub fn with_phase(mut self, phase: &str) -> Self {
        self.phase = phase.into();
        self
    }

    /// With a checkpoint file.
    pub fn with_checkpoint(mut self, path: impl Into<PathBuf>) -> Self {
        self.checkpoint = Some(path.into());
        self
    }

    /// With a BatchNorm policy.
    pub fn with_batch_norm(mut self, batch_norm: BatchNormPolicy) -> Self {
        self.batch_norm = batch_norm;
        self
    }

    /// Starting the epoch count at `first_epoch` (to continue an earlier phase).
    pub fn with_first_epoch(mut self, first_epoch: usize) -> Self {
        self.first_epoch = first_epoch;
        self
    }

    /// With a seed for dropout.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Quiet or not.
    pub fn with_quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    /// With label smoothing.
    pub fn with_label_smoothing(mut self, label_smoothing: f64) -> Self {
        self.label_smoothing = label_smoothing;
        self
    }

    /// Stopping after `patience` epochs without a better validation accuracy.
    pub fn with_early_stopping(mut self, patience: usize) -> Self {
        self.early_stopping_patience = Some(patience);
        self
    }

    /// With or without the feature cache.
    pub fn with_feature_cache(mut self, feature_cache: bool) -> Self {
        self.feature_cache = feature_cache;
        self
    }
}
