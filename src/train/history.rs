//! Per-epoch training history, as the PyTorch tutorial's `train_and_validate` returns it.

use serde::{Deserialize, Serialize};

/// Figures of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// Epoch number, counted from 0 over the whole run (phases continue the count).
    pub epoch: usize,
    /// Name of the phase this epoch belongs to (e.g. `feature_extraction`, `fine_tuning`).
    pub phase: String,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy in [0, 1].
    pub train_accuracy: f64,
    /// Mean validation loss.
    pub val_loss: f64,
    /// Validation accuracy in [0, 1].
    pub val_accuracy: f64,
    /// Learning rate of the head during the epoch.
    pub learning_rate: f64,
    /// Wall time of the epoch (training and validation), seconds.
    pub seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
}

/// The epochs of one or more training phases, in order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct History {
    /// One entry per epoch.
    pub epochs: Vec<EpochStats>,
}

impl History {
    /// Epoch with the best validation accuracy (the first of equals), if any.
    pub fn best(&self) -> Option<&EpochStats> {
        self.epochs
            .iter()
            .fold(None, |best: Option<&EpochStats>, e| match best {
                Some(b) if b.val_accuracy >= e.val_accuracy => Some(b),
                _ => Some(e),
            })
    }

    /// Indices where a new phase starts (for plotting phase boundaries), excluding 0.
    pub fn phase_boundaries(&self) -> Vec<usize> {
        (1..self.epochs.len())
            .filter(|&i| self.epochs[i].phase != self.epochs[i - 1].phase)
            .collect()
    }

    /// Appends the epochs of a later phase.
    pub fn extend(&mut self, other: &History) {
        self.epochs.extend(other.epochs.iter().cloned());
    }

    /// This history followed by a later phase's: `head.history.then(&tuned.history)` is the
    /// whole run, to plot or save.
    pub fn then(&self, later: &History) -> History {
        let mut all = self.clone();
        all.extend(later);
        all
    }
}
