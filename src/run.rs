//! One place that writes what a training run leaves behind: `history.png` (both phases),
//! `predictions.png` (validation images captioned with label and prediction), `metrics.json`
//! and the fine-tuned `model.tvm`, every file written atomically.

use crate::kernels::{AutodiffConvBackend, ConvBackend};
use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use burn::module::AutodiffModule;

use crate::data::{DataLoader, ImageFolder, TrainVal, WarningKind, decode_rgb};
use crate::models::Architecture;
use crate::train::{EvalReport, History, TrainError, TransferRun, evaluate, predict};
use crate::viz::{DEFAULT_GRID, GridItem, VizError, plot_history, prediction_grid};
use crate::weights::{ModelInfo, WeightsError, save_model};

/// Why a run's outputs could not be written. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The output folder could not be created.
    #[error("{}: cannot create the output folder: {source}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A picture could not be drawn or written.
    #[error(transparent)]
    Picture(#[from] VizError),
    /// `metrics.json` could not be encoded or written.
    #[error("{}: {message}", path.display())]
    Metrics {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The model could not be saved.
    #[error(transparent)]
    Model(#[from] WeightsError),
}

/// The figures of a run, written to `metrics.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// What ran (`alpaca`, `ants_bees`, ...).
    pub run: String,
    /// The architecture (`mobilenet_v2`, `resnet18`, ...).
    pub model: String,
    /// The backend (`flex`, `cuda`, ...).
    pub backend: String,
    /// The device (`cpu`, `cuda:0`).
    pub device: String,
    /// The float precision.
    pub precision: String,
    /// Class names, index = label.
    pub classes: Vec<String>,
    /// Training images.
    pub train_images: usize,
    /// Validation images.
    pub val_images: usize,
    /// Damaged images left out (lenient mode), one line each naming the file and why.
    pub skipped_images: Vec<String>,
    /// Every epoch of every phase.
    pub history: History,
    /// The final model on the validation set.
    pub final_evaluation: EvalReport,
    /// Wall time of each phase, seconds.
    pub seconds_per_phase: Vec<(String, f64)>,
    /// Wall time of the whole run, seconds.
    pub total_seconds: f64,
    /// Whether this was a shortened smoke run.
    pub quick: bool,
}

impl std::fmt::Display for RunSummary {
    /// The closing report: final accuracy, per-class figures, best epoch, time.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let report = &self.final_evaluation;
        writeln!(f, "== Final report")?;
        writeln!(
            f,
            "validation accuracy {:.4} (loss {:.4}) on {} images",
            report.accuracy, report.loss, report.count
        )?;
        for (i, name) in self.classes.iter().enumerate() {
            writeln!(
                f,
                "  {name:>12}: accuracy {:.4}, confusion row {:?}",
                report
                    .per_class_accuracy
                    .get(i)
                    .copied()
                    .unwrap_or_default(),
                report.confusion.get(i).cloned().unwrap_or_default()
            )?;
        }
        if !self.skipped_images.is_empty() {
            writeln!(
                f,
                "{} damaged image(s) left out (listed in metrics.json)",
                self.skipped_images.len()
            )?;
        }
        if let Some(best) = self.history.best() {
            writeln!(
                f,
                "best epoch {} ({}) val accuracy {:.4}",
                best.epoch + 1,
                best.phase,
                best.val_accuracy
            )?;
        }
        write!(f, "total time {:.1}s", self.total_seconds)
    }
}

impl RunSummary {
    /// The figures of a finished [`TransferRun`] on `sets`: the fine-tuned model evaluated on
    /// `val`, both phases' history and times, the damaged images left out of either set. What
    /// ran and where (`run`, `backend`, `device`, `precision`, `quick`) is left empty for the
    /// caller to fill in (struct update syntax); `total_seconds` is the phases' sum until then.
    pub fn of_transfer<B, M>(
        outcome: &TransferRun<M>,
        sets: &TrainVal,
        val: &DataLoader,
        classes: &[String],
        device: &B::Device,
    ) -> Result<Self, TrainError>
    where
        B: AutodiffConvBackend,
        M: Architecture<B> + AutodiffModule<B>,
    {
        let (head, tuned) = (&outcome.feature_extraction, &outcome.fine_tuning);
        Ok(RunSummary {
            run: String::new(),
            model: tuned.model.spec().name(),
            backend: String::new(),
            device: String::new(),
            precision: String::new(),
            classes: classes.to_vec(),
            train_images: sets.train.len(),
            val_images: sets.val.len(),
            skipped_images: sets
                .warnings()
                .into_iter()
                .chain(val.warnings())
                .filter(|w| matches!(w.kind, WarningKind::Undecodable(_)))
                .map(|w| w.to_string())
                .collect(),
            history: outcome.history(),
            final_evaluation: evaluate(&tuned.model, val, device)?,
            seconds_per_phase: vec![
                ("feature_extraction".into(), head.seconds),
                ("fine_tuning".into(), tuned.seconds),
            ],
            total_seconds: head.seconds + tuned.seconds,
            quick: false,
        })
    }
}

/// The files a run wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFiles {
    /// The accuracy and loss curves.
    pub history_png: PathBuf,
    /// The captioned validation images.
    pub predictions_png: PathBuf,
    /// The figures.
    pub metrics_json: PathBuf,
    /// The fine-tuned model.
    pub model: PathBuf,
}

/// A run's output folder.
#[derive(Debug, Clone)]
pub struct RunOutputs {
    dir: PathBuf,
}

impl RunOutputs {
    /// Creates the folder `dir` (and its parents).
    pub fn create(dir: impl Into<PathBuf>) -> Result<Self, RunError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| RunError::Folder {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `history.png` (the summary's history), `predictions.png` (up to nine images of
    /// `val_set`, spread over it, predicted by `model` with `info`'s preprocessing),
    /// `metrics.json` (the summary) and `model.tvm` (`model` with `info`).
    pub fn write<B: ConvBackend, M: Architecture<B>>(
        &self,
        model: &M,
        info: &ModelInfo,
        val_set: &ImageFolder,
        summary: &RunSummary,
        device: &B::Device,
    ) -> Result<RunFiles, RunError> {
        let files = RunFiles {
            history_png: self.dir.join("history.png"),
            predictions_png: self.dir.join("predictions.png"),
            metrics_json: self.dir.join("metrics.json"),
            model: self.dir.join("model.tvm"),
        };
        plot_history(&summary.history, &files.history_png)?;
        let items = prediction_items(model, val_set, info, DEFAULT_GRID * DEFAULT_GRID, device);
        prediction_grid(&items, DEFAULT_GRID, &files.predictions_png)?;
        let metrics_error = |message: String| RunError::Metrics {
            path: files.metrics_json.clone(),
            message,
        };
        let json = serde_json::to_string_pretty(summary)
            .map_err(|e| metrics_error(format!("cannot encode: {e}")))?;
        crate::io::atomic_write(&files.metrics_json, json.as_bytes())
            .map_err(|e| metrics_error(e.to_string()))?;
        save_model(model, info, &files.model)?;
        Ok(files)
    }
}

/// Up to `n` images of `set` (spread over it) with their true class and `model`'s prediction,
/// preprocessed as `info` says. Images that cannot be read are left out.
pub fn prediction_items<B: ConvBackend, M: Architecture<B>>(
    model: &M,
    set: &ImageFolder,
    info: &ModelInfo,
    n: usize,
    device: &B::Device,
) -> Vec<GridItem> {
    let transform = info.preprocessing.eval_transform();
    let samples = set.samples();
    let step = (samples.len() / n.max(1)).max(1);
    let mut items = Vec::new();
    for sample in samples.iter().step_by(step).take(n) {
        let Ok(image) = decode_rgb(&sample.path, &set.options().decode) else {
            continue;
        };
        // Evaluation transforms draw nothing from the RNG.
        let Ok(chw) = transform.apply_ref(&image, &mut ChaCha8Rng::seed_from_u64(0)) else {
            continue;
        };
        let [c, h, w] = chw.shape();
        let x = Tensor::from_data(TensorData::new(chw.data, [1, c, h, w]), device);
        let Some(prediction) = predict(model, x, &info.class_names).pop() else {
            continue;
        };
        items.push(GridItem {
            image,
            label: info
                .class_names
                .get(sample.label)
                .cloned()
                .unwrap_or_default(),
            predicted: prediction.name,
        });
    }
    items
}
