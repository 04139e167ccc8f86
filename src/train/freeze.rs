//! Choosing what trains: feature extraction, fine-tuning of the last blocks, full training.
//!
//! A frozen parameter stops requiring gradients, so autodiff never computes its gradient and the
//! optimizer never touches it; a BatchNorm whose affine parameters are frozen also keeps using
//! (and never updates) its running statistics, as `model.eval()` on frozen layers does in
//! PyTorch recipes. Trainable BatchNorms normalise with batch statistics while training.

use crate::kernels::ConvBackend;
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use super::TrainError;
use crate::models::{ImageClassifier, state_dict};

/// Which parameters the optimizer updates. The classifier (the head, and the hidden linear
/// layers before it where a network has some: [`ImageClassifier::classifier_paths`]) always
/// trains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trainable {
    /// Feature extraction: the whole backbone is frozen, only the head trains.
    HeadOnly,
    /// Fine-tuning: the last `n` backbone blocks (see [`ImageClassifier::block_paths`]) and the
    /// head train.
    LastBlocks(usize),
    /// Fine-tuning from a named block on (inclusive), e.g. `features.14` or `layer4`.
    FromBlock(String),
    /// Exactly the parameters under these path prefixes (e.g. `features.18`, `classifier`).
    Prefixes(Vec<String>),
    /// Everything trains.
    All,
}

impl Trainable {
    /// The path prefixes that train for `model` (without trailing dots).
    pub fn prefixes<B: ConvBackend, M: ImageClassifier<B>>(
        &self,
        model: &M,
    ) -> Result<Vec<String>, TrainError> {
        let classifier = model.classifier_paths();
        let blocks = model.block_paths();
        let mut prefixes = match self {
            Trainable::HeadOnly => vec![],
            Trainable::All => return Ok(vec![String::new()]),
            Trainable::LastBlocks(n) => {
                if *n > blocks.len() {
                    return Err(TrainError::Config(format!(
                        "cannot unfreeze the last {n} blocks: the model has {}",
                        blocks.len()
                    )));
                }
                blocks[blocks.len() - n..].to_vec()
            }
            Trainable::FromBlock(name) => {
                let name = name.trim_end_matches('.');
                let start = blocks
                    .iter()
                    .position(|b| b == name || b.starts_with(&format!("{name}.")))
                    .ok_or_else(|| {
                        TrainError::Config(format!(
                            "no block named '{name}'; blocks are {}",
                            blocks.join(", ")
                        ))
                    })?;
                blocks[start..].to_vec()
            }
            Trainable::Prefixes(list) => list
                .iter()
                .map(|p| p.trim_end_matches('.').to_string())
                .collect(),
        };
        prefixes.extend(classifier.into_iter().map(String::from));
        prefixes.dedup();
        Ok(prefixes)
    }
}

/// Whether `key` lies under one of `prefixes` (an empty prefix matches everything).
pub fn under_prefix(key: &str, prefixes: &[String]) -> bool {
    prefixes
        .iter()
        .any(|p| p.is_empty() || key == p || key.starts_with(&format!("{p}.")))
}

/// What happens to the BatchNorm layers inside the trainable blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BatchNormPolicy {
    /// What the weights allow: BatchNorms that hold running statistics train
    /// ([`Train`](Self::Train)), those of weights that came with BatchNorm folded into the
    /// convolutions stay frozen ([`Frozen`](Self::Frozen); see
    /// [`BatchNorm2d::has_statistics`](crate::models::layers::BatchNorm2d::has_statistics)).
    #[default]
    Auto,
    /// They train like any other layer: batch statistics while training, affine parameters
    /// updated (torchvision's `model.train()` on the unfrozen blocks). Refused for BatchNorms
    /// without statistics.
    Train,
    /// They stay frozen: running statistics, fixed affine parameters (Keras' `training=False`
    /// fine-tuning).
    Frozen,
}

struct Freezer<'a> {
    path: Vec<String>,
    prefixes: &'a [String],
    frozen_modules: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for Freezer<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let key = self.path.join(".");
        let buffer = crate::models::state_dict::is_buffer_key(&key);
        let module = key.rsplit_once('.').map_or("", |(m, _)| m);
        let frozen_module = self.frozen_modules.iter().any(|m| m == module);
        param.set_require_grad(!buffer && !frozen_module && under_prefix(&key, self.prefixes))
    }
}

/// Sets which parameters of `model` train; every other parameter is frozen. BatchNorm layers
/// in the trainable blocks train too when they hold statistics ([`BatchNormPolicy::Auto`]).
pub fn set_trainable<B: ConvBackend, M: ImageClassifier<B>>(
    model: M,
    trainable: &Trainable,
) -> Result<M, TrainError> {
    set_trainable_with(model, trainable, BatchNormPolicy::Auto)
}

/// [`set_trainable`] with a choice for the BatchNorm layers of the trainable blocks.
pub fn set_trainable_with<B: ConvBackend, M: ImageClassifier<B>>(
    model: M,
    trainable: &Trainable,
    batch_norm: BatchNormPolicy,
) -> Result<M, TrainError> {
    let prefixes = trainable.prefixes(&model)?;
    let without_statistics: Vec<String> = model
        .conv_bn_pairs()
        .into_iter()
        .filter(|pair| !pair.has_statistics)
        .map(|pair| pair.bn_path)
        .collect();
    let all_batch_norms = || {
        state_dict(&model)
            .into_iter()
            .filter_map(|e| e.key.strip_suffix(".running_mean").map(str::to_string))
            .collect()
    };
    let frozen_modules = match batch_norm {
        BatchNormPolicy::Auto => without_statistics,
        BatchNormPolicy::Frozen => all_batch_norms(),
        BatchNormPolicy::Train => {
            if let Some(path) = without_statistics
                .iter()
                .find(|path| under_prefix(&format!("{path}.weight"), &prefixes))
            {
                return Err(TrainError::BatchNorm(format!(
                    "cannot train the BatchNorm at '{path}' (nor the others of the trainable \
                     blocks): the weights came with BatchNorm folded into the convolutions, so \
                     these layers are an identity plus shift with no running statistics, and \
                     normalising by batch statistics would destroy the features the network \
                     learned; keep them frozen (BatchNormPolicy::Auto or Frozen)"
                )));
            }
            Vec::new()
        }
    };
    Ok(model.map(&mut Freezer {
        path: Vec::new(),
        prefixes: &prefixes,
        frozen_modules,
    }))
}

/// Keys of the parameters that currently train (on an autodiff backend).
pub fn trainable_keys<B: Backend, M: Module<B>>(model: &M) -> Vec<String> {
    state_dict(model)
        .into_iter()
        .filter(|e| e.trainable)
        .map(|e| e.key)
        .collect()
}
