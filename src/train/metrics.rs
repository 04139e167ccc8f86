//! Evaluation figures: loss, accuracy, per-class accuracy and the confusion matrix.

use serde::{Deserialize, Serialize};

use super::TrainError;

/// The result of evaluating a model on a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction of images classified right.
    pub accuracy: f64,
    /// Accuracy per true class (NaN-free: a class without images reports 0).
    pub per_class_accuracy: Vec<f64>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// Number of images.
    pub count: usize,
}

/// Accumulates predictions batch by batch.
#[derive(Debug, Clone)]
pub struct Accumulator {
    loss_sum: f64,
    confusion: Vec<Vec<usize>>,
    count: usize,
    batches: usize,
}

impl Accumulator {
    /// An empty accumulator for `num_classes` classes.
    pub fn new(num_classes: usize) -> Self {
        Self {
            loss_sum: 0.0,
            confusion: vec![vec![0; num_classes]; num_classes],
            count: 0,
            batches: 0,
        }
    }

    /// Adds a batch: its mean loss, true labels and predicted classes.
    ///
    /// # Errors
    /// [`TrainError::Label`] when a label or a prediction is not a class of the model (a batch
    /// source whose labels do not match the head): nothing of the batch is counted.
    pub fn add(
        &mut self,
        mean_loss: f64,
        labels: &[i64],
        predicted: &[i64],
    ) -> Result<(), TrainError> {
        let n = self.confusion.len();
        let class = |c: i64| usize::try_from(c).ok().filter(|&c| c < n);
        let pairs: Option<Vec<(usize, usize)>> = labels
            .iter()
            .zip(predicted)
            .map(|(&t, &p)| Some((class(t)?, class(p)?)))
            .collect();
        let Some(pairs) = pairs else {
            let bad = labels
                .iter()
                .chain(predicted)
                .find(|&&c| class(c).is_none())
                .copied()
                .unwrap_or(-1);
            return Err(TrainError::Label {
                label: bad,
                classes: n,
            });
        };
        for (t, p) in pairs {
            self.confusion[t][p] += 1;
        }
        self.loss_sum += mean_loss * labels.len() as f64;
        self.count += labels.len();
        self.batches += 1;
        Ok(())
    }

    /// Batches added so far.
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// Images seen so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Correct predictions so far.
    pub fn correct(&self) -> usize {
        (0..self.confusion.len())
            .map(|i| self.confusion[i][i])
            .sum()
    }

    /// Running mean loss.
    pub fn mean_loss(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.loss_sum / self.count as f64
        }
    }

    /// Running accuracy.
    pub fn accuracy(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.correct() as f64 / self.count as f64
        }
    }

    /// The final report.
    pub fn report(self) -> EvalReport {
        let per_class_accuracy = self
            .confusion
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let total: usize = row.iter().sum();
                if total == 0 {
                    0.0
                } else {
                    row[i] as f64 / total as f64
                }
            })
            .collect();
        EvalReport {
            loss: self.mean_loss(),
            accuracy: self.accuracy(),
            per_class_accuracy,
            confusion: self.confusion,
            count: self.count,
        }
    }
}
