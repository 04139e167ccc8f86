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

/// Precision, recall, F1 score and support of one class (or an average over classes), as
/// scikit-learn's `precision_recall_fscore_support` computes them with `zero_division=0`: a
/// ratio whose denominator is 0 is reported as 0, never NaN.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Of the images predicted as this class, the fraction that are: `tp / (tp + fp)`.
    pub precision: f64,
    /// Of the images of this class, the fraction predicted as it: `tp / (tp + fn)`.
    pub recall: f64,
    /// Harmonic mean of precision and recall: `2 · p · r / (p + r)`.
    pub f1: f64,
    /// Number of images whose true class this is (for an average: all images).
    pub support: usize,
}

impl ClassMetrics {
    /// The metrics of every class of `confusion` (`confusion[true][predicted]` counts), index =
    /// class. A ragged matrix is read as if the missing cells were 0.
    pub fn from_confusion(confusion: &[Vec<usize>]) -> Vec<ClassMetrics> {
        let n = confusion.len();
        let cell = |t: usize, p: usize| confusion[t].get(p).copied().unwrap_or(0);
        (0..n)
            .map(|c| {
                let tp = cell(c, c);
                let support: usize = confusion[c].iter().take(n).sum();
                let predicted: usize = (0..n).map(|t| cell(t, c)).sum();
                let precision = ratio(tp, predicted);
                let recall = ratio(tp, support);
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassMetrics {
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect()
    }

    /// The unweighted mean of `per_class` (scikit-learn's `macro avg`), with the total support.
    pub fn macro_average(per_class: &[ClassMetrics]) -> ClassMetrics {
        let n = per_class.len();
        let mean = |f: fn(&ClassMetrics) -> f64| {
            if n == 0 {
                0.0
            } else {
                per_class.iter().map(f).sum::<f64>() / n as f64
            }
        };
        ClassMetrics {
            precision: mean(|m| m.precision),
            recall: mean(|m| m.recall),
            f1: mean(|m| m.f1),
            support: per_class.iter().map(|m| m.support).sum(),
        }
    }

    /// The mean of `per_class` weighted by support (scikit-learn's `weighted avg`), with the
    /// total support; all 0 when there is no image.
    pub fn weighted_average(per_class: &[ClassMetrics]) -> ClassMetrics {
        let total: usize = per_class.iter().map(|m| m.support).sum();
        let mean = |f: fn(&ClassMetrics) -> f64| {
            if total == 0 {
                0.0
            } else {
                per_class
                    .iter()
                    .map(|m| f(m) * m.support as f64)
                    .sum::<f64>()
                    / total as f64
            }
        };
        ClassMetrics {
            precision: mean(|m| m.precision),
            recall: mean(|m| m.recall),
            f1: mean(|m| m.f1),
            support: total,
        }
    }
}

/// `num / den`, 0 when `den` is 0.
fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Per-class precision, recall, F1 and support with their averages: scikit-learn's
/// `classification_report(output_dict=True)`. Its [`Display`](std::fmt::Display) is the text
/// table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    /// Class names, index = class (the index as text where no name was given).
    pub classes: Vec<String>,
    /// Metrics of each class, index = class.
    pub per_class: Vec<ClassMetrics>,
    /// Fraction of images classified right (0 when there is none).
    pub accuracy: f64,
    /// Unweighted mean over classes.
    pub macro_avg: ClassMetrics,
    /// Mean over classes weighted by support.
    pub weighted_avg: ClassMetrics,
}

impl ClassificationReport {
    /// The report of `confusion` (`confusion[true][predicted]` counts) with `class_names`
    /// (missing names are replaced by the class index, extra names are ignored).
    pub fn from_confusion(confusion: &[Vec<usize>], class_names: &[String]) -> Self {
        let per_class = ClassMetrics::from_confusion(confusion);
        let total: usize = per_class.iter().map(|m| m.support).sum();
        let correct: usize = (0..confusion.len())
            .map(|c| confusion[c].get(c).copied().unwrap_or(0))
            .sum();
        ClassificationReport {
            classes: class_names_for(confusion.len(), class_names),
            accuracy: ratio(correct, total),
            macro_avg: ClassMetrics::macro_average(&per_class),
            weighted_avg: ClassMetrics::weighted_average(&per_class),
            per_class,
        }
    }
}

/// `n` class names: `names` where given, else the class index as text.
fn class_names_for(n: usize, names: &[String]) -> Vec<String> {
    (0..n)
        .map(|c| names.get(c).cloned().unwrap_or_else(|| c.to_string()))
        .collect()
}

/// Digits after the decimal point in the text tables.
const TABLE_DIGITS: usize = 3;

impl std::fmt::Display for ClassificationReport {
    /// The table of scikit-learn's `classification_report` (3 decimals):
    ///
    /// ```text
    ///               precision    recall  f1-score   support
    ///
    ///         ants      0.958     0.971     0.965        70
    ///         bees      0.975     0.964     0.970        83
    ///
    ///     accuracy                          0.967       153
    ///    macro avg      0.967     0.968     0.967       153
    /// weighted avg      0.967     0.967     0.967       153
    /// ```
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = TABLE_DIGITS;
        let name_width = self
            .classes
            .iter()
            .map(|n| n.chars().count())
            .chain(["weighted avg".len()])
            .max()
            .unwrap_or(0);
        let w = 10;
        writeln!(
            f,
            "{:>name_width$}{:>w$}{:>w$}{:>w$}{:>w$}",
            "", "precision", "recall", "f1-score", "support"
        )?;
        writeln!(f)?;
        let row = |f: &mut std::fmt::Formatter<'_>, name: &str, m: &ClassMetrics| {
            writeln!(
                f,
                "{name:>name_width$}{:>w$.d$}{:>w$.d$}{:>w$.d$}{:>w$}",
                m.precision, m.recall, m.f1, m.support
            )
        };
        for (name, m) in self.classes.iter().zip(&self.per_class) {
            row(f, name, m)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:>name_width$}{:>w$}{:>w$}{:>w$.d$}{:>w$}",
            "accuracy", "", "", self.accuracy, self.macro_avg.support
        )?;
        row(f, "macro avg", &self.macro_avg)?;
        row(f, "weighted avg", &self.weighted_avg)
    }
}

/// Widest class name, in characters, of the confusion matrix's text columns.
const CONFUSION_NAME_WIDTH: usize = 12;

/// The confusion matrix as text, rows true classes and columns predicted ones, names shortened
/// to [`CONFUSION_NAME_WIDTH`] characters with "…".
fn confusion_text(confusion: &[Vec<usize>], names: &[String]) -> String {
    let n = confusion.len();
    let short = |name: &str, width: usize| -> String {
        if name.chars().count() <= width {
            name.to_string()
        } else {
            let mut s: String = name.chars().take(width.saturating_sub(1)).collect();
            s.push('…');
            s
        }
    };
    let cell = |t: usize, p: usize| confusion[t].get(p).copied().unwrap_or(0);
    let digits = (0..n)
        .flat_map(|t| (0..n).map(move |p| (t, p)))
        .map(|(t, p)| cell(t, p).to_string().len())
        .max()
        .unwrap_or(1);
    let longest = names.iter().map(|s| s.chars().count()).max().unwrap_or(1);
    let col = digits.max(longest.min(CONFUSION_NAME_WIDTH));
    let row_width = longest.clamp("true \\ predicted".len(), CONFUSION_NAME_WIDTH.max(16));
    let mut out = format!("{:<row_width$}", "true \\ predicted");
    for name in names {
        out += &format!("  {:>col$}", short(name, col));
    }
    out.push('\n');
    for (t, name) in names.iter().enumerate() {
        out += &format!("{:<row_width$}", short(name, row_width));
        for p in 0..n {
            out += &format!("  {:>col$}", cell(t, p));
        }
        out.push('\n');
    }
    out
}

impl EvalReport {
    /// Precision, recall, F1 and support of each class, from [`EvalReport::confusion`] (0 where
    /// undefined, never NaN).
    pub fn class_metrics(&self) -> Vec<ClassMetrics> {
        ClassMetrics::from_confusion(&self.confusion)
    }

    /// The per-class metrics and their averages, with `class_names` (index = class).
    pub fn classification_report(&self, class_names: &[String]) -> ClassificationReport {
        ClassificationReport::from_confusion(&self.confusion, class_names)
    }

    /// A text report: scikit-learn's `classification_report` table, then the confusion matrix
    /// (rows true classes, columns predicted ones), then the mean loss. Missing class names are
    /// replaced by the class index.
    pub fn table(&self, class_names: &[String]) -> String {
        let report = self.classification_report(class_names);
        format!(
            "{report}\nconfusion matrix (rows: true class, columns: predicted class)\n{}\nmean \
             cross-entropy loss {:.4} on {} images\n",
            confusion_text(&self.confusion, &report.classes),
            self.loss,
            self.count
        )
    }
}
