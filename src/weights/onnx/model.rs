//! What the reader produces: the model, its layers and their decoded weights. Plain data with
//! no protobuf in it, so that callers (the import mapping, tests) depend on these types only.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// An ONNX model read into execution-ordered layers.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxModel {
    /// The file it was read from (or the label given to
    /// [`read_onnx_bytes`](super::read_onnx_bytes)).
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
    /// What `onnx-ir` made of the model, when
    /// [`ReadOptions::verify_with_onnx_ir`](super::ReadOptions::verify_with_onnx_ir) was on.
    pub onnx_ir: Option<OnnxIrSummary>,
}

/// What `onnx-ir`'s importer produced from the model (kept for diagnostics).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OnnxIrSummary {
    /// Number of nodes of each `onnx-ir` node type after its simplification passes (e.g.
    /// `Conv2d`, `BatchNormalization`, `Linear`, `Gemm`, `Constant`); types that no operator
    /// this reader accepts becomes are counted together under `other`.
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
    /// `HardSwish` (MobileNetV3).
    HardSwish,
    /// `HardSigmoid` with its `alpha` and `beta` (MobileNetV3's gate: 1/6 and 0.5).
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `Sigmoid` (EfficientNet's gate, and its SiLU as `x · Sigmoid(x)`).
    Sigmoid,
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
            LayerKind::HardSwish => "HardSwish",
            LayerKind::HardSigmoid { .. } => "HardSigmoid",
            LayerKind::Sigmoid => "Sigmoid",
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
