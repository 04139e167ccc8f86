//! Reading an ONNX image classifier into a typed, execution-ordered list of layers.
//!
//! This is the backend-free half of loading ImageNet weights: it turns an `.onnx` file into an
//! [`OnnxModel`] whose [`layers`](OnnxModel::layers) are the graph's operators in execution
//! order, with the weights of each weight-bearing operator decoded to `f32`:
//!
//! - `Conv` → [`LayerKind::Conv`] (weight `[out, in / group, kh, kw]`, optional bias, strides,
//!   pads as `[top, left, bottom, right]`, dilations, group, `auto_pad`);
//! - `BatchNormalization` → [`LayerKind::BatchNorm`] (scale, bias, running mean and variance,
//!   epsilon);
//! - `Gemm`, and `MatMul` with a constant right-hand side optionally followed by an `Add` of a
//!   constant bias → [`LayerKind::Linear`], with the weight normalised to `[out, in]`
//!   (`transB`, `alpha` and `beta` applied);
//! - the structural operators (`Relu`, `Clip`, `Add`, pools, `Flatten`, `Reshape`, ...) as
//!   their own kinds so that a caller can check the architecture.
//!
//! Every weight carries the name it has in the file ([`OnnxTensor::name`]): the original
//! initializer name, e.g. `features.1.conv.0.0.weight` for torchvision exports, looked up
//! through `Identity` nodes; or the output name of the `Constant` node that holds it. When the
//! names are meaningless (ONNX model zoo, converters) the layer order is the structure to map by.
//!
//! # How the file is read
//!
//! The protobuf is decoded with the `ModelProto` bindings that `onnx-ir` (burn-import's ONNX
//! stack) re-exports, and the layer list is built from it, because `onnx-ir`'s own IR renames
//! every value and node (`constant12_out1`, `conv2d3`), drops the names of lifted weights and
//! rewrites `Gemm`/`MatMul` into `Linear`. By default the model is then also run through
//! [`onnx_ir::OnnxGraphBuilder`] (its type inference and operator support checks) and the two
//! views are compared: same number of convolutions and batch norms, bit-identical convolution
//! weights. A summary of what `onnx-ir` made of the file is kept in [`OnnxModel::onnx_ir`];
//! [`ReadOptions::verify_with_onnx_ir`] turns this step off.
//!
//! # Errors
//!
//! Nothing here panics on bad input: an empty, truncated, corrupt or non-ONNX file, an unknown
//! operator, a missing or non-float weight all give an [`OnnxError`] whose message starts with
//! the file's path. As a last line of defence the whole read, `onnx-ir` included, runs under
//! [`std::panic::catch_unwind`]; a panic inside it is returned as [`OnnxError::Panicked`] (the
//! default panic hook still prints its message to stderr).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use onnx_ir::{ModelProto, TensorProto};
use protobuf::Message;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why an ONNX file could not be read into an [`OnnxModel`].
///
/// Every message starts with the path of the file (or the label given to
/// [`read_onnx_bytes`]) and says what is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnnxError {
    /// The file does not exist.
    #[error("{}: ONNX file not found", .path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("{}: cannot read ONNX file: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is empty (0 bytes).
    #[error("{}: file is empty (0 bytes), not an ONNX model", .path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The bytes are not a valid ONNX protobuf: not ONNX at all, truncated, or corrupt.
    #[error(
        "{}: not a valid ONNX file (protobuf decoding failed: {reason}); \
         is it truncated, corrupt, or not an .onnx model?",
        .path.display()
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The protobuf decoder's message.
        reason: String,
    },
    /// The protobuf decoded, but it is not a usable ONNX model (no graph, no nodes, no opset).
    #[error("{}: not an ONNX model: {reason}", .path.display())]
    NotAModel {
        /// The file.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// The graph uses an operator this reader does not know.
    #[error(
        "{}: unsupported ONNX operator `{op_type}` at {node}; \
         only the operators of CNN image classifiers (Conv, BatchNormalization, Gemm, Relu, \
         Clip, Add, pools, ...) are supported",
        .path.display()
    )]
    UnsupportedOperator {
        /// The file.
        path: PathBuf,
        /// The operator, prefixed with its domain when it is not the default one.
        op_type: String,
        /// The node (its name and index in the graph).
        node: String,
    },
    /// A known operator is used in a way this reader does not support (e.g. a 3-D `Conv`,
    /// `Gemm` with `transA = 1`, a bias of the wrong length).
    #[error("{}: unsupported {op_type} at {node}: {reason}", .path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The operator.
        op_type: String,
        /// The node (its name and index in the graph).
        node: String,
        /// What is not supported.
        reason: String,
    },
    /// A node needs a constant (weight, bias, statistics, ...) that is neither an initializer
    /// nor the output of a `Constant` node.
    #[error(
        "{}: {node} needs `{input}` as a constant weight, but the file has no initializer or \
         Constant of that name{}",
        .path.display(),
        if *.dynamic { " (it is computed at run time)" } else { "" }
    )]
    MissingInitializer {
        /// The file.
        path: PathBuf,
        /// The node (its name and index in the graph).
        node: String,
        /// The name of the missing input.
        input: String,
        /// Whether a name was found, but as a run-time value rather than a constant.
        dynamic: bool,
    },
    /// A node reads a value that nothing produces.
    #[error(
        "{}: {node} reads `{input}`, which is not a graph input, initializer or the output of \
         an earlier node",
        .path.display()
    )]
    UnknownInput {
        /// The file.
        path: PathBuf,
        /// The node (its name and index in the graph).
        node: String,
        /// The name of the unknown input.
        input: String,
    },
    /// A weight has an element type that cannot be converted to `f32`.
    #[error(
        "{}: tensor `{tensor}` has element type {dtype}; weights must be float32 \
         (float16, bfloat16 and float64 are converted)",
        .path.display()
    )]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The ONNX element type.
        dtype: String,
    },
    /// A tensor's stored data does not match its declared shape, or is stored outside the file.
    #[error("{}: tensor `{tensor}` is invalid: {reason}", .path.display())]
    BadTensor {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// `onnx-ir` (burn-import's ONNX front end) rejected the model.
    #[error("{}: onnx-ir could not import the model: {message}", .path.display())]
    OnnxIr {
        /// The file.
        path: PathBuf,
        /// `onnx-ir`'s error message.
        message: String,
    },
    /// `onnx-ir`'s view of the model disagrees with the one read from the protobuf.
    #[error("{}: onnx-ir and the protobuf disagree: {reason}", .path.display())]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// The disagreement.
        reason: String,
    },
    /// Reading panicked (a bug, caught and turned into an error).
    #[error("{}: reading the ONNX model panicked: {message}", .path.display())]
    Panicked {
        /// The file.
        path: PathBuf,
        /// The panic message.
        message: String,
    },
}

impl OnnxError {
    /// The file (or label) the error is about.
    pub fn path(&self) -> &Path {
        match self {
            OnnxError::NotFound { path }
            | OnnxError::Io { path, .. }
            | OnnxError::Empty { path }
            | OnnxError::Malformed { path, .. }
            | OnnxError::NotAModel { path, .. }
            | OnnxError::UnsupportedOperator { path, .. }
            | OnnxError::Unsupported { path, .. }
            | OnnxError::MissingInitializer { path, .. }
            | OnnxError::UnknownInput { path, .. }
            | OnnxError::UnsupportedDtype { path, .. }
            | OnnxError::BadTensor { path, .. }
            | OnnxError::OnnxIr { path, .. }
            | OnnxError::Inconsistent { path, .. }
            | OnnxError::Panicked { path, .. } => path,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Public data model
// ---------------------------------------------------------------------------------------------

/// An ONNX model read into execution-ordered layers.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxModel {
    /// The file it was read from (or the label given to [`read_onnx_bytes`]).
    pub path: PathBuf,
    /// The ONNX IR version of the file.
    pub ir_version: i64,
    /// The version of the default (`ai.onnx`) operator set.
    pub opset: i64,
    /// `producer_name` and `producer_version`, space-separated (e.g. `pytorch 2.15.0`).
    pub producer: String,
    /// Name of the (first) graph input that is not an initializer, e.g. `input`.
    pub input_name: String,
    /// Shape of that input; `None` for a dynamic or unknown dimension (e.g. the batch).
    pub input_shape: Vec<Option<usize>>,
    /// Names of the graph outputs, e.g. `["logits"]`.
    pub output_names: Vec<String>,
    /// The operators in execution (file) order. `Constant` nodes and `Identity` nodes on
    /// constants are not listed (their values appear as the weights they feed); an `Add` fused
    /// into a `MatMul` as its bias is not listed either.
    pub layers: Vec<OnnxLayer>,
    /// The model's `metadata_props` (e.g. key `preprocessing`).
    pub metadata: BTreeMap<String, String>,
    /// How many nodes of each operator the graph has, as written in the file (`Constant`
    /// included; operators outside the default domain are prefixed with it: `domain.Op`).
    pub op_counts: BTreeMap<String, usize>,
    /// What `onnx-ir` made of the model, when [`ReadOptions::verify_with_onnx_ir`] was on.
    pub onnx_ir: Option<OnnxIrSummary>,
}

/// What `onnx-ir`'s importer produced from the model (kept for diagnostics).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OnnxIrSummary {
    /// Number of nodes of each `onnx-ir` node type after its simplification passes (e.g.
    /// `Conv2d`, `BatchNormalization`, `Linear`, `Gemm`, `Constant`).
    pub node_counts: BTreeMap<String, usize>,
}

/// One operator of the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxLayer {
    /// The node's name in the file (may be empty or meaningless).
    pub node_name: String,
    /// The ONNX operator, as written in the file (`Conv`, `Gemm`, `MatMul`, ...).
    pub op_type: String,
    /// The run-time (non-constant) inputs, by value name, in the node's input order.
    pub inputs: Vec<String>,
    /// The outputs, by value name. For a `MatMul` fused with its bias `Add`, the `Add`'s output.
    pub outputs: Vec<String>,
    /// What the operator is, with its weights and attributes.
    pub kind: LayerKind,
}

/// The operator of an [`OnnxLayer`] with its weights and attributes.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerKind {
    /// 2-D convolution (`Conv`).
    Conv(ConvLayer),
    /// Batch normalisation in inference form (`BatchNormalization`).
    BatchNorm(BatchNormLayer),
    /// Fully connected layer (`Gemm`, or `MatMul` [+ `Add`]).
    Linear(LinearLayer),
    /// `Relu`.
    Relu,
    /// `Clip` (ReLU6 is `Clip(0, 6)`); `None` for a missing bound.
    Clip {
        /// Lower bound.
        min: Option<f32>,
        /// Upper bound.
        max: Option<f32>,
    },
    /// Element-wise `Add` (residual connection), or adding a constant.
    Add {
        /// The constant operand, when one of the two inputs is a constant.
        constant: Option<OnnxTensor>,
    },
    /// Element-wise `Sub`, possibly of a constant (input normalisation).
    Sub {
        /// The constant operand, when one of the two inputs is a constant.
        constant: Option<OnnxTensor>,
    },
    /// Element-wise `Mul`, possibly by a constant.
    Mul {
        /// The constant operand, when one of the two inputs is a constant.
        constant: Option<OnnxTensor>,
    },
    /// Element-wise `Div`, possibly by a constant.
    Div {
        /// The constant operand, when one of the two inputs is a constant.
        constant: Option<OnnxTensor>,
    },
    /// 2-D `MaxPool`.
    MaxPool(PoolLayer),
    /// 2-D `AveragePool`.
    AveragePool(PoolLayer),
    /// `GlobalAveragePool`.
    GlobalAveragePool,
    /// `ReduceMean` (a global average pool when the axes are `[2, 3]`).
    ReduceMean {
        /// Reduced axes; `None` when not given (all axes).
        axes: Option<Vec<i64>>,
        /// Whether reduced axes are kept with size 1.
        keepdims: bool,
    },
    /// `Flatten`.
    Flatten {
        /// The axis: dimensions before it form the first output dimension.
        axis: i64,
    },
    /// `Reshape`.
    Reshape {
        /// The target shape, when it is a constant.
        shape: Option<Vec<i64>>,
    },
    /// `Squeeze`.
    Squeeze {
        /// Squeezed axes, when given as a constant or attribute.
        axes: Option<Vec<i64>>,
    },
    /// `Transpose`.
    Transpose {
        /// The permutation (empty: reverse the axes).
        perm: Vec<i64>,
    },
    /// `Pad` (explicit padding before a convolution, from some converters).
    Pad {
        /// Pads in ONNX order `[x1_begin, x2_begin, ..., x1_end, x2_end, ...]`, when constant.
        pads: Option<Vec<i64>>,
        /// `constant`, `reflect`, `edge` or `wrap`.
        mode: String,
    },
    /// `Concat` of run-time values.
    Concat {
        /// The concatenation axis.
        axis: i64,
    },
    /// `Identity` on a run-time value.
    Identity,
    /// `Dropout` (an identity at inference).
    Dropout {
        /// The drop ratio, when given.
        ratio: Option<f32>,
    },
    /// `Softmax`.
    Softmax {
        /// The axis (opset default applied).
        axis: i64,
    },
    /// Shape arithmetic that some exporters emit around `Reshape` (`Shape`, `Gather`,
    /// `Unsqueeze`, `Cast`, `Slice`, `ConstantOfShape`).
    ShapeOp,
}

impl LayerKind {
    /// A short name of the kind: `Conv`, `BatchNorm`, `Linear`, `Relu`, `Clip`, `Add`, ...
    pub fn name(&self) -> &'static str {
        match self {
            LayerKind::Conv(_) => "Conv",
            LayerKind::BatchNorm(_) => "BatchNorm",
            LayerKind::Linear(_) => "Linear",
            LayerKind::Relu => "Relu",
            LayerKind::Clip { .. } => "Clip",
            LayerKind::Add { .. } => "Add",
            LayerKind::Sub { .. } => "Sub",
            LayerKind::Mul { .. } => "Mul",
            LayerKind::Div { .. } => "Div",
            LayerKind::MaxPool(_) => "MaxPool",
            LayerKind::AveragePool(_) => "AveragePool",
            LayerKind::GlobalAveragePool => "GlobalAveragePool",
            LayerKind::ReduceMean { .. } => "ReduceMean",
            LayerKind::Flatten { .. } => "Flatten",
            LayerKind::Reshape { .. } => "Reshape",
            LayerKind::Squeeze { .. } => "Squeeze",
            LayerKind::Transpose { .. } => "Transpose",
            LayerKind::Pad { .. } => "Pad",
            LayerKind::Concat { .. } => "Concat",
            LayerKind::Identity => "Identity",
            LayerKind::Dropout { .. } => "Dropout",
            LayerKind::Softmax { .. } => "Softmax",
            LayerKind::ShapeOp => "ShapeOp",
        }
    }

    /// Whether the kind carries learned weights (`Conv`, `BatchNorm`, `Linear`).
    pub fn has_weights(&self) -> bool {
        matches!(
            self,
            LayerKind::Conv(_) | LayerKind::BatchNorm(_) | LayerKind::Linear(_)
        )
    }
}

/// A constant tensor of the file, decoded to `f32`.
#[derive(Clone, PartialEq)]
pub struct OnnxTensor {
    /// The tensor's name in the file: the initializer's name (through `Identity` nodes), or the
    /// output name of the `Constant` node holding it.
    pub name: String,
    /// The shape (row-major).
    pub shape: Vec<usize>,
    /// The values, row-major, `shape.iter().product()` of them.
    pub data: Vec<f32>,
    /// The element type in the file (the data was converted to `f32`).
    pub source_dtype: FloatType,
}

impl fmt::Debug for OnnxTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The data is large: show its length only.
        f.debug_struct("OnnxTensor")
            .field("name", &self.name)
            .field("shape", &self.shape)
            .field("data", &format_args!("[{} x f32]", self.data.len()))
            .field("source_dtype", &self.source_dtype)
            .finish()
    }
}

impl OnnxTensor {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Floating-point element types that weights may have in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatType {
    /// `float` (float32).
    F32,
    /// `float16`.
    F16,
    /// `bfloat16`.
    BF16,
    /// `double` (float64).
    F64,
}

/// The ONNX `auto_pad` attribute of convolutions and pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AutoPad {
    /// `NOTSET` (default): the explicit `pads` apply.
    #[default]
    NotSet,
    /// `SAME_UPPER`: output = ceil(input / stride), the extra pad at the end (TensorFlow SAME).
    SameUpper,
    /// `SAME_LOWER`: output = ceil(input / stride), the extra pad at the beginning.
    SameLower,
    /// `VALID`: no padding.
    Valid,
}

/// A 2-D convolution.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvLayer {
    /// Weight, shape `[out_channels, in_channels / group, kh, kw]`.
    pub weight: OnnxTensor,
    /// Bias, shape `[out_channels]`, when present (e.g. BatchNorm folded into the conv).
    pub bias: Option<OnnxTensor>,
    /// Kernel size `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Strides `[sh, sw]`.
    pub strides: [usize; 2],
    /// Explicit padding `[top, left, bottom, right]` (ONNX `pads` order
    /// `[x1_begin, x2_begin, x1_end, x2_end]`). All zero when `auto_pad` is not `NotSet`.
    pub pads: [usize; 4],
    /// Dilations `[dh, dw]`.
    pub dilations: [usize; 2],
    /// Number of groups (`in_channels` for a depthwise convolution).
    pub group: usize,
    /// `auto_pad`; when not [`AutoPad::NotSet`] the padding depends on the input size.
    pub auto_pad: AutoPad,
}

impl ConvLayer {
    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.shape[0]
    }

    /// Input channels (`weight.shape[1] * group`).
    pub fn in_channels(&self) -> usize {
        self.weight.shape[1] * self.group
    }

    /// Whether every group has one input channel and `group > 1` (a depthwise convolution).
    pub fn is_depthwise(&self) -> bool {
        self.group > 1 && self.weight.shape[1] == 1
    }

    /// Whether the explicit padding is the same on both sides of each axis.
    pub fn has_symmetric_pads(&self) -> bool {
        self.pads[0] == self.pads[2] && self.pads[1] == self.pads[3]
    }
}

/// Batch normalisation (inference form): `y = scale * (x - mean) / sqrt(var + epsilon) + bias`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormLayer {
    /// Scale (gamma), `[channels]`.
    pub scale: OnnxTensor,
    /// Bias (beta), `[channels]`.
    pub bias: OnnxTensor,
    /// Running mean, `[channels]`.
    pub mean: OnnxTensor,
    /// Running variance, `[channels]`.
    pub var: OnnxTensor,
    /// Epsilon (default 1e-5).
    pub epsilon: f32,
    /// Momentum as stored in the file (default 0.9; ONNX and PyTorch conventions differ).
    pub momentum: f32,
}

impl BatchNormLayer {
    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.scale.len()
    }
}

/// A fully connected layer `y = x · weightᵀ + bias`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearLayer {
    /// Weight, normalised to `[out_features, in_features]`: transposed when the file stores it
    /// as `[in, out]` (`Gemm` with `transB = 0`, `MatMul`), and multiplied by `Gemm`'s `alpha`.
    /// Its name is the file's tensor name even when the data was transposed or scaled.
    pub weight: OnnxTensor,
    /// Bias, `[out_features]` (broadcast and multiplied by `Gemm`'s `beta`), when present.
    pub bias: Option<OnnxTensor>,
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
    /// Where it comes from.
    pub source: LinearSource,
}

/// The ONNX operator(s) a [`LinearLayer`] was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinearSource {
    /// `Gemm`.
    Gemm,
    /// `MatMul` with a constant weight, without a bias.
    MatMul,
    /// `MatMul` followed by an `Add` of a constant bias (the `Add` is fused in).
    MatMulAdd,
}

/// A 2-D pooling operator.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolLayer {
    /// Kernel size `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Strides `[sh, sw]` (default 1).
    pub strides: [usize; 2],
    /// Explicit padding `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// Dilations `[dh, dw]` (default 1).
    pub dilations: [usize; 2],
    /// Whether output sizes are rounded up.
    pub ceil_mode: bool,
    /// `AveragePool`'s `count_include_pad` (false for `MaxPool`).
    pub count_include_pad: bool,
    /// `auto_pad`.
    pub auto_pad: AutoPad,
}

impl OnnxModel {
    /// The layers that carry weights (`Conv`, `BatchNorm`, `Linear`), in order.
    pub fn weighted_layers(&self) -> impl Iterator<Item = &OnnxLayer> {
        self.layers.iter().filter(|l| l.kind.has_weights())
    }

    /// The convolutions, in order.
    pub fn convs(&self) -> impl Iterator<Item = &ConvLayer> {
        self.layers.iter().filter_map(|l| match &l.kind {
            LayerKind::Conv(c) => Some(c),
            _ => None,
        })
    }

    /// The batch normalisations, in order.
    pub fn batch_norms(&self) -> impl Iterator<Item = &BatchNormLayer> {
        self.layers.iter().filter_map(|l| match &l.kind {
            LayerKind::BatchNorm(b) => Some(b),
            _ => None,
        })
    }

    /// The fully connected layers, in order.
    pub fn linears(&self) -> impl Iterator<Item = &LinearLayer> {
        self.layers.iter().filter_map(|l| match &l.kind {
            LayerKind::Linear(b) => Some(b),
            _ => None,
        })
    }

    /// How many layers of the given kind name ([`LayerKind::name`]) the model has.
    pub fn count(&self, kind_name: &str) -> usize {
        self.layers
            .iter()
            .filter(|l| l.kind.name() == kind_name)
            .count()
    }

    /// The classifier: the last weighted layer when it is a `Linear` or a 1×1 `Conv` (some
    /// zoos end with a 1×1 convolution instead of a fully connected layer).
    pub fn classifier(&self) -> Option<&OnnxLayer> {
        let last = self.weighted_layers().last()?;
        match &last.kind {
            LayerKind::Linear(_) => Some(last),
            LayerKind::Conv(c) if c.kernel == [1, 1] => Some(last),
            _ => None,
        }
    }

    /// The number of classes: output features of the [`classifier`](Self::classifier).
    pub fn num_classes(&self) -> Option<usize> {
        match &self.classifier()?.kind {
            LayerKind::Linear(l) => Some(l.out_features),
            LayerKind::Conv(c) => Some(c.out_channels()),
            _ => None,
        }
    }

    /// The names of all weight tensors, in layer order.
    pub fn weight_names(&self) -> Vec<&str> {
        let mut names = Vec::new();
        for layer in &self.layers {
            match &layer.kind {
                LayerKind::Conv(c) => {
                    names.push(c.weight.name.as_str());
                    names.extend(c.bias.as_ref().map(|b| b.name.as_str()));
                }
                LayerKind::BatchNorm(b) => {
                    for t in [&b.scale, &b.bias, &b.mean, &b.var] {
                        names.push(t.name.as_str());
                    }
                }
                LayerKind::Linear(l) => {
                    names.push(l.weight.name.as_str());
                    names.extend(l.bias.as_ref().map(|b| b.name.as_str()));
                }
                _ => {}
            }
        }
        names
    }
}

/// Options of [`read_onnx_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOptions {
    /// Also import the model with `onnx-ir` (burn-import's front end: operator support, type
    /// inference) and check that it sees the same convolutions and batch norms with the same
    /// weights. Default `true`; turning it off halves the work.
    pub verify_with_onnx_ir: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            verify_with_onnx_ir: true,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------

/// Reads an ONNX file into an [`OnnxModel`] with the default [`ReadOptions`].
///
/// # Errors
///
/// See [`OnnxError`]; every message starts with `path`.
pub fn read_onnx(path: &Path) -> Result<OnnxModel, OnnxError> {
    read_onnx_with(path, &ReadOptions::default())
}

/// Reads an ONNX file into an [`OnnxModel`].
///
/// # Errors
///
/// See [`OnnxError`]; every message starts with `path`.
pub fn read_onnx_with(path: &Path, options: &ReadOptions) -> Result<OnnxModel, OnnxError> {
    let bytes = std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            OnnxError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            OnnxError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    read_onnx_bytes_with(&bytes, path, options)
}

/// Reads an ONNX model held in memory; `label` stands for the file in errors and in
/// [`OnnxModel::path`].
///
/// # Errors
///
/// See [`OnnxError`]; every message starts with `label`.
pub fn read_onnx_bytes(bytes: &[u8], label: impl AsRef<Path>) -> Result<OnnxModel, OnnxError> {
    read_onnx_bytes_with(bytes, label, &ReadOptions::default())
}

/// Reads an ONNX model held in memory with the given options; `label` stands for the file.
///
/// # Errors
///
/// See [`OnnxError`]; every message starts with `label`.
pub fn read_onnx_bytes_with(
    bytes: &[u8],
    label: impl AsRef<Path>,
    options: &ReadOptions,
) -> Result<OnnxModel, OnnxError> {
    let path = label.as_ref();
    guard(path, || {
        let model = decode(bytes, path)?;
        let mut out = GraphReader::new(&model, path)?.read()?;
        if options.verify_with_onnx_ir {
            out.onnx_ir = Some(verify_with_onnx_ir(bytes, &out)?);
        }
        Ok(out)
    })
}

/// Rewrites the names of an ONNX model so that none of them means anything, keeping the graph
/// otherwise identical; returns the new protobuf bytes.
///
/// Initializers become `t0`, `t1`, ... (in file order), `Constant` node outputs `c0`, `c1`,
/// ..., every other value except the graph inputs and outputs `v0`, `v1`, ..., and nodes `n0`,
/// `n1`, ...; all references are updated. Handy to check that a loader does not depend on
/// torchvision names (the ONNX model zoo and converters produce such files).
///
/// # Errors
///
/// The errors of decoding `bytes` as a model ([`OnnxError::Empty`], [`OnnxError::Malformed`],
/// [`OnnxError::NotAModel`]); `label` stands for the file in them.
pub fn anonymize_names(bytes: &[u8], label: impl AsRef<Path>) -> Result<Vec<u8>, OnnxError> {
    let path = label.as_ref();
    guard(path, || {
        let mut model = decode(bytes, path)?;
        let graph = model.graph.mut_or_insert_default();
        let keep: HashSet<String> = graph
            .input
            .iter()
            .chain(graph.output.iter())
            .map(|v| v.name.clone())
            .filter(|n| !graph.initializer.iter().any(|t| &t.name == n))
            .collect();
        let mut rename: HashMap<String, String> = HashMap::new();
        for (i, t) in graph.initializer.iter_mut().enumerate() {
            let new = format!("t{i}");
            rename.insert(std::mem::replace(&mut t.name, new.clone()), new);
            t.doc_string.clear();
        }
        let (mut constants, mut values) = (0usize, 0usize);
        for (i, node) in graph.node.iter_mut().enumerate() {
            node.name = format!("n{i}");
            node.doc_string.clear();
            let is_constant = node.op_type == "Constant" && node.domain.is_empty();
            for output in node.output.iter_mut() {
                if output.is_empty() || keep.contains(output.as_str()) {
                    continue;
                }
                let new = if is_constant {
                    constants += 1;
                    format!("c{}", constants - 1)
                } else {
                    values += 1;
                    format!("v{}", values - 1)
                };
                rename.insert(std::mem::replace(output, new.clone()), new);
            }
        }
        for node in graph.node.iter_mut() {
            for input in node.input.iter_mut() {
                if let Some(new) = rename.get(input.as_str()) {
                    *input = new.clone();
                }
            }
        }
        for v in graph
            .input
            .iter_mut()
            .chain(graph.value_info.iter_mut())
            .chain(graph.output.iter_mut())
        {
            if let Some(new) = rename.get(v.name.as_str()) {
                v.name = new.clone();
            }
        }
        model.write_to_bytes().map_err(|e| OnnxError::Malformed {
            path: path.to_path_buf(),
            reason: format!("re-encoding failed: {e}"),
        })
    })
}

/// Runs `f`, turning a panic into [`OnnxError::Panicked`].
fn guard<T>(path: &Path, f: impl FnOnce() -> Result<T, OnnxError>) -> Result<T, OnnxError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(OnnxError::Panicked {
                path: path.to_path_buf(),
                message,
            })
        }
    }
}

/// Decodes and sanity-checks the protobuf.
fn decode(bytes: &[u8], path: &Path) -> Result<ModelProto, OnnxError> {
    if bytes.is_empty() {
        return Err(OnnxError::Empty {
            path: path.to_path_buf(),
        });
    }
    let model = ModelProto::parse_from_bytes(bytes).map_err(|e| OnnxError::Malformed {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let not_a_model = |reason: &str| OnnxError::NotAModel {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if model.ir_version <= 0 {
        return Err(not_a_model("no ONNX IR version"));
    }
    let Some(graph) = model.graph.as_ref() else {
        return Err(not_a_model("no graph"));
    };
    if graph.node.is_empty() {
        return Err(not_a_model("the graph has no nodes"));
    }
    if default_opset(&model).is_none() {
        return Err(not_a_model("no opset version for the default ONNX domain"));
    }
    check_enums(graph, path)?;
    Ok(model)
}

/// ONNX `AttributeProto.AttributeType` values: `UNDEFINED` and the types this reader's
/// operators take.
const ATTR_UNDEFINED: i32 = 0;
const ATTR_FLOAT: i32 = 1;
const ATTR_INT: i32 = 2;
const ATTR_STRING: i32 = 3;
const ATTR_TENSOR: i32 = 4;
const ATTR_INTS: i32 = 7;

/// The type the ONNX operator schemas give an attribute of this name (the same for every
/// operator that has it), for the attributes of the operators a CNN file holds.
fn expected_attr_type(name: &str) -> Option<i32> {
    Some(match name {
        "epsilon" | "momentum" | "alpha" | "beta" | "min" | "max" | "value_float" => ATTR_FLOAT,
        "axis"
        | "group"
        | "transA"
        | "transB"
        | "keepdims"
        | "ceil_mode"
        | "count_include_pad"
        | "allowzero"
        | "to"
        | "training_mode"
        | "spatial"
        | "storage_order"
        | "noop_with_empty_axes"
        | "value_int" => ATTR_INT,
        "kernel_shape" | "pads" | "strides" | "dilations" | "perm" | "output_padding"
        | "output_shape" | "value_ints" => ATTR_INTS,
        "auto_pad" | "mode" => ATTR_STRING,
        "value" => ATTR_TENSOR,
        _ => return None,
    })
}

/// Refuses what onnx-ir unwraps or asserts on and would panic over: enum fields with values
/// outside the schema or `UNDEFINED` (attribute types, tensor data locations) and attributes
/// whose type is not the one their operator schema gives; in nested graphs too.
fn check_enums(graph: &onnx_ir::GraphProto, path: &Path) -> Result<(), OnnxError> {
    let malformed = |reason: String| OnnxError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let check_tensor = |t: &TensorProto| {
        t.data_location.enum_value().map(|_| ()).map_err(|v| {
            malformed(format!(
                "tensor `{}` has an unknown data location {v}",
                t.name
            ))
        })
    };
    for t in &graph.initializer {
        check_tensor(t)?;
    }
    for (index, node) in graph.node.iter().enumerate() {
        for a in &node.attribute {
            let found = a.type_.value();
            if a.type_.enum_value().is_err() || found == ATTR_UNDEFINED {
                return Err(malformed(format!(
                    "attribute `{}` of node #{index} ({}) has an unknown type {found}",
                    a.name, node.op_type
                )));
            }
            // `axes` is an attribute (INTS) in older opsets and an input in newer ones; `value`
            // of a Constant may also be a sparse tensor; neither is checked here.
            if let Some(expected) = expected_attr_type(&a.name)
                && found != expected
                && !(a.name == "value" && found == 11)
            {
                return Err(malformed(format!(
                    "attribute `{}` of node #{index} ({}) has type {found}, the operator schema \
                     gives it type {expected}",
                    a.name, node.op_type
                )));
            }
            for t in a.t.iter().chain(&a.tensors) {
                check_tensor(t)?;
            }
            for g in a.g.iter().chain(&a.graphs) {
                check_enums(g, path)?;
            }
        }
    }
    Ok(())
}

fn default_opset(model: &ModelProto) -> Option<i64> {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
}

// ---------------------------------------------------------------------------------------------
// Protobuf walk
// ---------------------------------------------------------------------------------------------

/// An attribute, copied out of the protobuf (whose `AttributeProto` type onnx-ir keeps private).
#[derive(Debug, Default)]
struct Attr {
    f: f32,
    i: i64,
    s: String,
    t: Option<TensorProto>,
    floats: Vec<f32>,
    ints: Vec<i64>,
}

/// A node, copied out of the protobuf (whose `NodeProto` type onnx-ir keeps private).
#[derive(Debug)]
struct Node {
    index: usize,
    name: String,
    op_type: String,
    domain: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    attrs: HashMap<String, Attr>,
}

impl Node {
    /// How the node is named in errors.
    fn describe(&self) -> String {
        if self.name.is_empty() {
            format!("node #{} ({})", self.index, self.op_type)
        } else {
            format!("node `{}` (#{}, {})", self.name, self.index, self.op_type)
        }
    }

    fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.get(name)
    }

    fn int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).map_or(default, |a| a.i)
    }

    fn float(&self, name: &str, default: f32) -> f32 {
        self.attr(name).map_or(default, |a| a.f)
    }

    fn ints(&self, name: &str) -> Option<&[i64]> {
        self.attr(name).map(|a| a.ints.as_slice())
    }

    fn string(&self, name: &str) -> Option<&str> {
        self.attr(name).map(|a| a.s.as_str())
    }

    /// The input at `i`, `None` when absent or empty (an omitted optional input).
    fn input(&self, i: usize) -> Option<&str> {
        self.inputs
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// A constant value of the graph.
#[derive(Debug, Clone)]
enum ConstValue {
    /// A tensor (initializer or `Constant`'s `value`).
    Tensor(Box<TensorProto>),
    /// `value_float(s)`.
    Floats(Vec<usize>, Vec<f32>),
    /// `value_int(s)`.
    Ints(Vec<i64>),
}

/// A named constant.
#[derive(Debug, Clone)]
struct Const {
    /// The name reported for it (initializer name, or `Constant` output name).
    name: String,
    value: ConstValue,
}

struct GraphReader<'a> {
    path: &'a Path,
    model: &'a ModelProto,
    nodes: Vec<Node>,
    /// Constants by value name (initializers, `Constant` outputs, `Identity` of a constant).
    consts: HashMap<String, Const>,
    /// Run-time values seen so far (graph inputs and outputs of earlier nodes).
    dynamic: HashSet<String>,
    /// How many times each value is read (node inputs and graph outputs).
    uses: HashMap<String, usize>,
}

impl<'a> GraphReader<'a> {
    fn new(model: &'a ModelProto, path: &'a Path) -> Result<Self, OnnxError> {
        let graph = &model.graph;
        let nodes: Vec<Node> = graph
            .node
            .iter()
            .enumerate()
            .map(|(index, n)| Node {
                index,
                name: n.name.clone(),
                op_type: n.op_type.clone(),
                domain: n.domain.clone(),
                inputs: n.input.clone(),
                outputs: n.output.clone(),
                attrs: n
                    .attribute
                    .iter()
                    .map(|a| {
                        (
                            a.name.clone(),
                            Attr {
                                f: a.f,
                                i: a.i,
                                s: String::from_utf8_lossy(&a.s).into_owned(),
                                t: a.t.as_ref().cloned(),
                                floats: a.floats.clone(),
                                ints: a.ints.clone(),
                            },
                        )
                    })
                    .collect(),
            })
            .collect();
        let mut consts = HashMap::new();
        for t in &graph.initializer {
            consts.insert(
                t.name.clone(),
                Const {
                    name: t.name.clone(),
                    value: ConstValue::Tensor(Box::new(t.clone())),
                },
            );
        }
        let dynamic = graph
            .input
            .iter()
            .filter(|v| !consts.contains_key(&v.name))
            .map(|v| v.name.clone())
            .collect();
        let mut uses = HashMap::new();
        for name in nodes
            .iter()
            .flat_map(|n| n.inputs.iter())
            .chain(graph.output.iter().map(|v| &v.name))
        {
            *uses.entry(name.clone()).or_insert(0) += 1;
        }
        Ok(Self {
            path,
            model,
            nodes,
            consts,
            dynamic,
            uses,
        })
    }

    fn read(mut self) -> Result<OnnxModel, OnnxError> {
        let model = self.model;
        let graph = &model.graph;
        let mut op_counts = BTreeMap::new();
        for n in &self.nodes {
            *op_counts.entry(qualified_op(n)).or_insert(0) += 1;
        }
        let nodes = std::mem::take(&mut self.nodes);
        let mut layers: Vec<OnnxLayer> = Vec::new();
        for node in &nodes {
            if let Some(layer) = self.layer(node, &mut layers)? {
                layers.push(layer);
            }
            for output in node.outputs.iter().filter(|o| !o.is_empty()) {
                if !self.consts.contains_key(output) {
                    self.dynamic.insert(output.clone());
                }
            }
        }
        let input = graph
            .input
            .iter()
            .find(|v| !self.consts.contains_key(&v.name));
        let input_name = input.map(|v| v.name.clone()).unwrap_or_default();
        let input_shape = input
            .map(|v| {
                v.type_
                    .tensor_type()
                    .shape
                    .dim
                    .iter()
                    .map(|d| {
                        (d.has_dim_value() && d.dim_value() > 0)
                            .then(|| usize::try_from(d.dim_value()).ok())
                            .flatten()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let producer = format!("{} {}", model.producer_name, model.producer_version)
            .trim()
            .to_string();
        Ok(OnnxModel {
            path: self.path.to_path_buf(),
            ir_version: model.ir_version,
            opset: default_opset(model).unwrap_or_default(),
            producer,
            input_name,
            input_shape,
            output_names: graph.output.iter().map(|v| v.name.clone()).collect(),
            layers,
            metadata: model
                .metadata_props
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect(),
            op_counts,
            onnx_ir: None,
        })
    }

    fn opset(&self) -> i64 {
        default_opset(self.model).unwrap_or_default()
    }

    /// Turns one node into a layer (or into a constant, or fuses it into the previous layer).
    fn layer(
        &mut self,
        node: &Node,
        layers: &mut [OnnxLayer],
    ) -> Result<Option<OnnxLayer>, OnnxError> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(self.unsupported_op(node));
        }
        // Constants and constant pass-throughs become values, not layers.
        match node.op_type.as_str() {
            "Constant" => {
                self.constant_node(node)?;
                return Ok(None);
            }
            "Identity" | "Dropout" => {
                if let Some(src) = node.input(0)
                    && let Some(c) = self.consts.get(src).cloned()
                {
                    if let Some(out) = node.outputs.first() {
                        self.consts.insert(out.clone(), c);
                    }
                    return Ok(None);
                }
            }
            _ => {}
        }
        let kind = match node.op_type.as_str() {
            "Conv" => LayerKind::Conv(self.conv(node)?),
            "BatchNormalization" => LayerKind::BatchNorm(self.batch_norm(node)?),
            "Gemm" => LayerKind::Linear(self.gemm(node)?),
            "MatMul" => LayerKind::Linear(self.matmul(node)?),
            "Add" => {
                if self.fuse_bias(node, layers)? {
                    return Ok(None);
                }
                LayerKind::Add {
                    constant: self.binary_constant(node)?,
                }
            }
            "Sub" => LayerKind::Sub {
                constant: self.binary_constant(node)?,
            },
            "Mul" => LayerKind::Mul {
                constant: self.binary_constant(node)?,
            },
            "Div" => LayerKind::Div {
                constant: self.binary_constant(node)?,
            },
            "Relu" => LayerKind::Relu,
            "Clip" => {
                let (min, max) = if self.opset() < 11 {
                    (node.attr("min").map(|a| a.f), node.attr("max").map(|a| a.f))
                } else {
                    (self.scalar(node, 1)?, self.scalar(node, 2)?)
                };
                LayerKind::Clip { min, max }
            }
            "MaxPool" => LayerKind::MaxPool(self.pool(node)?),
            "AveragePool" => LayerKind::AveragePool(self.pool(node)?),
            "GlobalAveragePool" => LayerKind::GlobalAveragePool,
            "ReduceMean" => {
                let axes = match node.ints("axes") {
                    Some(a) => Some(a.to_vec()),
                    None => self.optional_ints(node, 1)?,
                };
                LayerKind::ReduceMean {
                    axes,
                    keepdims: node.int("keepdims", 1) != 0,
                }
            }
            "Flatten" => LayerKind::Flatten {
                axis: node.int("axis", 1),
            },
            "Reshape" => LayerKind::Reshape {
                shape: self.optional_ints(node, 1)?,
            },
            "Squeeze" => {
                let axes = match node.ints("axes") {
                    Some(a) => Some(a.to_vec()),
                    None => self.optional_ints(node, 1)?,
                };
                LayerKind::Squeeze { axes }
            }
            "Transpose" => LayerKind::Transpose {
                perm: node.ints("perm").map(<[i64]>::to_vec).unwrap_or_default(),
            },
            "Pad" => {
                let pads = match node.ints("pads") {
                    Some(p) => Some(p.to_vec()),
                    None => self.optional_ints(node, 1)?,
                };
                LayerKind::Pad {
                    pads,
                    mode: node.string("mode").unwrap_or("constant").to_string(),
                }
            }
            "Concat" => LayerKind::Concat {
                axis: node.int("axis", 0),
            },
            "Identity" => LayerKind::Identity,
            "Dropout" => {
                let ratio = match node.attr("ratio") {
                    Some(a) => Some(a.f),
                    None => self.scalar(node, 1)?,
                };
                LayerKind::Dropout { ratio }
            }
            "Softmax" => LayerKind::Softmax {
                axis: node.int("axis", if self.opset() >= 13 { -1 } else { 1 }),
            },
            "Shape" | "Gather" | "Unsqueeze" | "Cast" | "Slice" | "ConstantOfShape" => {
                LayerKind::ShapeOp
            }
            _ => return Err(self.unsupported_op(node)),
        };
        // Run-time inputs: every input that is not a constant must be known by now.
        let mut inputs = Vec::new();
        for input in node.inputs.iter().filter(|i| !i.is_empty()) {
            if self.consts.contains_key(input) {
                continue;
            }
            if !self.dynamic.contains(input) {
                return Err(OnnxError::UnknownInput {
                    path: self.path.to_path_buf(),
                    node: node.describe(),
                    input: input.clone(),
                });
            }
            inputs.push(input.clone());
        }
        Ok(Some(OnnxLayer {
            node_name: node.name.clone(),
            op_type: node.op_type.clone(),
            inputs,
            outputs: node.outputs.clone(),
            kind,
        }))
    }

    fn unsupported_op(&self, node: &Node) -> OnnxError {
        OnnxError::UnsupportedOperator {
            path: self.path.to_path_buf(),
            op_type: qualified_op(node),
            node: node.describe(),
        }
    }

    fn unsupported(&self, node: &Node, reason: impl Into<String>) -> OnnxError {
        OnnxError::Unsupported {
            path: self.path.to_path_buf(),
            op_type: node.op_type.clone(),
            node: node.describe(),
            reason: reason.into(),
        }
    }

    fn constant_node(&mut self, node: &Node) -> Result<(), OnnxError> {
        let Some(out) = node.outputs.first().filter(|o| !o.is_empty()) else {
            return Ok(());
        };
        let value = if let Some(t) = node.attr("value").and_then(|a| a.t.clone()) {
            ConstValue::Tensor(Box::new(t))
        } else if let Some(a) = node.attr("value_float") {
            ConstValue::Floats(vec![], vec![a.f])
        } else if let Some(a) = node.attr("value_floats") {
            ConstValue::Floats(vec![a.floats.len()], a.floats.clone())
        } else if let Some(a) = node.attr("value_int") {
            ConstValue::Ints(vec![a.i])
        } else if let Some(a) = node.attr("value_ints") {
            ConstValue::Ints(a.ints.clone())
        } else {
            return Err(self.unsupported(
                node,
                "only `value`, `value_float(s)` and `value_int(s)` constants are supported",
            ));
        };
        self.consts.insert(
            out.clone(),
            Const {
                name: out.clone(),
                value,
            },
        );
        Ok(())
    }

    /// The constant at input `i`, or a [`OnnxError::MissingInitializer`].
    fn required_const(&self, node: &Node, i: usize, what: &str) -> Result<&Const, OnnxError> {
        let Some(name) = node.input(i) else {
            return Err(self.unsupported(node, format!("missing {what} input (#{i})")));
        };
        self.consts
            .get(name)
            .ok_or_else(|| OnnxError::MissingInitializer {
                path: self.path.to_path_buf(),
                node: node.describe(),
                input: name.to_string(),
                dynamic: self.dynamic.contains(name),
            })
    }

    /// The f32 tensor at input `i`, which must be a constant.
    fn weight(&self, node: &Node, i: usize, what: &str) -> Result<OnnxTensor, OnnxError> {
        let c = self.required_const(node, i, what)?;
        self.to_f32(c)
    }

    /// The f32 tensor at optional input `i`: `None` when absent, an error when not constant.
    fn optional_weight(
        &self,
        node: &Node,
        i: usize,
        what: &str,
    ) -> Result<Option<OnnxTensor>, OnnxError> {
        match node.input(i) {
            None => Ok(None),
            Some(_) => self.weight(node, i, what).map(Some),
        }
    }

    /// A scalar f32 constant at optional input `i` (Clip bounds, Dropout ratio).
    fn scalar(&self, node: &Node, i: usize) -> Result<Option<f32>, OnnxError> {
        let Some(name) = node.input(i) else {
            return Ok(None);
        };
        let Some(c) = self.consts.get(name) else {
            return Err(self.unsupported(
                node,
                format!("input `{name}` must be a constant scalar, not a run-time value"),
            ));
        };
        let t = self.to_f32(c)?;
        match t.data.as_slice() {
            [v] => Ok(Some(*v)),
            _ => Err(self.unsupported(
                node,
                format!("input `{name}` must be a scalar, has shape {:?}", t.shape),
            )),
        }
    }

    /// Integer constant at optional input `i` (shapes, axes, pads); `None` when absent or
    /// computed at run time.
    fn optional_ints(&self, node: &Node, i: usize) -> Result<Option<Vec<i64>>, OnnxError> {
        let Some(name) = node.input(i) else {
            return Ok(None);
        };
        match self.consts.get(name) {
            Some(c) => self.to_i64(c).map(Some),
            None => Ok(None),
        }
    }

    /// The constant operand of a binary element-wise node, if any.
    fn binary_constant(&self, node: &Node) -> Result<Option<OnnxTensor>, OnnxError> {
        for i in 0..2 {
            if let Some(c) = node.input(i).and_then(|n| self.consts.get(n)) {
                return self.to_f32(c).map(Some);
            }
        }
        Ok(None)
    }

    fn conv(&self, node: &Node) -> Result<ConvLayer, OnnxError> {
        let weight = self.weight(node, 1, "weight")?;
        let [out_ch, _, kh, kw] = weight.shape[..] else {
            return Err(self.unsupported(
                node,
                format!(
                    "only 2-D convolutions are supported; weight `{}` has shape {:?}",
                    weight.name, weight.shape
                ),
            ));
        };
        let bias = self.optional_weight(node, 2, "bias")?;
        if let Some(b) = &bias
            && b.shape != [out_ch]
        {
            return Err(self.unsupported(
                node,
                format!(
                    "bias `{}` has shape {:?}, expected [{out_ch}]",
                    b.name, b.shape
                ),
            ));
        }
        let group = positive(node.int("group", 1))
            .ok_or_else(|| self.unsupported(node, "`group` must be positive"))?;
        if out_ch % group != 0 {
            return Err(self.unsupported(
                node,
                format!("{out_ch} output channels are not divisible into {group} groups"),
            ));
        }
        let kernel = [kh, kw];
        if let Some(ks) = node.ints("kernel_shape")
            && (ks.len() != 2 || positive(ks[0]) != Some(kh) || positive(ks[1]) != Some(kw))
        {
            return Err(self.unsupported(
                node,
                format!(
                    "`kernel_shape` {ks:?} does not match weight `{}` shape {:?}",
                    weight.name, weight.shape
                ),
            ));
        }
        let (strides, pads, dilations, auto_pad) = self.window_attrs(node)?;
        Ok(ConvLayer {
            weight,
            bias,
            kernel,
            strides,
            pads,
            dilations,
            group,
            auto_pad,
        })
    }

    /// `strides`, `pads`, `dilations` and `auto_pad` of a 2-D conv or pool.
    #[allow(clippy::type_complexity)]
    fn window_attrs(
        &self,
        node: &Node,
    ) -> Result<([usize; 2], [usize; 4], [usize; 2], AutoPad), OnnxError> {
        let pair = |name: &str, zero_ok: bool| -> Result<[usize; 2], OnnxError> {
            match node.ints(name) {
                None => Ok([1, 1]),
                Some(&[a, b]) if a >= 1 && b >= 1 || zero_ok && a >= 0 && b >= 0 => {
                    Ok([a as usize, b as usize])
                }
                Some(v) => Err(self.unsupported(
                    node,
                    format!("`{name}` must be two positive integers, got {v:?}"),
                )),
            }
        };
        let strides = pair("strides", false)?;
        let dilations = pair("dilations", false)?;
        let pads = match node.ints("pads") {
            None => [0; 4],
            Some(&[a, b, c, d]) if [a, b, c, d].iter().all(|&p| p >= 0) => {
                [a as usize, b as usize, c as usize, d as usize]
            }
            Some(v) => {
                return Err(self.unsupported(
                    node,
                    format!("`pads` must be four non-negative integers, got {v:?}"),
                ));
            }
        };
        let auto_pad = match node.string("auto_pad").unwrap_or("NOTSET") {
            "NOTSET" | "" => AutoPad::NotSet,
            "SAME_UPPER" => AutoPad::SameUpper,
            "SAME_LOWER" => AutoPad::SameLower,
            "VALID" => AutoPad::Valid,
            other => return Err(self.unsupported(node, format!("unknown auto_pad `{other}`"))),
        };
        Ok((strides, pads, dilations, auto_pad))
    }

    fn pool(&self, node: &Node) -> Result<PoolLayer, OnnxError> {
        let kernel = match node.ints("kernel_shape") {
            Some(&[a, b]) if a >= 1 && b >= 1 => [a as usize, b as usize],
            other => {
                return Err(self.unsupported(
                    node,
                    format!("only 2-D pools are supported; kernel_shape is {other:?}"),
                ));
            }
        };
        let (strides, pads, dilations, auto_pad) = self.window_attrs(node)?;
        Ok(PoolLayer {
            kernel,
            strides,
            pads,
            dilations,
            ceil_mode: node.int("ceil_mode", 0) != 0,
            count_include_pad: node.int("count_include_pad", 0) != 0,
            auto_pad,
        })
    }

    fn batch_norm(&self, node: &Node) -> Result<BatchNormLayer, OnnxError> {
        let scale = self.weight(node, 1, "scale")?;
        let bias = self.weight(node, 2, "bias")?;
        let mean = self.weight(node, 3, "mean")?;
        let var = self.weight(node, 4, "var")?;
        let c = scale.len();
        for t in [&scale, &bias, &mean, &var] {
            if t.len() != c || t.shape.iter().filter(|&&d| d != 1).count() > 1 {
                return Err(self.unsupported(
                    node,
                    format!(
                        "parameters must be vectors of the same length; `{}` has shape {:?}, \
                         `{}` has shape {:?}",
                        scale.name, scale.shape, t.name, t.shape
                    ),
                ));
            }
        }
        Ok(BatchNormLayer {
            scale,
            bias,
            mean,
            var,
            epsilon: node.float("epsilon", 1e-5),
            momentum: node.float("momentum", 0.9),
        })
    }

    fn gemm(&self, node: &Node) -> Result<LinearLayer, OnnxError> {
        if node.int("transA", 0) != 0 {
            return Err(self.unsupported(node, "transA = 1 is not supported"));
        }
        let b = self.weight(node, 1, "weight (B)")?;
        let [rows, cols] = b.shape[..] else {
            return Err(self.unsupported(
                node,
                format!("weight `{}` must be 2-D, has shape {:?}", b.name, b.shape),
            ));
        };
        let trans_b = node.int("transB", 0) != 0;
        let alpha = node.float("alpha", 1.0);
        let beta = node.float("beta", 1.0);
        let mut weight = if trans_b { b } else { transpose(b, rows, cols) };
        let (out_features, in_features) = (weight.shape[0], weight.shape[1]);
        if alpha != 1.0 {
            weight.data.iter_mut().for_each(|w| *w *= alpha);
        }
        let bias = match self.optional_weight(node, 2, "bias (C)")? {
            None => None,
            Some(c) => {
                let mut c = self.linear_bias(node, c, out_features)?;
                if beta != 1.0 {
                    c.data.iter_mut().for_each(|v| *v *= beta);
                }
                Some(c)
            }
        };
        Ok(LinearLayer {
            weight,
            bias,
            in_features,
            out_features,
            source: LinearSource::Gemm,
        })
    }

    /// Broadcasts a bias of shape `[out]`, `[1, out]`, `[1]` or `[]` to `[out]`.
    fn linear_bias(
        &self,
        node: &Node,
        mut c: OnnxTensor,
        out_features: usize,
    ) -> Result<OnnxTensor, OnnxError> {
        let squeezed: Vec<usize> = c.shape.iter().copied().filter(|&d| d != 1).collect();
        if squeezed == [out_features] || (out_features == 1 && c.len() == 1) {
            c.shape = vec![out_features];
            Ok(c)
        } else if c.len() == 1 {
            c.data = vec![c.data[0]; out_features];
            c.shape = vec![out_features];
            Ok(c)
        } else {
            Err(self.unsupported(
                node,
                format!(
                    "bias `{}` has shape {:?}, expected [{out_features}]",
                    c.name, c.shape
                ),
            ))
        }
    }

    fn matmul(&self, node: &Node) -> Result<LinearLayer, OnnxError> {
        if node.input(0).is_some_and(|a| self.consts.contains_key(a)) {
            return Err(self.unsupported(node, "the left operand must be a run-time value"));
        }
        let b = self.weight(node, 1, "weight")?;
        let [rows, cols] = b.shape[..] else {
            return Err(self.unsupported(
                node,
                format!("weight `{}` must be 2-D, has shape {:?}", b.name, b.shape),
            ));
        };
        Ok(LinearLayer {
            weight: transpose(b, rows, cols),
            bias: None,
            in_features: rows,
            out_features: cols,
            source: LinearSource::MatMul,
        })
    }

    /// Fuses `Add(MatMul(x, W), b)` into the previous layer; returns whether it did.
    fn fuse_bias(&self, node: &Node, layers: &mut [OnnxLayer]) -> Result<bool, OnnxError> {
        let Some(last) = layers.last_mut() else {
            return Ok(false);
        };
        let LayerKind::Linear(linear) = &mut last.kind else {
            return Ok(false);
        };
        let Some(mm_out) = last.outputs.first() else {
            return Ok(false);
        };
        if linear.source != LinearSource::MatMul || self.uses.get(mm_out) != Some(&1) {
            return Ok(false);
        }
        let (a, b) = (node.input(0), node.input(1));
        let bias_name = if a == Some(mm_out.as_str()) {
            b
        } else if b == Some(mm_out.as_str()) {
            a
        } else {
            return Ok(false);
        };
        let Some(c) = bias_name.and_then(|n| self.consts.get(n)) else {
            return Ok(false);
        };
        let bias = self.to_f32(c)?;
        let squeezed: Vec<usize> = bias.shape.iter().copied().filter(|&d| d != 1).collect();
        if squeezed != [linear.out_features] && bias.len() != 1 {
            return Ok(false);
        }
        linear.bias = Some(self.linear_bias(node, bias, linear.out_features)?);
        linear.source = LinearSource::MatMulAdd;
        last.outputs = node.outputs.clone();
        Ok(true)
    }

    /// Decodes a constant to f32.
    fn to_f32(&self, c: &Const) -> Result<OnnxTensor, OnnxError> {
        let bad = |reason: String| OnnxError::BadTensor {
            path: self.path.to_path_buf(),
            tensor: c.name.clone(),
            reason,
        };
        let (shape, data, source_dtype) = match &c.value {
            ConstValue::Floats(shape, v) => (shape.clone(), v.clone(), FloatType::F32),
            ConstValue::Ints(_) => {
                return Err(OnnxError::UnsupportedDtype {
                    path: self.path.to_path_buf(),
                    tensor: c.name.clone(),
                    dtype: "INT64".to_string(),
                });
            }
            ConstValue::Tensor(t) => {
                let (shape, n) = tensor_shape(t).map_err(bad)?;
                check_stored_inline(t).map_err(bad)?;
                let raw: &[u8] = &t.raw_data;
                let (data, dtype) = match t.data_type {
                    DT_FLOAT => (
                        if raw.is_empty() {
                            t.float_data.clone()
                        } else {
                            le_chunks::<4>(raw, n)
                                .map_err(bad)?
                                .map(f32::from_le_bytes)
                                .collect()
                        },
                        FloatType::F32,
                    ),
                    DT_DOUBLE => (
                        if raw.is_empty() {
                            t.double_data.iter().map(|&v| v as f32).collect()
                        } else {
                            le_chunks::<8>(raw, n)
                                .map_err(bad)?
                                .map(|b| f64::from_le_bytes(b) as f32)
                                .collect()
                        },
                        FloatType::F64,
                    ),
                    DT_FLOAT16 | DT_BFLOAT16 => {
                        let bits: Vec<u16> = if raw.is_empty() {
                            t.int32_data.iter().map(|&v| v as u16).collect()
                        } else {
                            le_chunks::<2>(raw, n)
                                .map_err(bad)?
                                .map(u16::from_le_bytes)
                                .collect()
                        };
                        if t.data_type == DT_FLOAT16 {
                            (bits.into_iter().map(f16_to_f32).collect(), FloatType::F16)
                        } else {
                            (
                                bits.into_iter()
                                    .map(|b| f32::from_bits(u32::from(b) << 16))
                                    .collect(),
                                FloatType::BF16,
                            )
                        }
                    }
                    other => {
                        return Err(OnnxError::UnsupportedDtype {
                            path: self.path.to_path_buf(),
                            tensor: c.name.clone(),
                            dtype: dtype_name(other),
                        });
                    }
                };
                (shape, data, dtype)
            }
        };
        let expected: usize = shape.iter().product();
        if data.len() != expected {
            return Err(bad(format!(
                "shape {shape:?} needs {expected} values, the file stores {}",
                data.len()
            )));
        }
        Ok(OnnxTensor {
            name: c.name.clone(),
            shape,
            data,
            source_dtype,
        })
    }

    /// Decodes an integer constant (INT64 or INT32).
    fn to_i64(&self, c: &Const) -> Result<Vec<i64>, OnnxError> {
        let bad = |reason: String| OnnxError::BadTensor {
            path: self.path.to_path_buf(),
            tensor: c.name.clone(),
            reason,
        };
        match &c.value {
            ConstValue::Ints(v) => Ok(v.clone()),
            ConstValue::Floats(..) => Err(OnnxError::UnsupportedDtype {
                path: self.path.to_path_buf(),
                tensor: c.name.clone(),
                dtype: "FLOAT (an integer tensor was expected)".to_string(),
            }),
            ConstValue::Tensor(t) => {
                let (_, n) = tensor_shape(t).map_err(bad)?;
                check_stored_inline(t).map_err(bad)?;
                let raw: &[u8] = &t.raw_data;
                let v: Vec<i64> = match t.data_type {
                    DT_INT64 if raw.is_empty() => t.int64_data.clone(),
                    DT_INT64 => le_chunks::<8>(raw, n)
                        .map_err(bad)?
                        .map(i64::from_le_bytes)
                        .collect(),
                    DT_INT32 if raw.is_empty() => t.int32_data.iter().map(|&v| v.into()).collect(),
                    DT_INT32 => le_chunks::<4>(raw, n)
                        .map_err(bad)?
                        .map(|b| i32::from_le_bytes(b).into())
                        .collect(),
                    other => {
                        return Err(OnnxError::UnsupportedDtype {
                            path: self.path.to_path_buf(),
                            tensor: c.name.clone(),
                            dtype: format!(
                                "{} (an integer tensor was expected)",
                                dtype_name(other)
                            ),
                        });
                    }
                };
                if v.len() != n {
                    return Err(bad(format!(
                        "shape needs {n} values, the file stores {}",
                        v.len()
                    )));
                }
                Ok(v)
            }
        }
    }
}

fn qualified_op(node: &Node) -> String {
    if node.domain.is_empty() || node.domain == "ai.onnx" {
        node.op_type.clone()
    } else {
        format!("{}.{}", node.domain, node.op_type)
    }
}

fn positive(v: i64) -> Option<usize> {
    usize::try_from(v).ok().filter(|&v| v > 0)
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(mut t: OnnxTensor, rows: usize, cols: usize) -> OnnxTensor {
    let mut data = vec![0.0; t.data.len()];
    for r in 0..rows {
        for c in 0..cols {
            data[c * rows + r] = t.data[r * cols + c];
        }
    }
    t.data = data;
    t.shape = vec![cols, rows];
    t
}

const DT_FLOAT: i32 = 1;
const DT_INT32: i32 = 6;
const DT_INT64: i32 = 7;
const DT_FLOAT16: i32 = 10;
const DT_DOUBLE: i32 = 11;
const DT_BFLOAT16: i32 = 16;

fn dtype_name(dt: i32) -> String {
    let name = match dt {
        0 => "UNDEFINED",
        1 => "FLOAT",
        2 => "UINT8",
        3 => "INT8",
        4 => "UINT16",
        5 => "INT16",
        6 => "INT32",
        7 => "INT64",
        8 => "STRING",
        9 => "BOOL",
        10 => "FLOAT16",
        11 => "DOUBLE",
        12 => "UINT32",
        13 => "UINT64",
        14 => "COMPLEX64",
        15 => "COMPLEX128",
        16 => "BFLOAT16",
        17..=20 => "FLOAT8",
        21 => "UINT4",
        22 => "INT4",
        23 => "FLOAT4E2M1",
        _ => return format!("unknown ({dt})"),
    };
    name.to_string()
}

/// The shape of a tensor and its element count, checked for negative dims and overflow.
fn tensor_shape(t: &TensorProto) -> Result<(Vec<usize>, usize), String> {
    let mut shape = Vec::with_capacity(t.dims.len());
    let mut n: usize = 1;
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| format!("negative dimension in {:?}", t.dims))?;
        n = n
            .checked_mul(d)
            .ok_or_else(|| format!("shape {:?} is too large", t.dims))?;
        shape.push(d);
    }
    Ok((shape, n))
}

/// Rejects tensors whose data lives in an external file.
fn check_stored_inline(t: &TensorProto) -> Result<(), String> {
    if t.data_location.value() == 1 || !t.external_data.is_empty() {
        return Err(
            "its data is stored in an external file, which is not supported; save the model \
             with its weights inside the .onnx file"
                .to_string(),
        );
    }
    Ok(())
}

/// Splits little-endian raw data into `n` chunks of `N` bytes, checking the length.
fn le_chunks<const N: usize>(
    raw: &[u8],
    n: usize,
) -> Result<impl Iterator<Item = [u8; N]> + '_, String> {
    if Some(raw.len()) != n.checked_mul(N) {
        return Err(format!(
            "{} bytes of raw data for {n} elements of {N} bytes",
            raw.len()
        ));
    }
    Ok(raw.chunks_exact(N).map(|c| {
        let mut b = [0u8; N];
        b.copy_from_slice(c);
        b
    }))
}

/// IEEE 754 half precision to single precision.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: m * 2^-24.
            let v = m as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

// ---------------------------------------------------------------------------------------------
// onnx-ir cross-check
// ---------------------------------------------------------------------------------------------

/// Imports the model with onnx-ir and checks it against the layers read from the protobuf.
fn verify_with_onnx_ir(bytes: &[u8], model: &OnnxModel) -> Result<OnnxIrSummary, OnnxError> {
    let path = &model.path;
    let graph = onnx_ir::OnnxGraphBuilder::new()
        .parse_bytes(bytes)
        .map_err(|e| OnnxError::OnnxIr {
            path: path.clone(),
            message: e.to_string(),
        })?;
    let mut summary = OnnxIrSummary::default();
    let mut ir_conv_weights = Vec::new();
    let mut ir_batch_norms = 0usize;
    for node in &graph.nodes {
        let debug = format!("{node:?}");
        let kind = debug
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or("?")
            .to_string();
        *summary.node_counts.entry(kind).or_insert(0) += 1;
        match node {
            onnx_ir::Node::Conv2d(n) => {
                ir_conv_weights.push(n.inputs.get(1).and_then(|a| a.value()));
            }
            onnx_ir::Node::BatchNormalization(_) => ir_batch_norms += 1,
            _ => {}
        }
    }
    let convs: Vec<&ConvLayer> = model.convs().collect();
    let inconsistent = |reason: String| OnnxError::Inconsistent {
        path: path.clone(),
        reason,
    };
    if convs.len() != ir_conv_weights.len() {
        return Err(inconsistent(format!(
            "{} Conv layers in the protobuf, {} Conv2d nodes in onnx-ir",
            convs.len(),
            ir_conv_weights.len()
        )));
    }
    let batch_norms = model.batch_norms().count();
    if batch_norms != ir_batch_norms {
        return Err(inconsistent(format!(
            "{batch_norms} BatchNormalization layers in the protobuf, {ir_batch_norms} in onnx-ir"
        )));
    }
    for (i, (conv, ir)) in convs.iter().zip(&ir_conv_weights).enumerate() {
        let Some(ir) = ir else {
            return Err(inconsistent(format!(
                "onnx-ir has no constant weight for Conv #{i} (`{}`)",
                conv.weight.name
            )));
        };
        let ir_shape: Vec<usize> = ir.shape.to_vec();
        if ir_shape != conv.weight.shape {
            return Err(inconsistent(format!(
                "Conv #{i} (`{}`): shape {:?} in the protobuf, {ir_shape:?} in onnx-ir",
                conv.weight.name, conv.weight.shape
            )));
        }
        // Compare values when onnx-ir kept them as f32 (it keeps the file's dtype).
        if let Ok(values) = ir.as_slice::<f32>()
            && conv.weight.source_dtype == FloatType::F32
            && values
                .iter()
                .zip(&conv.weight.data)
                .any(|(a, b)| a.to_bits() != b.to_bits())
        {
            return Err(inconsistent(format!(
                "Conv #{i} (`{}`): weights differ",
                conv.weight.name
            )));
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn panics_become_errors_naming_the_file() {
        let path = Path::new("some/model.onnx");
        let err = guard::<()>(path, || panic!("boom")).unwrap_err();
        assert!(matches!(&err, OnnxError::Panicked { message, .. } if message == "boom"));
        assert!(err.to_string().starts_with("some/model.onnx: "), "{err}");
    }

    #[test]
    fn transpose_2x3() {
        let t = OnnxTensor {
            name: "w".into(),
            shape: vec![2, 3],
            data: vec![1., 2., 3., 4., 5., 6.],
            source_dtype: FloatType::F32,
        };
        let t = transpose(t, 2, 3);
        assert_eq!(t.shape, [3, 2]);
        assert_eq!(t.data, [1., 4., 2., 5., 3., 6.]);
    }
}
