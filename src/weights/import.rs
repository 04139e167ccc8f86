//! ImageNet (or any) weights from an ONNX file into the native modules.
//!
//! The graph is read by [`onnx`](super::onnx) (onnx-ir, burn-import's ONNX stack). Each
//! architecture then looks at its backbone ([`OnnxBackbone`]) to recognise itself
//! ([`ArchitectureConfig::recognise`]), and the weights are mapped onto the model:
//! - **by name** when the file's initializers carry torchvision's names (every conv weight is
//!   found under the model's key), which is robust to any node order;
//! - **by structure** otherwise: ONNX convolutions in execution order are matched to the model's
//!   convolutions in execution order, within a small window and by shape, so exporters that emit a
//!   block's shortcut before its main path still load.
//!
//! **BatchNorm folded into the convolutions** (torch's default exporter, TensorFlow conversions):
//! the conv takes the folded kernel and the BatchNorm after it becomes an exact identity plus
//! shift (γ = 1, β = folded bias, mean 0, var = 1 − ε), so eval outputs match. Such a BatchNorm
//! has no real statistics, and the model records it ([`BatchNorm2d::has_statistics`], kept in its
//! configuration and in saved models): `fit` keeps those layers frozen and refuses to train them.
//!
//! [`BatchNorm2d::has_statistics`]: crate::models::layers::BatchNorm2d::has_statistics

use crate::kernels::ConvBackend;
use std::path::Path;

use super::WeightsError;
use super::onnx::{
    AutoPad, BatchNormLayer, ConvLayer, LayerKind, LinearLayer, OnnxModel, OnnxTensor, read_onnx,
};
use super::onnx_metadata;
use super::state::{HostTensor, StateMap, load_state};
use crate::data::Preprocessing;
use crate::models::layers::Padding;
use crate::models::{Architecture, ArchitectureConfig, ImageClassifier, ModelSpec};

/// How the tensors of a file were matched to the model's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappedBy {
    /// Initializer names equal torchvision's state-dict keys.
    Name,
    /// Execution order and shapes (names ignored).
    Structure,
}

/// What an import found and did.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportReport {
    /// The architecture and configuration of the imported network (detected from the graph).
    pub spec: ModelSpec,
    /// Whether BatchNorm was folded into the convolutions in the file, for some or all of them
    /// (the model's BatchNorms then hold no statistics and stay frozen in `fit`).
    pub batch_norm_folded: bool,
    /// How tensors were matched.
    pub mapped_by: MappedBy,
    /// How images must be prepared for this network (from the file's `preprocessing` metadata,
    /// or TensorFlow's `[-1, 1]` scaling for TF-SAME padded graphs), at 224 pixels unless the
    /// metadata gives sizes; like torchvision's `weights.transforms()`. A file exported by this
    /// crate ([`export_onnx`](super::export_onnx)) gives back exactly the preprocessing it was
    /// exported with.
    pub preprocessing: Preprocessing,
    /// The class names of the file's `class_names` metadata (a JSON array, as
    /// [`export_onnx`](super::export_onnx) writes), when it holds one name per class; `None`
    /// otherwise (e.g. ImageNet weights, whose names are
    /// [`imagenet_classes`](crate::imagenet::imagenet_classes)).
    pub class_names: Option<Vec<String>>,
}

/// A convolution of an ONNX backbone with the BatchNorm that reads its output, if any.
#[derive(Debug, Clone, Copy)]
pub struct BackboneConv<'a> {
    /// The convolution.
    pub conv: &'a ConvLayer,
    /// The BatchNorm right after it (`None` when the exporter folded it in).
    pub bn: Option<&'a BatchNormLayer>,
}

/// The view of an ONNX graph that architectures recognise themselves by: its backbone
/// convolutions in execution order (classifier excluded) and its class count.
#[derive(Debug)]
pub struct OnnxBackbone<'a> {
    /// The whole graph.
    pub graph: &'a OnnxModel,
    /// Backbone convolutions in execution order (squeeze-and-excitation's included).
    pub convs: Vec<BackboneConv<'a>>,
    /// Linear layers before the classifier, in order (MobileNetV3's `classifier.0`).
    pub hidden_linears: Vec<&'a LinearLayer>,
    /// Outputs of the classifier.
    pub num_classes: usize,
}

impl<'a> OnnxBackbone<'a> {
    /// The backbone of `graph`; an error when it has no classifier or no convolution.
    pub fn new(graph: &'a OnnxModel) -> Result<Self, WeightsError> {
        let path = graph.path.as_path();
        let num_classes = graph.num_classes().ok_or_else(|| {
            arch_error(
                path,
                "a classifier (Gemm / MatMul / 1×1 Conv) at the end",
                "no classifier",
            )
        })?;
        // A 1×1 conv classifier (some zoos) is the head, not part of the backbone.
        let conv_head = match graph.classifier() {
            Some(l) if matches!(l.kind, LayerKind::Conv(_)) => Some(l.node_name.as_str()),
            _ => None,
        };
        let mut convs = Vec::new();
        for (i, layer) in graph.layers.iter().enumerate() {
            let LayerKind::Conv(conv) = &layer.kind else {
                continue;
            };
            if conv_head == Some(layer.node_name.as_str()) {
                continue;
            }
            let bn = graph.layers[i + 1..]
                .iter()
                .find_map(|next| match &next.kind {
                    LayerKind::BatchNorm(bn) if next.inputs.first() == layer.outputs.first() => {
                        Some(bn)
                    }
                    _ => None,
                });
            convs.push(BackboneConv { conv, bn });
        }
        if convs.is_empty() {
            return Err(arch_error(path, "a CNN", "no Conv"));
        }
        let classifier = graph.classifier().map(|l| l.node_name.as_str());
        let hidden_linears = graph
            .layers
            .iter()
            .filter(|l| Some(l.node_name.as_str()) != classifier)
            .filter_map(|l| match &l.kind {
                LayerKind::Linear(linear) => Some(linear),
                _ => None,
            })
            .collect();
        Ok(Self {
            graph,
            convs,
            hidden_linears,
            num_classes,
        })
    }

    /// Number of depthwise convolutions.
    pub fn depthwise_count(&self) -> usize {
        self.convs.iter().filter(|c| c.conv.is_depthwise()).count()
    }

    /// Output channels of every backbone convolution.
    pub fn out_channels(&self) -> Vec<usize> {
        self.convs.iter().map(|c| c.conv.out_channels()).collect()
    }

    /// Number of nodes of an operator kind in the whole graph (e.g. `MaxPool`).
    pub fn count(&self, kind: &str) -> usize {
        self.graph.count(kind)
    }

    /// The padding convention, told by the first 3×3 convolution's pads.
    pub fn padding(&self) -> Result<Padding, WeightsError> {
        let Some(first) = self.convs.iter().find(|c| c.conv.kernel == [3, 3]) else {
            return Ok(Padding::Symmetric);
        };
        let conv = first.conv;
        match conv.auto_pad {
            AutoPad::SameUpper => Ok(Padding::TfSame),
            AutoPad::SameLower | AutoPad::Valid => Err(self.unexpected(
                "symmetric or TF-SAME padding",
                format!("auto_pad {:?}", conv.auto_pad),
            )),
            AutoPad::NotSet => {
                match conv.pads {
                    [1, 1, 1, 1] => Ok(Padding::Symmetric),
                    [0, 0, 1, 1] if conv.strides == [2, 2] => Ok(Padding::TfSame),
                    pads => Err(self
                        .unexpected("symmetric or TF-SAME 3×3 padding", format!("pads {pads:?}"))),
                }
            }
        }
    }

    /// An error naming the file: `expected`, `found`.
    pub fn unexpected(&self, expected: &str, found: impl Into<String>) -> WeightsError {
        arch_error(&self.graph.path, expected, found)
    }

    /// The architecture of the graph, asked of each architecture in turn.
    pub fn recognise(&self) -> Result<ModelSpec, WeightsError> {
        ModelSpec::recognise(self).unwrap_or_else(|| {
            let first = self.convs[0].conv.kernel;
            Err(self.unexpected(
                &ModelSpec::signatures().join(" or "),
                format!(
                    "{} convolutions ({} depthwise), the first {}×{}",
                    self.convs.len(),
                    self.depthwise_count(),
                    first[0],
                    first[1]
                ),
            ))
        })
    }
}

fn arch_error(path: &Path, expected: &str, found: impl Into<String>) -> WeightsError {
    WeightsError::Architecture {
        path: path.to_path_buf(),
        expected: expected.into(),
        found: found.into(),
    }
}

/// Detects the architecture, its configuration and padding from the graph.
pub fn detect_spec(onnx: &OnnxModel) -> Result<ModelSpec, WeightsError> {
    OnnxBackbone::new(onnx)?.recognise()
}

fn host(t: &OnnxTensor) -> HostTensor {
    HostTensor::new(t.shape.clone(), t.data.clone())
}

/// The BatchNorm state for a conv: the real one when the file keeps it, else identity + shift.
fn batch_norm_state(state: &mut StateMap, bn_path: &str, found: BackboneConv<'_>, model_eps: f32) {
    let conv = found.conv;
    let c = conv.out_channels();
    let conv_bias = conv
        .bias
        .as_ref()
        .map(|b| b.data.clone())
        .unwrap_or_else(|| vec![0.0; c]);
    let (weight, bias, mean, var) = match found.bn {
        Some(bn) => {
            // BN(conv(x) + b) = BN'(conv(x)) with mean' = mean − b; the model's ε may differ
            // from the file's, so move the difference into the variance.
            let mean = bn
                .mean
                .data
                .iter()
                .zip(&conv_bias)
                .map(|(m, b)| m - b)
                .collect();
            let var = bn
                .var
                .data
                .iter()
                .map(|v| v + bn.epsilon - model_eps)
                .collect();
            (bn.scale.data.clone(), bn.bias.data.clone(), mean, var)
        }
        None => (
            vec![1.0; c],
            conv_bias,
            vec![0.0; c],
            vec![1.0 - model_eps; c],
        ),
    };
    for (name, data) in [
        ("weight", weight),
        ("bias", bias),
        ("running_mean", mean),
        ("running_var", var),
    ] {
        state.insert(format!("{bn_path}.{name}"), HostTensor::new(vec![c], data));
    }
}

/// A convolution of the model as import sees it: its path, weight shape and BatchNorm.
struct ModelConv {
    path: String,
    shape: Vec<usize>,
    /// The BatchNorm's path and ε, for a normalised convolution.
    bn: Option<(String, f64)>,
}

/// The weights of the file as the model's state map, how they were matched, and for each of the
/// model's (conv, BatchNorm) pairs whether the file kept that BatchNorm.
fn build_state<B: ConvBackend, M: ImageClassifier<B>>(
    backbone: &OnnxBackbone<'_>,
    model: &M,
) -> Result<(StateMap, MappedBy, Vec<bool>), WeightsError> {
    let path = backbone.graph.path.as_path();
    let convs = &backbone.convs;
    // Cloning a module copies tensor handles, not data.
    let mut copy = model.clone();
    let model_convs: Vec<ModelConv> = copy
        .convs_mut()
        .into_iter()
        .map(|conv| ModelConv {
            path: conv.path().to_string(),
            shape: conv.conv().weight.shape().to_vec(),
            bn: conv.into_pair().map(|pair| (pair.bn_path, pair.bn.epsilon)),
        })
        .collect();
    if convs.len() != model_convs.len() {
        return Err(arch_error(
            path,
            &format!("{} convolutions", model_convs.len()),
            format!("{} convolutions", convs.len()),
        ));
    }
    let hidden = model.hidden_linears();
    if backbone.hidden_linears.len() != hidden.len() {
        return Err(arch_error(
            path,
            &format!("{} linear layers before the classifier", hidden.len()),
            format!("{}", backbone.hidden_linears.len()),
        ));
    }
    let by_name = model_convs.iter().all(|conv| {
        convs
            .iter()
            .any(|c| c.conv.weight.name == format!("{}.weight", conv.path))
    });
    let mut used = vec![false; convs.len()];
    let mut state = StateMap::new();
    let mut kept_batch_norm = Vec::with_capacity(model_convs.len());
    for (i, conv) in model_convs.iter().enumerate() {
        let key = format!("{}.weight", conv.path);
        let found = if by_name {
            convs.iter().position(|c| c.conv.weight.name == key)
        } else {
            // Next unused conv of the right shape within a window of 3 (a block's shortcut may
            // come before or after its main path).
            (i.saturating_sub(2)..(i + 3).min(convs.len()))
                .find(|&j| !used[j] && convs[j].conv.weight.shape == conv.shape)
        };
        let Some(j) = found else {
            return Err(WeightsError::Mismatch {
                path: path.to_path_buf(),
                problems: vec![super::StateMismatch::Missing(key)],
            });
        };
        used[j] = true;
        state.insert(key, host(&convs[j].conv.weight));
        match &conv.bn {
            Some((bn_path, epsilon)) => {
                batch_norm_state(&mut state, bn_path, convs[j], *epsilon as f32);
                kept_batch_norm.push(convs[j].bn.is_some());
            }
            None => {
                // A convolution with its own bias (squeeze-and-excitation): a BatchNorm after
                // it in the file would have no place in the model.
                if convs[j].bn.is_some() {
                    return Err(arch_error(
                        path,
                        &format!("no BatchNorm after the convolution for `{}`", conv.path),
                        "a BatchNormalization",
                    ));
                }
                let out = conv.shape[0];
                let bias = convs[j]
                    .conv
                    .bias
                    .as_ref()
                    .map(host)
                    .unwrap_or_else(|| HostTensor::full(vec![out], 0.0));
                state.insert(format!("{}.bias", conv.path), bias);
            }
        }
    }
    for (layer, linear) in hidden.iter().zip(&backbone.hidden_linears) {
        insert_linear(&mut state, layer.path, linear);
    }
    let head = model.head_path();
    match backbone.graph.classifier().map(|l| &l.kind) {
        Some(LayerKind::Linear(linear)) => insert_linear(&mut state, head, linear),
        Some(LayerKind::Conv(conv)) => {
            let [out, inp] = [conv.out_channels(), conv.in_channels()];
            state.insert(
                format!("{head}.weight"),
                HostTensor::new(vec![out, inp], conv.weight.data.clone()),
            );
            let bias = conv
                .bias
                .as_ref()
                .map(|b| b.data.clone())
                .unwrap_or_else(|| vec![0.0; out]);
            state.insert(format!("{head}.bias"), HostTensor::new(vec![out], bias));
        }
        _ => return Err(arch_error(path, "a classifier", "none")),
    }
    let mapped_by = if by_name {
        MappedBy::Name
    } else {
        MappedBy::Structure
    };
    Ok((state, mapped_by, kept_batch_norm))
}

/// A linear layer of the file at `path` of the model (weight `[out, in]`, bias or zeros).
fn insert_linear(state: &mut StateMap, path: &str, linear: &LinearLayer) {
    state.insert(format!("{path}.weight"), host(&linear.weight));
    let bias = linear
        .bias
        .as_ref()
        .map(host)
        .unwrap_or_else(|| HostTensor::full(vec![linear.out_features], 0.0));
    state.insert(format!("{path}.bias"), bias);
}

/// How a graph wants its inputs prepared: its `preprocessing` metadata when present (read
/// exactly when it is in the form this crate's export writes: TF-style `[-1, 1]` scaling or
/// ImageNet mean/std, resize and crop sizes), else TF scaling for TF-SAME padded graphs (weights
/// trained in TensorFlow) and ImageNet mean/std for the rest, at 224 pixels.
fn preprocessing_of(onnx: &OnnxModel, backbone: &OnnxBackbone<'_>) -> Preprocessing {
    match onnx.metadata.get(onnx_metadata::PREPROCESSING) {
        Some(text) => onnx_metadata::parse_preprocessing(text),
        None if backbone.padding().is_ok_and(|p| p == Padding::TfSame) => Preprocessing::tf(224),
        None => Preprocessing::imagenet(224),
    }
}

/// Loads the weights of an already parsed ONNX model into `model` (whose configuration must
/// match the file: same architecture, width, classes).
pub fn load_onnx_into<B: ConvBackend, M: Architecture<B>>(
    onnx: &OnnxModel,
    model: M,
) -> Result<(M, ImportReport), WeightsError> {
    let backbone = OnnxBackbone::new(onnx)?;
    let spec = backbone.recognise()?;
    load_recognised(onnx, &backbone, spec, model)
}

/// [`load_onnx_into`] once the graph's architecture is known.
fn load_recognised<B: ConvBackend, M: Architecture<B>>(
    onnx: &OnnxModel,
    backbone: &OnnxBackbone<'_>,
    spec: ModelSpec,
    model: M,
) -> Result<(M, ImportReport), WeightsError> {
    let family = <M::Config as ArchitectureConfig>::FAMILY;
    if <M::Config as crate::models::FromSpec>::from_spec(&spec).is_none() {
        return Err(arch_error(&onnx.path, family, spec.name()));
    }
    let (state, mapped_by, kept_batch_norm) = build_state(backbone, &model)?;
    let mut model = load_state(model, &state).map_err(|problems| WeightsError::Mismatch {
        path: onnx.path.clone(),
        problems,
    })?;
    // A BatchNorm the exporter folded away is an identity plus shift: no statistics to train.
    // A file that folded only some is treated as folded throughout (the configuration records
    // one answer for the whole network, and freezing a BatchNorm that could train is safe).
    let folded = kept_batch_norm.iter().any(|kept| !kept);
    for pair in model.conv_bn_pairs_mut() {
        pair.bn.has_statistics = !folded;
    }
    let report = ImportReport {
        spec: model.spec(),
        batch_norm_folded: folded,
        mapped_by,
        preprocessing: preprocessing_of(onnx, backbone),
        class_names: onnx_metadata::class_names_of(&onnx.metadata, model.num_classes()),
    };
    Ok((model, report))
}

/// Reads `path` and builds the model of type `M` it describes (`AnyModel` for whatever the file
/// holds), loaded with its weights. Usually called as [`Architecture::from_onnx`].
pub fn load_onnx_model<B: ConvBackend, M: Architecture<B>>(
    path: &Path,
    device: &B::Device,
) -> Result<(M, ImportReport), WeightsError> {
    load_onnx_as(&read_onnx(path)?, None, device)
}

/// Builds the model of type `M` an already parsed ONNX graph describes, loaded with its
/// weights, after checking that it is the architecture `wanted` names (a preset such as
/// `resnet18` or a family such as `resnet`) when one is given. The graph is recognised once.
pub fn load_onnx_as<B: ConvBackend, M: Architecture<B>>(
    onnx: &OnnxModel,
    wanted: Option<&str>,
    device: &B::Device,
) -> Result<(M, ImportReport), WeightsError> {
    let backbone = OnnxBackbone::new(onnx)?;
    let spec = backbone.recognise()?;
    if let Some(wanted) = wanted {
        spec.expect(wanted, &onnx.path)?;
    }
    let family = <M::Config as ArchitectureConfig>::FAMILY;
    let model =
        M::from_spec(&spec, device).ok_or_else(|| arch_error(&onnx.path, family, spec.name()))?;
    load_recognised(onnx, &backbone, spec, model)
}
