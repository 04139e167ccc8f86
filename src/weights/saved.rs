//! Saving and reloading (fine-tuned) models: weights, architecture and class names in one file
//! (a [`container`](super::container) of kind `model` with one section, burn's named MessagePack
//! record at full precision). Writes are atomic; torn or altered files are refused.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use super::WeightsError;
use super::container::{parse_container, read_file, write_container};
use crate::models::{Architecture, ModelSpec};

/// What a saved model carries besides its weights.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Class names, index = class id.
    pub class_names: Vec<String>,
    /// Free-form metadata (e.g. `preprocessing`, `image_size`).
    pub metadata: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct ModelHeader {
    spec: ModelSpec,
    info: ModelInfo,
}

/// The weights of `module` as bytes (burn's named MessagePack record, full precision).
pub fn record_bytes<B: Backend, M: Module<B>>(
    module: &M,
    path: &Path,
) -> Result<Vec<u8>, WeightsError> {
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    Recorder::<B>::record(&recorder, module.clone().into_record(), ()).map_err(|e| {
        WeightsError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("cannot encode weights: {e}"),
        }
    })
}

/// Loads weights written by [`record_bytes`] into `module`.
pub fn load_record_bytes<B: Backend, M: Module<B>>(
    module: M,
    bytes: Vec<u8>,
    path: &Path,
    device: &B::Device,
) -> Result<M, WeightsError> {
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    let record =
        Recorder::<B>::load(&recorder, bytes, device).map_err(|e| WeightsError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("weights do not match the stored architecture: {e}"),
        })?;
    Ok(module.load_record(record))
}

/// Saves `model` with `info` to `path`, atomically.
pub fn save_model<B: Backend, M: Architecture<B>>(
    model: &M,
    info: &ModelInfo,
    path: &Path,
) -> Result<(), WeightsError> {
    let weights = record_bytes(model, path)?;
    let header = ModelHeader {
        spec: model.spec(),
        info: info.clone(),
    };
    write_container(path, "model", &header, &[("weights", &weights)])
}

/// Loads a model saved by [`save_model`], rebuilding its architecture from the file.
pub fn load_model<B: Backend, M: Architecture<B>>(
    path: &Path,
    device: &B::Device,
) -> Result<(M, ModelInfo), WeightsError> {
    load_model_bytes(&read_file(path)?, path, device)
}

/// Loads a model saved by [`save_model`] from memory (e.g. `include_bytes!`); `label` names it in
/// errors.
pub fn load_model_bytes<B: Backend, M: Architecture<B>>(
    bytes: &[u8],
    label: &Path,
    device: &B::Device,
) -> Result<(M, ModelInfo), WeightsError> {
    let path = label;
    let (header, mut sections) = parse_container::<ModelHeader>(bytes, path, "model")?;
    let model = M::from_spec(&header.spec, device).ok_or_else(|| WeightsError::Architecture {
        path: path.to_path_buf(),
        expected: M::NAME.into(),
        found: header.spec.name().into(),
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
