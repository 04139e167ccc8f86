//! ImageNet (or any) weights from an ONNX file into the native modules.
//!
//! The graph is read by [`onnx`](super::onnx) (onnx-ir, burn-import's ONNX stack).
//! Weights are then mapped onto the model:
//! - **by name** when the file's initializers carry torchvision's names (every conv weight is
//!   found under the model's key), which is robust to any node order;
//! - **by structure** otherwise: ONNX convolutions in execution order are matched to the model's
//!   convolutions in execution order, within a small window and by shape, so exporters that emit a
//!   block's shortcut before its main path still load.
//!
//! **BatchNorm folded into the convolutions** (torch's default exporter, TensorFlow conversions):
//! the conv takes the folded kernel and the BatchNorm after it becomes an exact identity plus
//! shift (γ = 1, β = folded bias, mean 0, var = 1 − ε), so eval outputs match. Such a BatchNorm
//! has no real statistics: fine-tuning it in train mode would normalise with batch statistics
//! the network was never trained with. Keep those layers frozen (the default of the fine-tuning
//! API) or unfreeze them knowing this; [`ImportReport::batch_norm_folded`] says which case applies.

use std::path::Path;

use burn::tensor::backend::Backend;

use super::WeightsError;
use super::onnx::{
    AutoPad, BatchNormLayer, ConvLayer, LayerKind, OnnxModel, OnnxTensor, read_onnx,
};
use super::state::{HostTensor, StateMap, load_state};
use crate::models::layers::Padding;
use crate::models::{
    Architecture, MobileNetV2, MobileNetV2Config, ModelSpec, ResNet, ResNetConfig,
};

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
    /// The architecture and configuration detected from the graph.
    pub spec: ModelSpec,
    /// Whether BatchNorm was folded into the convolutions in the file.
    pub batch_norm_folded: bool,
    /// How tensors were matched.
    pub mapped_by: MappedBy,
    /// The file's `preprocessing` metadata, when present (e.g. TF-style `[-1, 1]` scaling).
    pub preprocessing: Option<String>,
}

impl ImportReport {
    /// Whether the file asks for TensorFlow-style `[-1, 1]` input scaling rather than ImageNet
    /// mean/std (read from its metadata; TF-SAME padding implies it when there is none).
    pub fn tf_preprocessing(&self) -> bool {
        match &self.preprocessing {
            Some(p) => p.contains("127.5") || p.contains("[-1, 1]"),
            None => matches!(&self.spec, ModelSpec::MobileNetV2(c) if c.padding == Padding::TfSame),
        }
    }
}

fn arch_error(path: &Path, expected: &str, found: impl Into<String>) -> WeightsError {
    WeightsError::Architecture {
        path: path.to_path_buf(),
        expected: expected.into(),
        found: found.into(),
    }
}

/// The convolutions of the backbone (classifier excluded) each with the BatchNorm that reads its
/// output, in execution order.
fn backbone_convs(onnx: &OnnxModel) -> Vec<(&ConvLayer, Option<&BatchNormLayer>)> {
    // A 1×1 conv classifier (some zoos) is the head, not part of the backbone.
    let conv_head = match onnx.classifier() {
        Some(l) if matches!(l.kind, LayerKind::Conv(_)) => Some(l.node_name.as_str()),
        _ => None,
    };
    let mut out = Vec::new();
    for (i, layer) in onnx.layers.iter().enumerate() {
        let LayerKind::Conv(conv) = &layer.kind else {
            continue;
        };
        if conv_head == Some(layer.node_name.as_str()) {
            continue;
        }
        let bn = onnx.layers[i + 1..]
            .iter()
            .find_map(|next| match &next.kind {
                LayerKind::BatchNorm(bn) if next.inputs.first() == layer.outputs.first() => {
                    Some(bn)
                }
                _ => None,
            });
        out.push((conv, bn));
    }
    out
}

fn detect_padding(
    path: &Path,
    convs: &[(&ConvLayer, Option<&BatchNormLayer>)],
) -> Result<Padding, WeightsError> {
    // The first 3×3 conv (the stem of MobileNetV2, a block conv of ResNet): its pads tell the
    // convention.
    let Some((conv, _)) = convs.iter().find(|(c, _)| c.kernel == [3, 3]) else {
        return Ok(Padding::Symmetric);
    };
    match conv.auto_pad {
        AutoPad::SameUpper => Ok(Padding::TfSame),
        AutoPad::SameLower | AutoPad::Valid => Err(arch_error(
            path,
            "symmetric or TF-SAME padding",
            format!("auto_pad {:?}", conv.auto_pad),
        )),
        AutoPad::NotSet => match conv.pads {
            [1, 1, 1, 1] => Ok(Padding::Symmetric),
            [0, 0, 1, 1] if conv.strides == [2, 2] => Ok(Padding::TfSame),
            pads => Err(arch_error(
                path,
                "symmetric or TF-SAME 3×3 padding",
                format!("pads {pads:?}"),
            )),
        },
    }
}

/// Detects the architecture, its configuration and padding from the graph.
pub fn detect_spec(onnx: &OnnxModel) -> Result<ModelSpec, WeightsError> {
    let path = onnx.path.as_path();
    let num_classes = onnx.num_classes().ok_or_else(|| {
        arch_error(
            path,
            "a classifier (Gemm / MatMul / 1×1 Conv) at the end",
            "no classifier",
        )
    })?;
    let convs = backbone_convs(onnx);
    let depthwise = convs.iter().filter(|(c, _)| c.is_depthwise()).count();
    let first = convs
        .first()
        .map(|(c, _)| *c)
        .ok_or_else(|| arch_error(path, "a CNN", "no Conv"))?;
    if depthwise > 0 {
        if convs.len() != 52 || depthwise != 17 {
            return Err(arch_error(
                path,
                "MobileNetV2 (52 convolutions, 17 depthwise)",
                format!("{} convolutions, {depthwise} depthwise", convs.len()),
            ));
        }
        // The width is the one whose 52 output channel counts all match the file's: the
        // standard widths first, then any multiple of 0.01 up to 4 (rounding to multiples of 8
        // makes several widths give the same network; the first is as good as any).
        let found: Vec<usize> = convs.iter().map(|(c, _)| c.out_channels()).collect();
        let standard = [1.0, 0.35, 0.5, 0.75, 1.3, 1.4, 2.0];
        let fine = (1..=400).map(|k| f64::from(k) / 100.0);
        let width_mult = standard
            .into_iter()
            .chain(fine)
            .find(|&w| {
                MobileNetV2Config::new()
                    .with_width_mult(w)
                    .conv_out_channels()
                    == found
            })
            .ok_or_else(|| {
                arch_error(
                    path,
                    "MobileNetV2 of some width (channel counts of a torchvision MobileNetV2)",
                    format!(
                        "stem of {} channels, last convolution of {}",
                        found[0],
                        found[found.len() - 1]
                    ),
                )
            })?;
        return Ok(ModelSpec::MobileNetV2(
            MobileNetV2Config::new()
                .with_num_classes(num_classes)
                .with_width_mult(width_mult)
                .with_padding(detect_padding(path, &convs)?),
        ));
    }
    if first.kernel == [7, 7] && onnx.count("MaxPool") >= 1 {
        let layers = match convs.len() {
            20 => [2, 2, 2, 2],
            36 => [3, 4, 6, 3],
            n => {
                return Err(arch_error(
                    path,
                    "ResNet18 (20 convolutions) or ResNet34 (36)",
                    format!("a ResNet-like graph with {n} convolutions"),
                ));
            }
        };
        return Ok(ModelSpec::ResNet(
            ResNetConfig::new(layers).with_num_classes(num_classes),
        ));
    }
    Err(arch_error(
        path,
        "MobileNetV2 or ResNet18/34",
        format!("{} convolutions, first {:?}", convs.len(), first.kernel),
    ))
}

fn host(t: &OnnxTensor) -> HostTensor {
    HostTensor::new(t.shape.clone(), t.data.clone())
}

/// The BatchNorm state for a conv: the real one when the file keeps it, else identity + shift.
fn batch_norm_state(
    state: &mut StateMap,
    bn_path: &str,
    conv: &ConvLayer,
    bn: Option<&BatchNormLayer>,
    model_eps: f32,
) {
    let c = conv.out_channels();
    let conv_bias = conv
        .bias
        .as_ref()
        .map(|b| b.data.clone())
        .unwrap_or_else(|| vec![0.0; c]);
    let (weight, bias, mean, var) = match bn {
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

/// Builds the full state map of `model` from the file, by name or by structure.
fn build_state<B: Backend, M: Architecture<B> + ConvPairs<B>>(
    onnx: &OnnxModel,
    model: &M,
) -> Result<(StateMap, MappedBy, bool), WeightsError> {
    let path = onnx.path.as_path();
    let convs = backbone_convs(onnx);
    let pairs = model.pairs();
    if convs.len() != pairs.len() {
        return Err(arch_error(
            path,
            &format!("{} convolutions", pairs.len()),
            format!("{} convolutions", convs.len()),
        ));
    }
    let folded = convs.iter().all(|(_, bn)| bn.is_none());
    let by_name = pairs.iter().all(|(conv_path, ..)| {
        convs
            .iter()
            .any(|(c, _)| c.weight.name == format!("{conv_path}.weight"))
    });
    let mut used = vec![false; convs.len()];
    let mut state = StateMap::new();
    for (i, (conv_path, shape, bn_path, eps)) in pairs.iter().enumerate() {
        let key = format!("{conv_path}.weight");
        let found = if by_name {
            convs.iter().position(|(c, _)| c.weight.name == key)
        } else {
            // Next unused conv of the right shape within a window of 3 (a block's shortcut may
            // come before or after its main path).
            (i.saturating_sub(2)..(i + 3).min(convs.len()))
                .find(|&j| !used[j] && convs[j].0.weight.shape == *shape)
        };
        let Some(j) = found else {
            return Err(WeightsError::Mismatch {
                path: path.to_path_buf(),
                problems: vec![super::StateMismatch::Missing(key)],
            });
        };
        used[j] = true;
        let (conv, bn) = convs[j];
        state.insert(key, host(&conv.weight));
        batch_norm_state(&mut state, bn_path, conv, bn, *eps);
    }
    let head = model.head_path();
    match onnx.classifier().map(|l| &l.kind) {
        Some(LayerKind::Linear(linear)) => {
            state.insert(format!("{head}.weight"), host(&linear.weight));
            let bias = linear
                .bias
                .as_ref()
                .map(host)
                .unwrap_or_else(|| HostTensor::full(vec![linear.out_features], 0.0));
            state.insert(format!("{head}.bias"), bias);
        }
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
    Ok((
        state,
        if by_name {
            MappedBy::Name
        } else {
            MappedBy::Structure
        },
        folded,
    ))
}

/// Conv/BatchNorm pairs of a model as `(conv path, conv weight shape, bn path, bn epsilon)`.
pub trait ConvPairs<B: Backend> {
    /// The pairs in execution order.
    fn pairs(&self) -> Vec<(String, Vec<usize>, String, f32)>;
}

macro_rules! impl_conv_pairs {
    ($model:ident) => {
        impl<B: Backend> ConvPairs<B> for $model<B> {
            fn pairs(&self) -> Vec<(String, Vec<usize>, String, f32)> {
                self.conv_bn_pairs()
                    .into_iter()
                    .map(|p| {
                        (
                            p.conv_path,
                            p.conv.weight.shape().to_vec(),
                            p.bn_path,
                            p.bn.epsilon as f32,
                        )
                    })
                    .collect()
            }
        }
    };
}
impl_conv_pairs!(MobileNetV2);
impl_conv_pairs!(ResNet);

static FOLDED_NOTE: std::sync::Once = std::sync::Once::new();

/// Loads the weights of an already parsed ONNX model into `model` (whose configuration must
/// match the file: same architecture, width, classes).
pub fn load_onnx_into<B: Backend, M: Architecture<B> + ConvPairs<B>>(
    onnx: &OnnxModel,
    model: M,
) -> Result<(M, ImportReport), WeightsError> {
    let spec = detect_spec(onnx)?;
    if spec.family() != M::NAME {
        return Err(arch_error(&onnx.path, M::NAME, spec.name()));
    }
    let (state, mapped_by, folded) = build_state(onnx, &model)?;
    if folded {
        FOLDED_NOTE.call_once(|| {
            log::warn!(
                "{}: BatchNorm is folded into the convolutions; the model's BatchNorms are identity + shift \
                 and should stay frozen when fine-tuning",
                onnx.path.display()
            )
        });
    }
    let model = load_state(model, &state).map_err(|problems| WeightsError::Mismatch {
        path: onnx.path.clone(),
        problems,
    })?;
    let report = ImportReport {
        spec,
        batch_norm_folded: folded,
        mapped_by,
        preprocessing: onnx.metadata.get("preprocessing").cloned(),
    };
    Ok((model, report))
}

/// Reads `path` and builds the model of type `M` it describes, loaded with its weights (the
/// generic form of [`MobileNetV2::from_onnx`] and [`ResNet::from_onnx`]).
pub fn load_onnx_model<B: Backend, M: Architecture<B> + ConvPairs<B>>(
    path: &Path,
    device: &B::Device,
) -> Result<(M, ImportReport), WeightsError> {
    let onnx = read_onnx(path)?;
    let spec = detect_spec(&onnx)?;
    let model =
        M::from_spec(&spec, device).ok_or_else(|| arch_error(path, M::NAME, spec.name()))?;
    load_onnx_into(&onnx, model)
}

impl<B: Backend> MobileNetV2<B> {
    /// Builds a MobileNetV2 configured from the ONNX file at `path` (width, classes, padding)
    /// and loads its weights.
    pub fn from_onnx(
        path: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<(Self, ImportReport), WeightsError> {
        load_onnx_model(path.as_ref(), device)
    }
}

impl<B: Backend> ResNet<B> {
    /// Builds a ResNet18/34 configured from the ONNX file at `path` and loads its weights.
    pub fn from_onnx(
        path: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<(Self, ImportReport), WeightsError> {
        load_onnx_model(path.as_ref(), device)
    }
}
