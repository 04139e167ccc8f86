//! `fit`: train and validate per epoch, keep the best weights, checkpoint, resume, stop early.
//!
//! The phase is a loop over epochs; each part has its own place: which blocks run frozen and
//! how ([`FrozenPart`]), the feature cache (`feature_cache`), one epoch of training
//! ([`train_epoch`]), validation ([`validate`]), the state a checkpoint saves ([`Progress`],
//! `checkpoint`), and what the user sees (an observer, `observer`).

use crate::kernels::{AutodiffConvBackend, ConvBackend};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::checkpoint;
use super::config::FitConfig;
use super::evaluate::{add_logits, check_labels, evaluate};
use super::feature_cache::FeatureCache;
use super::freeze::{Trainable, set_trainable_with, trainable_keys};
use super::history::{EpochStats, History};
use super::learner::{Learner, StepOutput};
use super::metrics::Accumulator;
use super::observer::{BatchProgress, ConsoleReporter, Control, FitObserver, Silent};
use super::source::BatchSource;
use super::{DeviceBatchLimit, TrainError};
use crate::models::{Architecture, ImageClassifier};

/// What [`fit`] returns.
#[derive(Debug, Clone)]
pub struct FitOutcome<M> {
    /// The model with the best validation accuracy restored (as the PyTorch tutorial's
    /// `train_model` returns it). It is the training (autodiff) model: pass it on to another
    /// phase, or to `evaluate` / `predict`, which run it in inference mode.
    pub model: M,
    /// Per-epoch figures of this phase.
    pub history: History,
    /// Epoch (overall number) whose weights were restored.
    pub best_epoch: Option<usize>,
    /// Epochs of this phase already done when a checkpoint was resumed.
    pub resumed_epochs: usize,
    /// Whether early stopping ended the phase.
    pub stopped_early: bool,
    /// Whether an observer ended the phase before its last epoch (resume it from its
    /// checkpoint).
    pub interrupted: bool,
    /// Whether the backbone features were computed once and cached.
    pub used_feature_cache: bool,
    /// Wall time of the call, seconds (a resumed phase: of this call only).
    pub seconds: f64,
}

impl<M> FitOutcome<M> {
    /// The outcome of a phase that did not run (0 epochs): `model` as it was, no history.
    pub fn skipped(model: M) -> Self {
        Self {
            model,
            history: History::default(),
            best_epoch: None,
            resumed_epochs: 0,
            stopped_early: false,
            interrupted: false,
            used_feature_cache: false,
            seconds: 0.0,
        }
    }
}

/// The best validation accuracy so far, its epoch and weights.
pub(crate) struct Best<M> {
    pub(crate) accuracy: f64,
    pub(crate) epoch: usize,
    pub(crate) model: M,
}

/// Everything a phase carries from one epoch to the next: what a checkpoint saves.
pub(crate) struct Progress<B: AutodiffConvBackend, M: AutodiffModule<B>> {
    pub(crate) model: M,
    pub(crate) learner: Learner<B, M>,
    pub(crate) history: History,
    pub(crate) best: Option<Best<M>>,
    pub(crate) epochs_done: usize,
    pub(crate) epochs_without_improvement: usize,
}

/// Trains `model` on `train`, validating on `val` after every epoch, and returns it with the
/// best validation weights restored, printing progress unless `config.quiet`.
///
/// With `config.checkpoint` set, the state after each epoch (model, optimizer, history, best
/// weights) is written atomically, and an existing checkpoint of the same phase is resumed:
/// the result is the same as an uninterrupted run.
///
/// # Errors
/// [`TrainError::Config`] before any training for settings that cannot work (no epochs, a head
/// whose class count differs from the data's, an unknown block), [`TrainError::BatchNorm`] when
/// asked to train BatchNorms that hold no statistics, and data or checkpoint errors naming their
/// file.
pub fn fit<B, M>(
    model: M,
    train: &dyn BatchSource,
    val: &dyn BatchSource,
    config: &FitConfig,
    device: &B::Device,
) -> Result<FitOutcome<M>, TrainError>
where
    B: AutodiffConvBackend,
    M: Architecture<B> + AutodiffModule<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
{
    if config.quiet {
        fit_with(model, train, val, config, device, &mut Silent)
    } else {
        fit_with(
            model,
            train,
            val,
            config,
            device,
            &mut ConsoleReporter::default(),
        )
    }
}

/// [`fit`] reporting to `observer` (which can also end the phase after any epoch).
pub fn fit_with<B, M>(
    model: M,
    train: &dyn BatchSource,
    val: &dyn BatchSource,
    config: &FitConfig,
    device: &B::Device,
    observer: &mut dyn FitObserver,
) -> Result<FitOutcome<M>, TrainError>
where
    B: AutodiffConvBackend,
    M: Architecture<B> + AutodiffModule<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
{
    let called = Instant::now();
    check_setup(&model, train, val, config)?;
    let model = set_trainable_with(model, &config.trainable, config.batch_norm)?;
    let mut progress = Progress {
        model,
        learner: Learner::new(&config.optimizer, config.label_smoothing),
        history: History::default(),
        best: None,
        epochs_done: 0,
        epochs_without_improvement: 0,
    };
    if let Some(path) = config.checkpoint.as_deref().filter(|p| p.exists()) {
        progress = checkpoint::resume(path, progress, config, device)?;
        progress.model = set_trainable_with(progress.model, &config.trainable, config.batch_norm)?;
        observer.resumed(&config.phase, path, progress.epochs_done);
    }
    let resumed_epochs = progress.epochs_done;
    // A phase resumed after it stopped early has ended, as the uninterrupted run did.
    let patience_ran_out = |progress: &Progress<B, M>| {
        config
            .early_stopping_patience
            .is_some_and(|p| progress.epochs_without_improvement >= p)
    };
    let mut stopped_early = resumed_epochs > 0 && patience_ran_out(&progress);
    let mut interrupted = false;

    // A phase resumed after its end has nothing left to train: no frozen copy, no cache.
    let frozen = (progress.epochs_done < config.epochs && !stopped_early)
        .then(|| FrozenPart::of::<B>(&progress.model, &config.trainable))
        .flatten();
    let cache = match &frozen {
        Some(frozen) if frozen.is_whole_backbone && config.feature_cache && !train.is_random() => {
            Some(FeatureCaches {
                train: FeatureCache::build(&frozen.model, train, device, observer, "training")?,
                val: FeatureCache::build(&frozen.model, val, device, observer, "validation")?,
            })
        }
        _ => None,
    };

    while progress.epochs_done < config.epochs && !stopped_early {
        let epoch_in_phase = progress.epochs_done;
        let epoch = config.first_epoch + epoch_in_phase;
        seed_epoch::<B>(device, config.seed, epoch);
        let started = Instant::now();
        observer.epoch_started(epoch, &config.phase, train.num_batches());
        let input = match &cache {
            Some(caches) => StepInput::Cached(&caches.train),
            None => StepInput::Images(frozen.as_ref()),
        };
        let (model, acc) = train_epoch(
            progress.model.clone(),
            &mut progress.learner,
            train,
            input,
            (epoch, epoch_in_phase),
            device,
            observer,
        )?;
        progress.model = model;
        let train_seconds = started.elapsed().as_secs_f64();
        let val_report = validate(&progress.model, val, cache.as_ref().map(|c| &c.val), device)?;
        let stats = EpochStats {
            epoch,
            phase: config.phase.clone(),
            train_loss: acc.mean_loss(),
            train_accuracy: acc.accuracy(),
            val_loss: val_report.loss,
            val_accuracy: val_report.accuracy,
            learning_rate: config.optimizer.rates(epoch_in_phase).0,
            seconds: started.elapsed().as_secs_f64(),
            images_per_second: acc.count() as f64 / train_seconds.max(1e-9),
        };
        progress.record(stats.clone());
        if let Some(path) = &config.checkpoint {
            checkpoint::write(path, &progress, config)?;
        }
        let control = observer.epoch_finished(&stats);
        stopped_early = patience_ran_out(&progress);
        if control == Control::Stop && progress.epochs_done < config.epochs && !stopped_early {
            interrupted = true;
            break;
        }
    }

    let best_epoch = progress.best.as_ref().map(|b| b.epoch);
    Ok(FitOutcome {
        model: progress.best.map_or(progress.model, |best| best.model),
        history: progress.history,
        best_epoch,
        resumed_epochs,
        stopped_early,
        interrupted,
        used_feature_cache: cache.is_some(),
        seconds: called.elapsed().as_secs_f64(),
    })
}

impl<B: AutodiffConvBackend, M: AutodiffModule<B>> Progress<B, M> {
    /// Adds an epoch's figures, keeping its weights when they are the best so far.
    fn record(&mut self, stats: EpochStats) {
        if self
            .best
            .as_ref()
            .is_none_or(|best| stats.val_accuracy > best.accuracy)
        {
            self.best = Some(Best {
                accuracy: stats.val_accuracy,
                epoch: stats.epoch,
                model: self.model.clone(),
            });
            self.epochs_without_improvement = 0;
        } else {
            self.epochs_without_improvement += 1;
        }
        self.history.epochs.push(stats);
        self.epochs_done += 1;
    }
}

/// Refuses settings that cannot work, before anything trains.
fn check_setup<B: ConvBackend, M: ImageClassifier<B>>(
    model: &M,
    train: &dyn BatchSource,
    val: &dyn BatchSource,
    config: &FitConfig,
) -> Result<(), TrainError> {
    if config.epochs == 0 {
        return Err(TrainError::Config("epochs must be at least 1".into()));
    }
    for (set, source) in [("training", train), ("validation", val)] {
        let classes = source.classes().len();
        if classes != model.num_classes() {
            return Err(TrainError::Config(format!(
                "the model's head predicts {} classes but the {set} data has {classes} ({}); \
                 give the model a new head with `with_new_head({classes}, &device)`",
                model.num_classes(),
                source.classes().join(", ")
            )));
        }
    }
    Ok(())
}

/// Dropout draws from the backend's one global RNG. Seeding it from `(seed, epoch)` as each
/// epoch starts makes the epoch's masks independent of what ran before, so a run resumed at any
/// epoch repeats the uninterrupted one exactly.
fn seed_epoch<B: Backend>(device: &B::Device, seed: u64, epoch: usize) {
    B::seed(
        device,
        seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64),
    );
}

/// The leading blocks that do not train during the phase (all of them in feature extraction):
/// they never change, so they run on a copy with their BatchNorms folded, without autodiff,
/// made once per phase.
pub(crate) struct FrozenPart<M> {
    /// Number of leading blocks that are frozen.
    blocks: usize,
    /// Whether that is the whole backbone (only the head trains).
    is_whole_backbone: bool,
    /// The folded, gradient-free copy that runs them.
    model: M,
}

impl<M> FrozenPart<M> {
    /// The frozen part of `model` under `trainable`, if there is one worth running apart.
    fn of<B>(model: &impl AutodiffModule<B, InnerModule = M>, trainable: &Trainable) -> Option<Self>
    where
        B: AutodiffConvBackend,
        M: ImageClassifier<B::InnerBackend>,
    {
        let inner = model.valid();
        let total = inner.block_paths().len();
        let blocks = if *trainable == Trainable::HeadOnly {
            total
        } else {
            frozen_prefix_len(&trainable_keys::<B, _>(model), &inner.block_paths())?
        };
        Some(FrozenPart {
            blocks,
            is_whole_backbone: blocks == total,
            model: inner.fuse_for_inference(),
        })
    }
}

/// How many leading backbone blocks hold no trainable parameter, when at least two do (so a
/// copy with folded BatchNorms may run them: ResNet's first two blocks are its stem convolution
/// and the BatchNorm that a fold merges into it) and some block trains.
fn frozen_prefix_len(trainable_keys: &[String], blocks: &[String]) -> Option<usize> {
    let first_trainable = blocks
        .iter()
        .position(|block| {
            let prefix = format!("{block}.");
            trainable_keys.iter().any(|k| k.starts_with(&prefix))
        })
        .unwrap_or(blocks.len());
    (first_trainable >= 2 && first_trainable < blocks.len()).then_some(first_trainable)
}

/// The training and validation features of a frozen backbone.
struct FeatureCaches<B: ConvBackend> {
    train: FeatureCache<B>,
    val: FeatureCache<B>,
}

/// How an epoch's batches reach the trainable part of the network.
enum StepInput<'a, B: AutodiffConvBackend, M: AutodiffModule<B>> {
    /// Cached backbone features: only the head runs.
    Cached(&'a FeatureCache<B::InnerBackend>),
    /// Images through the frozen prefix, then the rest of the network.
    Images(Option<&'a FrozenPart<M::InnerModule>>),
}

/// One epoch of training (epoch `epoch` of the run, `epoch_in_phase` of the phase): every batch
/// of `train` once. Returns the updated model and the epoch's running figures.
fn train_epoch<B, M>(
    mut model: M,
    learner: &mut Learner<B, M>,
    train: &dyn BatchSource,
    input: StepInput<'_, B, M>,
    (epoch, epoch_in_phase): (usize, usize),
    device: &B::Device,
    observer: &mut dyn FitObserver,
) -> Result<(M, Accumulator), TrainError>
where
    B: AutodiffConvBackend,
    M: ImageClassifier<B> + AutodiffModule<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
{
    let started = Instant::now();
    let batches = train.num_batches();
    let mut acc = Accumulator::new(model.num_classes());
    let mut record = |acc: &mut Accumulator, output: StepOutput, labels: &[i64]| {
        acc.add(output.loss, labels, &output.predicted)?;
        observer.batch_done(&BatchProgress {
            batches_done: acc.batches(),
            batches,
            loss: acc.mean_loss(),
            accuracy: acc.accuracy(),
            images_per_second: acc.count() as f64 / started.elapsed().as_secs_f64().max(1e-9),
        });
        Ok::<(), TrainError>(())
    };
    match input {
        StepInput::Cached(cache) => {
            for chunk in train.order(epoch as u64).chunks(train.batch_size().max(1)) {
                let Some((features, labels)) = cache.batch(chunk, device) else {
                    continue;
                };
                check_labels(&labels, model.num_classes())?;
                let logits = model.classify(Tensor::from_inner(features));
                let (next, output) = learner.step_logits(model, logits, &labels, epoch_in_phase);
                model = next;
                record(&mut acc, output, &labels)?;
            }
        }
        StepInput::Images(frozen) => {
            let mut checked_shape = None;
            for batch in train.batches(epoch as u64) {
                let batch = batch?;
                check_labels(&batch.labels, model.num_classes())?;
                let images = batch.images_tensor::<B>(device);
                // A step cannot be split: a batch the device cannot hold is refused before it
                // runs (once per image shape; backends without a buffer cap skip it).
                let [n, c, h, w] = images.dims();
                if checked_shape != Some([c, h, w]) {
                    if let Some(limit) = DeviceBatchLimit::of(&model, [c, h, w], device) {
                        limit.check(train.batch_size().max(n))?;
                    }
                    checked_shape = Some([c, h, w]);
                }
                let labels = &batch.labels;
                let (next, output) = match frozen {
                    Some(part) => learner.step_frozen_prefix(
                        model,
                        &part.model,
                        part.blocks,
                        images,
                        labels,
                        epoch_in_phase,
                    ),
                    None => learner.step(model, images, labels, epoch_in_phase, false),
                };
                model = next;
                record(&mut acc, output, labels)?;
            }
        }
    }
    Ok((model, acc))
}

/// Validation after an epoch: on the cached features when the backbone is frozen, else
/// [`evaluate`] (the model folded, in inference mode).
fn validate<B, M>(
    model: &M,
    val: &dyn BatchSource,
    cache: Option<&FeatureCache<B::InnerBackend>>,
    device: &B::Device,
) -> Result<super::EvalReport, TrainError>
where
    B: AutodiffConvBackend,
    M: ImageClassifier<B> + AutodiffModule<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
{
    let inner = model.valid();
    match cache {
        Some(cache) => {
            let mut acc = Accumulator::new(inner.num_classes());
            for (features, labels) in cache.in_order(val.batch_size(), device) {
                add_logits(&mut acc, inner.classify(features), &labels, device)?;
            }
            Ok(acc.report())
        }
        None => evaluate(&inner, val, device),
    }
}
