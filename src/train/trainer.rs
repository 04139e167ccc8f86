//! The training loop: train and validate per epoch, keep the best weights, checkpoint, resume.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::freeze::{BatchNormPolicy, Trainable, set_trainable_with, trainable_keys};
use super::history::{EpochStats, History};
use super::loss::cross_entropy;
use super::metrics::{Accumulator, EvalReport};
use super::optim::{Optim, OptimizerConfig};
use super::predict::{argmax, host_rows};
use crate::data::{DataLoader, ImageBatch};
use crate::models::{Architecture, ImageClassifier, ModelSpec};
use crate::weights::container::{read_container, write_container};
use crate::weights::{load_record_bytes, record_bytes};

/// Settings of one training phase (`fit` call).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitConfig {
    /// Epochs of this phase.
    pub epochs: usize,
    /// Optimizer, learning rates and schedule.
    pub optimizer: OptimizerConfig,
    /// What trains.
    pub trainable: Trainable,
    /// Whether the BatchNorms of the trainable blocks train (see [`BatchNormPolicy`]).
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
    /// No progress bars or epoch lines.
    pub quiet: bool,
    /// Stop after this many epochs of the phase even if more remain (simulates an interruption;
    /// for tests and `--stop-after`).
    pub stop_after: Option<usize>,
}

impl FitConfig {
    /// `epochs` epochs of `optimizer` training what `trainable` says.
    pub fn new(epochs: usize, optimizer: OptimizerConfig, trainable: Trainable) -> Self {
        Self {
            epochs,
            optimizer,
            trainable,
            batch_norm: BatchNormPolicy::Train,
            label_smoothing: 0.0,
            early_stopping_patience: None,
            checkpoint: None,
            phase: "training".into(),
            first_epoch: 0,
            seed: 0,
            feature_cache: true,
            quiet: false,
            stop_after: None,
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
}

/// What [`fit`] returns.
#[derive(Debug, Clone)]
pub struct FitOutcome<M> {
    /// The model with the best validation accuracy restored.
    pub model: M,
    /// Per-epoch figures of this phase.
    pub history: History,
    /// Epoch (overall number) whose weights were restored.
    pub best_epoch: Option<usize>,
    /// Epochs of this phase already done when a checkpoint was resumed.
    pub resumed_epochs: usize,
    /// Whether early stopping ended the phase.
    pub stopped_early: bool,
    /// Whether the backbone features were computed once and cached.
    pub used_feature_cache: bool,
}

#[derive(Serialize, Deserialize)]
struct CheckpointHeader {
    spec: ModelSpec,
    config: FitConfig,
    epochs_done: usize,
    history: History,
    best: Option<(f64, usize)>,
    epochs_without_improvement: usize,
}

fn progress(len: usize, quiet: bool, label: String) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(label);
    bar
}

/// Predicted class of each row of `logits`.
fn argmax_host<B: Backend>(logits: Tensor<B, 2>) -> Vec<i64> {
    host_rows(logits)
        .iter()
        .map(|row| argmax(row) as i64)
        .collect()
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .ok()
        .and_then(|v| v.first().copied())
        .unwrap_or(f64::NAN)
}

/// Evaluates `model` (no gradients) on every batch of `loader`'s epoch 0.
pub fn evaluate<B: Backend, M: ImageClassifier<B>>(
    model: &M,
    loader: &DataLoader,
    device: &B::Device,
) -> Result<EvalReport, TrainError> {
    let mut acc = Accumulator::new(model.num_classes());
    for batch in loader.epoch(0) {
        let batch = batch?;
        let logits = model.forward(batch.images_tensor::<B>(device));
        add_batch(&mut acc, logits, &batch, device);
    }
    Ok(acc.report())
}

fn add_batch<B: Backend>(
    acc: &mut Accumulator,
    logits: Tensor<B, 2>,
    batch: &ImageBatch,
    device: &B::Device,
) {
    let loss = scalar(cross_entropy(
        logits.clone(),
        batch.labels_tensor::<B>(device),
        0.0,
    ));
    acc.add(loss, &batch.labels, &argmax_host(logits));
}

/// Backbone features of a whole dataset, computed once.
struct FeatureCache<B: Backend> {
    features: Tensor<B, 2>,
    labels: Vec<i64>,
    /// Row of each dataset index.
    row_of: Vec<usize>,
}

impl<B: Backend> FeatureCache<B> {
    fn build<M: ImageClassifier<B>>(
        model: &M,
        loader: &DataLoader,
        device: &B::Device,
        quiet: bool,
        what: &str,
    ) -> Result<Self, TrainError> {
        let bar = progress(loader.len(), quiet, format!("caching {what} features"));
        let mut chunks = Vec::new();
        let mut labels = Vec::new();
        let mut row_of = vec![usize::MAX; loader.num_samples()];
        for batch in loader.epoch(0) {
            let batch = batch?;
            chunks.push(model.features(batch.images_tensor::<B>(device)));
            for (&index, &label) in batch.indices.iter().zip(&batch.labels) {
                if let Some(slot) = row_of.get_mut(index) {
                    *slot = labels.len();
                }
                labels.push(label);
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        if chunks.is_empty() {
            return Err(TrainError::Config(format!(
                "no {what} images to cache features of"
            )));
        }
        Ok(Self {
            features: Tensor::cat(chunks, 0),
            labels,
            row_of,
        })
    }

    /// Rows for dataset indices `order[start..end]`: features and labels.
    fn batch(&self, indices: &[usize], device: &B::Device) -> (Tensor<B, 2>, Vec<i64>) {
        let rows: Vec<i64> = indices.iter().map(|&i| self.row_of[i] as i64).collect();
        let labels = rows.iter().map(|&r| self.labels[r as usize]).collect();
        let index =
            Tensor::<B, 1, Int>::from_data(TensorData::new(rows.clone(), [rows.len()]), device);
        (self.features.clone().select(0, index), labels)
    }
}

/// One optimisation step at a time: the optimizer and its state, the loss settings, and the
/// per-group learning rates. [`fit`] drives one; benchmarks and parity tests drive one directly.
pub struct Learner<B: AutodiffBackend, M: AutodiffModule<B>> {
    optim: Optim<B, M>,
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
    B: AutodiffBackend,
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

    /// Backpropagates the loss of `logits` against `labels` and updates `model` (head at the
    /// head rate, the trainable backbone at the backbone rate of `epoch_in_phase`).
    pub fn step_logits(
        &mut self,
        model: M,
        logits: Tensor<B, 2>,
        labels: &[i64],
        epoch_in_phase: usize,
    ) -> (M, StepOutput) {
        let device = logits.device();
        let (lr_head, lr_backbone) = self.config.rates(epoch_in_phase);
        let targets = Tensor::<B, 1, Int>::from_data(
            TensorData::new(labels.to_vec(), [labels.len()]),
            &device,
        );
        let loss = cross_entropy(logits.clone(), targets, self.label_smoothing);
        let output = StepOutput {
            loss: scalar(loss.clone().inner()),
            predicted: argmax_host(logits.inner()),
        };
        let mut grads = loss.backward();
        let head_grads = GradientsParams::from_module(&mut grads, model.head());
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

/// How many leading backbone blocks hold no trainable parameter, when at least two do (so a
/// copy with folded BatchNorms may run them: ResNet's first two blocks are its stem convolution
/// and the BatchNorm that a fold merges into it).
fn frozen_prefix_len<B: AutodiffBackend, M: ImageClassifier<B> + AutodiffModule<B>>(
    model: &M,
) -> Option<usize> {
    let keys = trainable_keys::<B, M>(model);
    let blocks = model.block_paths();
    let first_trainable = blocks
        .iter()
        .position(|block| {
            let prefix = format!("{block}.");
            keys.iter().any(|k| k.starts_with(&prefix))
        })
        .unwrap_or(blocks.len());
    (first_trainable >= 2 && first_trainable < blocks.len()).then_some(first_trainable)
}

/// Trains `model` on `train`, validating on `val` after every epoch, and returns it with the
/// best validation weights restored (as the PyTorch tutorial's `train_model` does).
///
/// With `config.checkpoint` set, the state after each epoch (model, optimizer, history, best
/// weights) is written atomically, and an existing checkpoint of the same phase is resumed:
/// the result is the same as an uninterrupted run.
pub fn fit<B, M>(
    model: M,
    train: &DataLoader,
    val: &DataLoader,
    config: &FitConfig,
    device: &B::Device,
) -> Result<FitOutcome<M>, TrainError>
where
    B: AutodiffBackend,
    M: Architecture<B> + AutodiffModule<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
{
    if config.epochs == 0 {
        return Err(TrainError::Config("epochs must be at least 1".into()));
    }
    let mut model = set_trainable_with(model, &config.trainable, config.batch_norm)?;
    let mut learner = Learner::<B, M>::new(&config.optimizer, config.label_smoothing);
    let mut history = History::default();
    let mut best: Option<(f64, usize, M)> = None;
    let mut epochs_done = 0;
    let mut epochs_without_improvement = 0;

    if let Some(path) = config.checkpoint.as_deref().filter(|p| p.exists()) {
        let (header, mut sections) = read_container::<CheckpointHeader>(path, "checkpoint")?;
        if header.spec != model.spec() || header.config.phase != config.phase {
            return Err(TrainError::Checkpoint(format!(
                "{}: checkpoint of phase '{}' for {} does not match this run (phase '{}', {}); delete it to start over",
                path.display(),
                header.config.phase,
                header.spec.name(),
                config.phase,
                model.spec().name()
            )));
        }
        let mut take = |name: &str| {
            sections.remove(name).ok_or_else(|| {
                TrainError::Checkpoint(format!("{}: no '{name}' section", path.display()))
            })
        };
        model = load_record_bytes(model, take("model")?, path, device)?;
        model = set_trainable_with(model, &config.trainable, config.batch_norm)?;
        learner.optim = learner.optim.load_bytes(take("optimizer")?, device)?;
        if let Some((acc, epoch)) = header.best {
            let best_model = load_record_bytes(model.clone(), take("best")?, path, device)?;
            best = Some((acc, epoch, best_model));
        }
        epochs_done = header.epochs_done;
        history = header.history;
        epochs_without_improvement = header.epochs_without_improvement;
        if !config.quiet {
            println!(
                "resuming '{}' from {} after {epochs_done} epoch(s)",
                config.phase,
                path.display()
            );
        }
    }
    let resumed_epochs = epochs_done;

    let last = config
        .stop_after
        .map_or(config.epochs, |s| s.min(config.epochs));
    // The leading blocks that do not train (all of them in feature extraction) never change
    // during the phase: they run on a copy with their BatchNorms folded, without autodiff, made
    // once. A phase resumed after its last epoch has nothing left to train: no copy, no cache.
    let head_only = config.trainable == Trainable::HeadOnly;
    let frozen_blocks = if epochs_done >= last {
        None
    } else if head_only {
        Some(model.block_paths().len())
    } else {
        frozen_prefix_len(&model)
    };
    let frozen = frozen_blocks.map(|blocks| (blocks, model.valid().fuse_for_inference()));
    let cache = head_only && config.feature_cache && !train.is_random();
    let (train_cache, val_cache) = if let Some((_, inner)) = frozen.as_ref().filter(|_| cache) {
        (
            Some(FeatureCache::build(
                inner,
                train,
                device,
                config.quiet,
                "training",
            )?),
            Some(FeatureCache::build(
                inner,
                val,
                device,
                config.quiet,
                "validation",
            )?),
        )
    } else {
        (None, None)
    };

    let mut stopped_early = false;
    while epochs_done < last {
        let epoch_in_phase = epochs_done;
        let epoch = config.first_epoch + epoch_in_phase;
        let (lr_head, _) = config.optimizer.rates(epoch_in_phase);
        B::seed(
            device,
            config
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(epoch as u64),
        );
        let started = Instant::now();
        let bar = progress(
            train.len(),
            config.quiet,
            format!("epoch {:>2} {}", epoch + 1, config.phase),
        );
        let mut acc = Accumulator::new(model.num_classes());
        let order = train.order(epoch as u64);

        let mut record = |output: StepOutput, labels: &[i64]| {
            acc.add(output.loss, labels, &output.predicted);
            bar.inc(1);
            bar.set_message(format!(
                "loss {:.4} acc {:.3} {:.1} img/s",
                acc.mean_loss(),
                acc.accuracy(),
                acc.count() as f64 / started.elapsed().as_secs_f64().max(1e-9)
            ));
        };
        if let Some(cache) = &train_cache {
            for chunk in order.chunks(train.config().batch_size) {
                let (features, labels) = cache.batch(chunk, device);
                let logits = model.classify(Tensor::from_inner(features));
                let (next, output) = learner.step_logits(model, logits, &labels, epoch_in_phase);
                model = next;
                record(output, &labels);
            }
        } else {
            for batch in train.epoch(epoch as u64) {
                let batch = batch?;
                let images = batch.images_tensor::<B>(device);
                let (next, output) = match &frozen {
                    Some((blocks, folded)) => learner.step_frozen_prefix(
                        model,
                        folded,
                        *blocks,
                        images,
                        &batch.labels,
                        epoch_in_phase,
                    ),
                    None => learner.step(model, images, &batch.labels, epoch_in_phase, false),
                };
                model = next;
                record(output, &batch.labels);
            }
        }
        bar.finish_and_clear();
        let train_seconds = started.elapsed().as_secs_f64();

        let inner = model.valid().fuse_for_inference();
        let val_report = match &val_cache {
            Some(cache) => {
                let mut acc = Accumulator::new(model.num_classes());
                let indices: Vec<usize> = (0..val.num_samples()).collect();
                for chunk in indices.chunks(val.config().batch_size) {
                    let (features, labels) = cache.batch(chunk, device);
                    let logits = inner.classify(features);
                    let targets =
                        Tensor::from_data(TensorData::new(labels.clone(), [labels.len()]), device);
                    acc.add(
                        scalar(cross_entropy(logits.clone(), targets, 0.0)),
                        &labels,
                        &argmax_host(logits),
                    );
                }
                acc.report()
            }
            None => evaluate(&inner, val, device)?,
        };
        let stats = EpochStats {
            epoch,
            phase: config.phase.clone(),
            train_loss: acc.mean_loss(),
            train_accuracy: acc.accuracy(),
            val_loss: val_report.loss,
            val_accuracy: val_report.accuracy,
            learning_rate: lr_head,
            seconds: started.elapsed().as_secs_f64(),
            images_per_second: acc.count() as f64 / train_seconds.max(1e-9),
        };
        if !config.quiet {
            println!(
                "epoch {:>2} [{}] train loss {:.4} acc {:.4} | val loss {:.4} acc {:.4} | lr {:.1e} | {:.1}s ({:.1} img/s)",
                epoch + 1,
                config.phase,
                stats.train_loss,
                stats.train_accuracy,
                stats.val_loss,
                stats.val_accuracy,
                stats.learning_rate,
                stats.seconds,
                stats.images_per_second
            );
        }
        if best
            .as_ref()
            .is_none_or(|(acc, ..)| stats.val_accuracy > *acc)
        {
            best = Some((stats.val_accuracy, epoch, model.clone()));
            epochs_without_improvement = 0;
        } else {
            epochs_without_improvement += 1;
        }
        history.epochs.push(stats);
        epochs_done += 1;

        if let Some(path) = &config.checkpoint {
            write_checkpoint(
                path,
                &model,
                &learner.optim,
                best.as_ref(),
                config,
                epochs_done,
                &history,
                epochs_without_improvement,
            )?;
        }
        if config
            .early_stopping_patience
            .is_some_and(|p| epochs_without_improvement >= p)
        {
            stopped_early = true;
            break;
        }
    }

    let best_epoch = best.as_ref().map(|(_, e, _)| *e);
    let model = match best {
        Some((_, _, best_model)) if epochs_done >= config.epochs || stopped_early => best_model,
        _ => model,
    };
    Ok(FitOutcome {
        model,
        history,
        best_epoch,
        resumed_epochs,
        stopped_early,
        used_feature_cache: cache,
    })
}

#[allow(clippy::too_many_arguments)]
fn write_checkpoint<B: AutodiffBackend, M: Architecture<B> + AutodiffModule<B>>(
    path: &Path,
    model: &M,
    optim: &Optim<B, M>,
    best: Option<&(f64, usize, M)>,
    config: &FitConfig,
    epochs_done: usize,
    history: &History,
    epochs_without_improvement: usize,
) -> Result<(), TrainError> {
    let header = CheckpointHeader {
        spec: model.spec(),
        config: config.clone(),
        epochs_done,
        history: history.clone(),
        best: best.map(|(acc, epoch, _)| (*acc, *epoch)),
        epochs_without_improvement,
    };
    let model_bytes = record_bytes(model, path)?;
    let optim_bytes = optim.to_bytes()?;
    let best_bytes = match best {
        Some((_, _, m)) => record_bytes(m, path)?,
        None => Vec::new(),
    };
    let mut sections: Vec<(&str, &[u8])> =
        vec![("model", &model_bytes), ("optimizer", &optim_bytes)];
    if best.is_some() {
        sections.push(("best", &best_bytes));
    }
    write_container(path, "checkpoint", &header, &sections)?;
    Ok(())
}
