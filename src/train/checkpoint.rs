//! Checkpoints: the state after an epoch (model, optimizer, history, best weights, early-stopping
//! count) in one atomically written, checksummed file, from which a phase resumes exactly.

use crate::kernels::AutodiffConvBackend;
use std::path::Path;

use burn::module::AutodiffModule;
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::config::FitConfig;
use super::fit::{Best, Progress};
use super::history::History;
use super::learner::Learner;
use crate::models::{Architecture, ImageClassifier, ModelSpec};
use crate::weights::container::{read_container, write_container};
use crate::weights::{load_record_bytes, record_bytes};

#[derive(Serialize, Deserialize)]
struct CheckpointHeader {
    spec: ModelSpec,
    config: FitConfig,
    epochs_done: usize,
    history: History,
    best: Option<(f64, usize)>,
    epochs_without_improvement: usize,
}

/// What a checkpoint holds, read without a model: whose it is and how far it got.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointSummary {
    /// The network it was written for.
    pub spec: ModelSpec,
    /// The phase's settings.
    pub config: FitConfig,
    /// Epochs of the phase done.
    pub epochs_done: usize,
    /// Their figures.
    pub history: History,
    /// Best validation accuracy so far and its epoch.
    pub best: Option<(f64, usize)>,
}

/// Reads the checkpoint at `path`, verifying every section's checksum: an error naming the file
/// when it is torn, altered or not a checkpoint.
pub fn read_checkpoint(path: &Path) -> Result<CheckpointSummary, TrainError> {
    let (header, _) = read_container::<CheckpointHeader>(path, "checkpoint")?;
    Ok(CheckpointSummary {
        spec: header.spec,
        config: header.config,
        epochs_done: header.epochs_done,
        history: header.history,
        best: header.best,
    })
}

/// Writes `progress` to `path` atomically.
pub(crate) fn write<B, M>(
    path: &Path,
    progress: &Progress<B, M>,
    config: &FitConfig,
) -> Result<(), TrainError>
where
    B: AutodiffConvBackend,
    M: Architecture<B> + AutodiffModule<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
{
    let header = CheckpointHeader {
        spec: progress.model.spec(),
        config: config.clone(),
        epochs_done: progress.epochs_done,
        history: progress.history.clone(),
        best: progress.best.as_ref().map(|b| (b.accuracy, b.epoch)),
        epochs_without_improvement: progress.epochs_without_improvement,
    };
    let model = record_bytes(&progress.model, path)?;
    let optimizer = progress.learner.state_bytes()?;
    let best = match &progress.best {
        Some(best) => record_bytes(&best.model, path)?,
        None => Vec::new(),
    };
    let mut sections: Vec<(&str, &[u8])> = vec![("model", &model), ("optimizer", &optimizer)];
    if progress.best.is_some() {
        sections.push(("best", &best));
    }
    write_container(path, "checkpoint", &header, &sections)?;
    Ok(())
}

/// Restores the progress saved at `path` into `progress` (which holds the phase's starting
/// model and a fresh learner), after checking that it belongs to this run.
pub(crate) fn resume<B, M>(
    path: &Path,
    progress: Progress<B, M>,
    config: &FitConfig,
    device: &B::Device,
) -> Result<Progress<B, M>, TrainError>
where
    B: AutodiffConvBackend,
    M: Architecture<B> + AutodiffModule<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
{
    let (header, mut sections) = read_container::<CheckpointHeader>(path, "checkpoint")?;
    let spec = progress.model.spec();
    if header.spec != spec || header.config.phase != config.phase {
        return Err(TrainError::Checkpoint(format!(
            "{}: checkpoint of phase '{}' for {} does not match this run (phase '{}', {}); delete it to start over",
            path.display(),
            header.config.phase,
            header.spec.name(),
            config.phase,
            spec.name()
        )));
    }
    let mut take = |name: &str| {
        sections.remove(name).ok_or_else(|| {
            TrainError::Checkpoint(format!("{}: no '{name}' section", path.display()))
        })
    };
    let Progress { model, learner, .. } = progress;
    // Trainability is not part of a record: the loaded model keeps the phase's setting.
    let model = load_record_bytes(model, take("model")?, path, device)?;
    let learner: Learner<B, M> = learner.with_state_bytes(take("optimizer")?, device)?;
    let best = match header.best {
        Some((accuracy, epoch)) => Some(Best {
            accuracy,
            epoch,
            model: load_record_bytes(model.clone(), take("best")?, path, device)?,
        }),
        None => None,
    };
    Ok(Progress {
        model,
        learner,
        history: header.history,
        best,
        epochs_done: header.epochs_done,
        epochs_without_improvement: header.epochs_without_improvement,
    })
}
