//! What a model file implements to be a full citizen of the crate: a configuration that can be
//! saved, named, and recognised in an ONNX graph, and the model built from it.

use crate::kernels::ConvBackend;
use std::fmt::Debug;
use std::path::Path;

use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder, RecorderError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{FromSpec, ImageClassifier, ModelSpec};
use crate::weights::WeightsError;
use crate::weights::import::{ImportReport, OnnxBackbone, load_onnx_model};

/// The configuration of an architecture: everything needed to build the network before its
/// weights are loaded, stored in saved models and checkpoints as part of a [`ModelSpec`].
pub trait ArchitectureConfig:
    Clone
    + Debug
    + PartialEq
    + Serialize
    + DeserializeOwned
    + Into<ModelSpec>
    + FromSpec
    + Send
    + Sync
    + 'static
{
    /// The family's name in files and messages (`mobilenet_v2`, `resnet`).
    const FAMILY: &'static str;

    /// What the family looks like in a graph, for messages about files that match no
    /// architecture: `MobileNetV2 (52 convolutions, 17 of them depthwise)`.
    const SIGNATURE: &'static str;

    /// The names a user can ask for (`--model`): `mobilenet_v2`; `resnet18`, `resnet34`.
    fn presets() -> Vec<&'static str>;

    /// The configuration named `name` (one of [`presets`](Self::presets)) with 1000 classes.
    fn preset(name: &str) -> Option<Self>;

    /// The name of this configuration (a preset's name, or the family's for other settings).
    fn name(&self) -> String;

    /// Number of classes of the head.
    fn num_classes(&self) -> usize;

    /// The block that fine-tuning unfreezes from by default: the last stage, what the
    /// recipes tune (`features.14` for MobileNetV2, `layer4` for ResNet).
    fn fine_tune_from(&self) -> &'static str;

    /// The same configuration with `num_classes` classes.
    fn with_classes(self, num_classes: usize) -> Self;

    /// Looks at an ONNX graph's backbone: `None` when it is not this architecture, else its
    /// configuration, or an error saying why the graph is this family but cannot be loaded.
    fn recognise(onnx: &OnnxBackbone<'_>) -> Option<Result<Self, WeightsError>>;

    /// Checks the values a network can be built from (a saved file's header is read before any
    /// module exists, and burn's layers assert on some values, e.g. a dropout above 1): `Err`
    /// says which field is wrong and why.
    fn check(&self) -> Result<(), String>;
}

/// Largest width or depth multiplier a configuration may ask for: torchvision's published
/// networks use 0.35–1.4 (width) and up to 3.1 (depth, EfficientNet-B7); a file asking for more
/// is damaged, and its network would be built before its weights could disagree.
pub(crate) const MAX_MULTIPLIER: f64 = 16.0;

/// Checks a probability field (dropout, stochastic depth): finite, within `[0, 1]`.
pub(crate) fn check_probability(field: &str, p: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(format!(
            "{field} is {p}; a probability must lie within [0, 1]"
        ))
    }
}

/// Checks a width or depth multiplier: finite, above 0, at most [`MAX_MULTIPLIER`].
pub(crate) fn check_multiplier(field: &str, m: f64) -> Result<(), String> {
    if m > 0.0 && m <= MAX_MULTIPLIER {
        Ok(())
    } else {
        Err(format!(
            "{field} is {m}; a multiplier must lie within (0, {MAX_MULTIPLIER}]"
        ))
    }
}

/// Checks the number of classes: at least one.
pub(crate) fn check_classes(num_classes: usize) -> Result<(), String> {
    if num_classes == 0 {
        Err("num_classes is 0; a classifier has at least one class".into())
    } else {
        Ok(())
    }
}

/// A classifier that can describe itself by its configuration and be rebuilt from one: what
/// saving, loading, checkpoints and ONNX import need. Implemented by each model and by
/// [`AnyModel`](super::AnyModel).
pub trait Architecture<B: ConvBackend>: ImageClassifier<B> {
    /// The configuration type.
    type Config: ArchitectureConfig;

    /// The configuration this network was built with (read back from its tensors).
    fn config(&self) -> Self::Config;

    /// A freshly initialised network for `config`.
    fn from_config(config: &Self::Config, device: &B::Device) -> Self;

    /// The configuration as a [`ModelSpec`].
    fn spec(&self) -> ModelSpec {
        self.config().into()
    }

    /// A freshly initialised network for `spec`, or `None` when `spec` is another architecture.
    fn from_spec(spec: &ModelSpec, device: &B::Device) -> Option<Self> {
        Self::Config::from_spec(spec).map(|config| Self::from_config(&config, device))
    }

    /// Reads the ONNX file at `path`, builds the network it holds (an error when that is
    /// another architecture; [`AnyModel`](super::AnyModel) takes any) and loads its weights.
    /// The report says what was found, including how images must be prepared.
    fn from_onnx(
        path: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<(Self, ImportReport), WeightsError> {
        load_onnx_model(path.as_ref(), device)
    }

    /// The weights as bytes (burn's named MessagePack record at full precision).
    fn to_record_bytes(&self) -> Result<Vec<u8>, RecorderError> {
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
        Recorder::<B>::record(&recorder, self.clone().into_record(), ())
    }

    /// Loads weights written by [`to_record_bytes`](Self::to_record_bytes).
    fn load_record_bytes(self, bytes: Vec<u8>, device: &B::Device) -> Result<Self, RecorderError> {
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
        let record = Recorder::<B>::load(&recorder, bytes, device)?;
        Ok(self.load_record(record))
    }
}
