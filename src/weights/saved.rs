//! Saving and reloading (fine-tuned) models: weights, architecture, class names and
//! preprocessing in one file (a [`container`](super::container) of kind `model` with one
//! section, burn's named MessagePack record at full precision). Writes are atomic; torn or
//! altered files are refused.

use crate::kernels::ConvBackend;
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::WeightsError;
use super::container::{parse_container, read_file, write_container};
use crate::data::Preprocessing;
use crate::models::{Architecture, ArchitectureConfig, ModelSpec};

/// What a saved model carries besides its weights.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Class names, index = class id.
    pub class_names: Vec<String>,
    /// How images must be prepared for the model (normalisation, size, resizing), so that a
    /// reloaded model predicts on what it was trained on.
    pub preprocessing: Preprocessing,
    /// Free-form metadata (e.g. the recipe that trained it).
    pub metadata: BTreeMap<String, String>,
}

impl ModelInfo {
    /// Class names and preprocessing, no metadata.
    pub fn new(class_names: Vec<String>, preprocessing: Preprocessing) -> Self {
        Self {
            class_names,
            preprocessing,
            metadata: BTreeMap::new(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ModelHeader {
    spec: ModelSpec,
    info: ModelInfo,
}

/// The weights of `model` as bytes, an error naming `path` when they cannot be encoded.
pub(crate) fn record_bytes<B: ConvBackend, M: Architecture<B>>(
    model: &M,
    path: &Path,
) -> Result<Vec<u8>, WeightsError> {
    model.to_record_bytes().map_err(|e| WeightsError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("cannot encode weights: {e}"),
    })
}

/// Loads weights written by [`record_bytes`] into `model`, an error naming `path`.
pub(crate) fn load_record_bytes<B: ConvBackend, M: Architecture<B>>(
    model: M,
    bytes: Vec<u8>,
    path: &Path,
    device: &B::Device,
) -> Result<M, WeightsError> {
    model
        .load_record_bytes(bytes, device)
        .map_err(|e| WeightsError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("weights do not match the stored architecture: {e}"),
        })
}

/// Saves `model` with `info` to `path`, atomically.
///
/// # Errors
/// [`WeightsError::Unsavable`] for a model whose BatchNorms were folded into its convolutions
/// (`fuse_for_inference`: the record of a fused convolution cannot be loaded back into the
/// architecture's bias-free one; save the model before folding), [`WeightsError::Unsavable`]
/// for preprocessing that a loader would refuse, I/O errors naming `path`.
pub fn save_model<B: ConvBackend, M: Architecture<B>>(
    model: &M,
    info: &ModelInfo,
    path: &Path,
) -> Result<(), WeightsError> {
    let unsavable = |reason: String| WeightsError::Unsavable {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(pair) = model.conv_bn_pairs().iter().find(|p| p.folded) {
        return Err(unsavable(format!(
            "its BatchNorms are folded into its convolutions (`{}` into `{}`, by \
             fuse_for_inference); save the model before folding it",
            pair.bn_path, pair.conv_path
        )));
    }
    info.preprocessing.check().map_err(unsavable)?;
    let weights = record_bytes(model, path)?;
    let header = ModelHeader {
        spec: model.spec(),
        info: info.clone(),
    };
    write_container(path, "model", &header, &[("weights", &weights)])
}

/// Loads a model saved by [`save_model`], rebuilding its architecture from the file (`AnyModel`
/// for whatever the file holds).
pub fn load_model<B: ConvBackend, M: Architecture<B>>(
    path: &Path,
    device: &B::Device,
) -> Result<(M, ModelInfo), WeightsError> {
    load_model_bytes(&read_file(path)?, path, device)
}

/// Loads a model saved by [`save_model`] from memory (e.g. `include_bytes!`); `label` names it in
/// errors.
pub fn load_model_bytes<B: ConvBackend, M: Architecture<B>>(
    bytes: &[u8],
    label: &Path,
    device: &B::Device,
) -> Result<(M, ModelInfo), WeightsError> {
    let path = label;
    let (header, mut sections) = parse_container::<ModelHeader>(bytes, path, "model")?;
    header
        .info
        .preprocessing
        .check()
        .map_err(|reason| WeightsError::Corrupt {
            path: path.to_path_buf(),
            reason,
        })?;
    // The header is not covered by the sections' checksums: a damaged value (a dropout of 1.2)
    // would reach burn's layers, which assert on it.
    header
        .spec
        .check()
        .map_err(|reason| WeightsError::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "its {} configuration is invalid: {reason}",
                header.spec.name()
            ),
        })?;
    let model = M::from_spec(&header.spec, device).ok_or_else(|| WeightsError::Architecture {
        path: path.to_path_buf(),
        expected: <M::Config as ArchitectureConfig>::FAMILY.into(),
        found: header.spec.name(),
    })?;
    let weights = sections
        .remove("weights")
        .ok_or_else(|| WeightsError::Corrupt {
            path: path.to_path_buf(),
            reason: "no weights section".into(),
        })?;
    Ok((
        load_record_bytes(model, weights, path, device)?,
        header.info,
    ))
}
