//! Exporting a (fine-tuned) model to a standard ONNX file, for onnxruntime and any other ONNX
//! runtime, and for this crate's own import.
//!
//! The graph is the network in inference form, as torchvision's own export with BatchNorm folded
//! gives it: every BatchNorm folded into its convolution (the model's
//! [`fuse_for_inference`](crate::models::ImageClassifier::fuse_for_inference)), dropout left
//! out. Operators (default domain, opset [`OPSET`], IR version [`IR_VERSION`]):
//!
//! - `Conv` with `group`, `pads`, `strides`, `dilations` and a bias (the folded BatchNorm);
//!   TensorFlow "SAME" padding is written as the explicit asymmetric pads it amounts to at the
//!   exported input size, as the shared ImageNet MobileNetV2 does (`auto_pad = SAME_UPPER`
//!   instead when that size is odd, where explicit pads could not be told from symmetric ones);
//! - `Relu`, and `Clip` with `min` 0 and `max` 6 as constant inputs (ReLU6); `HardSwish`,
//!   `HardSigmoid` (`alpha` 1/6, `beta` 0.5, PyTorch's), `Sigmoid`, and SiLU as `x · Sigmoid(x)`
//!   (`Sigmoid`, `Mul`), as torch exports them;
//! - `Add` for residual connections, `MaxPool` for ResNet's stem;
//! - squeeze-and-excitation as `GlobalAveragePool` → `Conv` → activation → `Conv` → gate →
//!   `Mul` (MobileNetV3, EfficientNet);
//! - `GlobalAveragePool`, `Flatten` and `Gemm` (`transB = 1`) for the classifier (MobileNetV3's
//!   hidden `classifier.0` and its Hardswish included).
//!
//! Initializers carry torchvision's state-dict names (`features.0.0.weight`,
//! `features.0.0.bias`, `classifier.1.weight`, `layer1.0.downsample.0.bias`, `fc.bias`), so the
//! crate's import maps them by name. The input `input` is float32 `[batch, 3, H, W]` with a
//! symbolic batch dimension `batch` and `H = W` = the preprocessing's image size; the output
//! `logits` is `[batch, num_classes]`, scores before softmax.
//!
//! `metadata_props`: `class_names` (a JSON array), `preprocessing` (a sentence that says how to
//! prepare images and that the import reads back to the exact
//! [`Preprocessing`](crate::data::Preprocessing)), `model` (the architecture's name, e.g.
//! `mobilenet_v2`, `resnet18`) and the [`ModelInfo`]'s free metadata entries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use onnx_ir::{GraphProto, ModelProto, TensorProto, ValueInfoProto};
use protobuf::{EnumOrUnknown, Message};

use super::{ModelInfo, WeightsError, onnx_metadata};
use crate::io::atomic_write;
use crate::kernels::ConvBackend;
use crate::models::layers::{Activation, Conv2d, MBConvNetwork, Padding, SqueezeSettings};
use crate::models::{Architecture, ModelSpec};

/// The version of the default ONNX operator set the exported files use.
pub const OPSET: i64 = 17;
/// The ONNX IR version of the exported files (ONNX 1.10 and later read it).
pub const IR_VERSION: i64 = 8;
/// The `producer_name` of the exported files.
pub const PRODUCER: &str = "transfer-vision";
/// The name of the exported graph's input, float32 `[batch, 3, H, W]`.
pub const INPUT_NAME: &str = "input";
/// The name of the exported graph's output, float32 `[batch, num_classes]`.
pub const OUTPUT_NAME: &str = "logits";
/// The symbolic (`dim_param`) name of the batch dimension of the input and the output.
pub const BATCH_DIM: &str = "batch";

/// What [`export_onnx`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// The file.
    pub path: PathBuf,
    /// The architecture's name (`mobilenet_v2`, `resnet18`, ...), also in the `model` metadata.
    pub model: String,
    /// The default operator set version ([`OPSET`]).
    pub opset: i64,
    /// The IR version ([`IR_VERSION`]).
    pub ir_version: i64,
    /// The input's shape after the symbolic batch dimension: `[3, H, W]`.
    pub input_shape: [usize; 3],
    /// Outputs per image (classes).
    pub num_classes: usize,
    /// Number of graph nodes.
    pub nodes: usize,
    /// Number of initializers (weights, biases and the two ReLU6 bounds where there are some).
    pub initializers: usize,
    /// Number of values in the weight and bias initializers: the folded network's parameters.
    pub parameters: usize,
    /// Size of the file in bytes.
    pub bytes: usize,
}

/// Exports `model` with `info` (class names, preprocessing, free metadata) as an ONNX file at
/// `path`, written atomically: see the [module documentation](self) for the graph.
///
/// The model is not changed (a folded copy is exported). The file re-imports with
/// [`Architecture::from_onnx`] (the import reads the class names and the preprocessing back)
/// and runs in onnxruntime.
///
/// # Errors
/// [`WeightsError::Unsavable`] naming `path` when `info` does not fit the model (as many class
/// names as classes, or none; preprocessing within [`Preprocessing::check`]'s bounds; free
/// metadata keys other than `class_names`, `preprocessing` and `model`), for an architecture the
/// exporter does not know or for weights that cannot be read; [`WeightsError::Io`] naming `path`
/// when the file cannot be written.
///
/// [`Preprocessing::check`]: crate::data::Preprocessing::check
pub fn export_onnx<B: ConvBackend, M: Architecture<B>>(
    model: &M,
    info: &ModelInfo,
    path: impl AsRef<Path>,
) -> Result<ExportReport, WeightsError> {
    let path = path.as_ref();
    let (bytes, report) = encode(model, info, path)?;
    atomic_write(path, &bytes).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(report)
}

/// The ONNX file [`export_onnx`] would write, as bytes; `label` names it in errors.
///
/// # Errors
/// As [`export_onnx`], except that nothing is written.
pub fn onnx_bytes<B: ConvBackend, M: Architecture<B>>(
    model: &M,
    info: &ModelInfo,
    label: impl AsRef<Path>,
) -> Result<Vec<u8>, WeightsError> {
    encode(model, info, label.as_ref()).map(|(bytes, _)| bytes)
}

/// The protobuf bytes of the export and its report.
fn encode<B: ConvBackend, M: Architecture<B>>(
    model: &M,
    info: &ModelInfo,
    path: &Path,
) -> Result<(Vec<u8>, ExportReport), WeightsError> {
    let unsavable = |reason: String| WeightsError::Unsavable {
        path: path.to_path_buf(),
        reason,
    };
    let spec = model.spec();
    let num_classes = model.num_classes();
    check_info(info, num_classes).map_err(unsavable)?;
    let size = info.preprocessing.image_size as usize;

    // The network in inference form, read to the host.
    let mut folded = model.clone().fuse_for_inference();
    let blocks = folded.block_paths();
    let mut convs = Vec::new();
    for conv in folded.convs_mut() {
        convs.push(FoldedConv::read(conv.path().to_string(), conv.conv()).map_err(unsavable)?);
    }
    let mut classifier = Vec::new();
    for hidden in folded.hidden_linears() {
        classifier.push(ClassifierLayer {
            path: hidden.path,
            weight: host(hidden.linear.weight.val(), hidden.path).map_err(unsavable)?,
            bias: host(hidden.linear.bias.val(), hidden.path).map_err(unsavable)?,
            outputs: hidden.linear.out_features(),
            activation: Some(hidden.activation),
        });
    }
    let head = folded.head();
    let head_weight = host(head.weight.val(), "head weight").map_err(unsavable)?;
    let head_bias = host(head.bias.val(), "head bias").map_err(unsavable)?;

    // TF-SAME at an odd size pads like symmetric padding at the stem: say SAME_UPPER instead.
    let same_upper = size % 2 == 1 && convs.iter().any(|c| c.padding == Padding::TfSame);
    let order: Vec<String> = convs.iter().map(|c| c.path.clone()).collect();
    let mut graph = Builder {
        graph: GraphProto::new(),
        convs: convs.into_iter().map(|c| (c.path.clone(), c)).collect(),
        same_upper,
        has_clip_bounds: false,
        parameters: 0,
    };
    graph.graph.name = format!("{} (transfer-vision)", spec.name());
    let input = Value {
        name: INPUT_NAME.to_string(),
        channels: 3,
        hw: [size, size],
    };
    let features = match &spec {
        ModelSpec::MobileNetV2(_) => graph.mobilenet_v2(input, &blocks, &order),
        ModelSpec::ResNet(_) => graph.resnet(input, &blocks, &order),
        ModelSpec::MobileNetV3(config) => graph.mbconv_network(input, &config.network()),
        ModelSpec::EfficientNet(config) => graph.mbconv_network(input, &config.network()),
        #[allow(unreachable_patterns)]
        other => Err(format!(
            "ONNX export does not know the {} architecture",
            other.name()
        )),
    }
    .map_err(unsavable)?;
    if let Some(unused) = graph.convs.keys().next() {
        return Err(unsavable(format!(
            "convolution `{unused}` has no place in the exported graph"
        )));
    }
    classifier.push(ClassifierLayer {
        path: folded.head_path(),
        weight: head_weight,
        bias: head_bias,
        outputs: num_classes,
        activation: None,
    });
    graph.classifier(features, &classifier).map_err(unsavable)?;
    graph
        .graph
        .input
        .push(value_info(INPUT_NAME, &[3, size, size]));
    graph
        .graph
        .output
        .push(value_info(OUTPUT_NAME, &[num_classes]));

    let mut proto = ModelProto::new();
    proto.ir_version = IR_VERSION;
    proto.producer_name = PRODUCER.to_string();
    proto.producer_version = env!("CARGO_PKG_VERSION").to_string();
    proto.doc_string = format!(
        "{} exported by transfer-vision: BatchNorm folded into the convolutions, inference only",
        spec.name()
    );
    let opset = push_default(&mut proto.opset_import);
    opset.domain = String::new();
    opset.version = OPSET;
    for (key, value) in metadata(info, &spec).map_err(unsavable)? {
        let entry = push_default(&mut proto.metadata_props);
        entry.key = key;
        entry.value = value;
    }
    let (nodes, initializers, parameters) = (
        graph.graph.node.len(),
        graph.graph.initializer.len(),
        graph.parameters,
    );
    proto.graph = protobuf::MessageField::some(graph.graph);
    let bytes = proto
        .write_to_bytes()
        .map_err(|e| unsavable(format!("cannot encode the ONNX protobuf: {e}")))?;
    let report = ExportReport {
        path: path.to_path_buf(),
        model: spec.name(),
        opset: OPSET,
        ir_version: IR_VERSION,
        input_shape: [3, size, size],
        num_classes,
        nodes,
        initializers,
        parameters,
        bytes: bytes.len(),
    };
    Ok((bytes, report))
}

/// Checks that `info` can go into the file of a `num_classes`-class model.
fn check_info(info: &ModelInfo, num_classes: usize) -> Result<(), String> {
    let names = info.class_names.len();
    if names != 0 && names != num_classes {
        return Err(format!(
            "{names} class names for a model of {num_classes} classes"
        ));
    }
    info.preprocessing.check()?;
    if let Some(key) = onnx_metadata::RESERVED
        .iter()
        .find(|k| info.metadata.contains_key(**k))
    {
        return Err(format!(
            "metadata key `{key}` is reserved: the export writes it from the model and its info"
        ));
    }
    Ok(())
}

/// The `metadata_props`: class names (when there are some), preprocessing, model, then the free
/// entries.
fn metadata(info: &ModelInfo, spec: &ModelSpec) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    if !info.class_names.is_empty() {
        let names = serde_json::to_string(&info.class_names)
            .map_err(|e| format!("cannot encode the class names: {e}"))?;
        out.push((onnx_metadata::CLASS_NAMES.to_string(), names));
    }
    out.push((
        onnx_metadata::PREPROCESSING.to_string(),
        onnx_metadata::describe_preprocessing(&info.preprocessing),
    ));
    out.push((onnx_metadata::MODEL.to_string(), spec.name()));
    out.extend(info.metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(out)
}

/// A tensor's values on the host as f32, an error naming `what` when they cannot be read.
fn host<B: ConvBackend, const D: usize>(t: Tensor<B, D>, what: &str) -> Result<Vec<f32>, String> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| format!("cannot read the {what}: {e:?}"))
}

/// A convolution with its BatchNorm folded in, on the host.
struct FoldedConv {
    path: String,
    /// `[out, in / groups, k, k]`.
    shape: [usize; 4],
    weight: Vec<f32>,
    bias: Vec<f32>,
    stride: usize,
    groups: usize,
    padding: Padding,
}

impl FoldedConv {
    fn read<B: ConvBackend>(path: String, conv: &Conv2d<B>) -> Result<Self, String> {
        let shape = conv.weight.val().dims();
        let weight = host(conv.weight.val(), &format!("weight of `{path}`"))?;
        let bias = match &conv.bias {
            Some(b) => host(b.val(), &format!("bias of `{path}`"))?,
            None => vec![0.0; shape[0]],
        };
        Ok(Self {
            path,
            shape,
            weight,
            bias,
            stride: conv.stride,
            groups: conv.groups,
            padding: conv.padding,
        })
    }
}

/// A run-time value of the graph: its name, channels and spatial size.
#[derive(Debug, Clone)]
struct Value {
    name: String,
    channels: usize,
    hw: [usize; 2],
}

/// An attribute of a node.
enum Attr {
    Float(&'static str, f32),
    Int(&'static str, i64),
    Ints(&'static str, Vec<i64>),
    Str(&'static str, &'static str),
}

/// ONNX `AttributeProto.AttributeType` values.
const ATTR_FLOAT: i32 = 1;
const ATTR_INT: i32 = 2;
const ATTR_STRING: i32 = 3;
const ATTR_INTS: i32 = 7;
/// ONNX `TensorProto.DataType.FLOAT`.
const DT_FLOAT: i32 = 1;

/// Names of the ReLU6 bounds (scalar initializers shared by every `Clip`).
const CLIP_MIN: &str = "relu6.min";
const CLIP_MAX: &str = "relu6.max";

/// The graph under construction.
struct Builder {
    graph: GraphProto,
    /// Convolutions not placed yet, by path.
    convs: BTreeMap<String, FoldedConv>,
    /// Write TF-SAME padding as `auto_pad = SAME_UPPER` rather than explicit pads.
    same_upper: bool,
    has_clip_bounds: bool,
    parameters: usize,
}

impl Builder {
    fn initializer(&mut self, name: &str, dims: &[usize], data: &[f32]) {
        let mut t = TensorProto::new();
        t.name = name.to_string();
        t.data_type = DT_FLOAT;
        t.dims = dims.iter().map(|&d| d as i64).collect();
        let mut raw = Vec::with_capacity(data.len() * 4);
        for v in data {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        t.raw_data = raw.into();
        self.graph.initializer.push(t);
    }

    /// A weight or bias (counted as parameters).
    fn parameter(&mut self, name: &str, dims: &[usize], data: &[f32]) {
        self.parameters += data.len();
        self.initializer(name, dims, data);
    }

    fn node(&mut self, op: &str, name: &str, inputs: &[&str], output: &str, attrs: Vec<Attr>) {
        let node = push_default(&mut self.graph.node);
        node.op_type = op.to_string();
        node.name = name.to_string();
        node.input = inputs.iter().map(|s| s.to_string()).collect();
        node.output = vec![output.to_string()];
        for attr in attrs {
            let a = push_default(&mut node.attribute);
            match attr {
                Attr::Float(name, v) => {
                    a.name = name.to_string();
                    a.type_ = EnumOrUnknown::from_i32(ATTR_FLOAT);
                    a.f = v;
                }
                Attr::Int(name, v) => {
                    a.name = name.to_string();
                    a.type_ = EnumOrUnknown::from_i32(ATTR_INT);
                    a.i = v;
                }
                Attr::Ints(name, v) => {
                    a.name = name.to_string();
                    a.type_ = EnumOrUnknown::from_i32(ATTR_INTS);
                    a.ints = v;
                }
                Attr::Str(name, v) => {
                    a.name = name.to_string();
                    a.type_ = EnumOrUnknown::from_i32(ATTR_STRING);
                    a.s = v.as_bytes().to_vec().into();
                }
            }
        }
    }

    /// The convolution at `path` applied to `x`.
    fn conv(&mut self, x: &Value, path: &str) -> Result<Value, String> {
        let conv = self
            .convs
            .remove(path)
            .ok_or_else(|| format!("no convolution `{path}` (or placed twice)"))?;
        let [out, per_group, k, kw] = conv.shape;
        if per_group * conv.groups != x.channels || k != kw {
            return Err(format!(
                "convolution `{path}` of shape {:?} in {} groups cannot read {} channels",
                conv.shape, conv.groups, x.channels
            ));
        }
        let s = conv.stride;
        let [h, w] = x.hw;
        let pads = match conv.padding {
            Padding::Symmetric => [k / 2; 4],
            Padding::TfSame => conv.padding.amounts(k, s, h, w),
        };
        let [top, left, bottom, right] = pads;
        let size = |n: usize, a: usize, b: usize| (n + a + b).checked_sub(k).map(|v| v / s + 1);
        let (Some(oh), Some(ow)) = (size(h, top, bottom), size(w, left, right)) else {
            return Err(format!(
                "convolution `{path}` ({k}×{k}) gets a {h}×{w} input: the image size is too small"
            ));
        };
        let weight = format!("{path}.weight");
        let bias = format!("{path}.bias");
        self.parameter(&weight, &conv.shape, &conv.weight);
        self.parameter(&bias, &[out], &conv.bias);
        let to_i64 = |v: &[usize]| v.iter().map(|&d| d as i64).collect::<Vec<_>>();
        let mut attrs = vec![
            Attr::Ints("kernel_shape", to_i64(&[k, k])),
            Attr::Ints("strides", to_i64(&[s, s])),
            Attr::Ints("dilations", vec![1, 1]),
            Attr::Int("group", conv.groups as i64),
        ];
        if self.same_upper && conv.padding == Padding::TfSame && k > 1 {
            attrs.push(Attr::Str("auto_pad", "SAME_UPPER"));
        } else {
            attrs.push(Attr::Ints("pads", to_i64(&pads)));
        }
        self.node("Conv", path, &[&x.name, &weight, &bias], path, attrs);
        Ok(Value {
            name: path.to_string(),
            channels: out,
            hw: [oh, ow],
        })
    }

    /// `activation` of `x`, named `name`: one node (`Relu`, `Clip(0, 6)` for ReLU6, `HardSwish`,
    /// `HardSigmoid`, `Sigmoid`), or `Sigmoid` and `Mul` for SiLU.
    fn apply(&mut self, x: Value, name: &str, activation: Activation) -> Value {
        let one = |op: &str, attrs: Vec<Attr>, builder: &mut Self| {
            builder.node(op, name, &[&x.name], name, attrs);
        };
        match activation {
            Activation::ReLU => one("Relu", vec![], self),
            Activation::ReLU6 => {
                if !self.has_clip_bounds {
                    self.initializer(CLIP_MIN, &[], &[0.0]);
                    self.initializer(CLIP_MAX, &[], &[6.0]);
                    self.has_clip_bounds = true;
                }
                self.node("Clip", name, &[&x.name, CLIP_MIN, CLIP_MAX], name, vec![]);
            }
            Activation::Hardswish => one("HardSwish", vec![], self),
            Activation::Hardsigmoid => one(
                "HardSigmoid",
                vec![Attr::Float("alpha", 1.0 / 6.0), Attr::Float("beta", 0.5)],
                self,
            ),
            Activation::Sigmoid => one("Sigmoid", vec![], self),
            Activation::SiLU => {
                let gate = format!("{name}.sigmoid");
                self.node("Sigmoid", &gate, &[&x.name], &gate, vec![]);
                self.node("Mul", name, &[&x.name, &gate], name, vec![]);
            }
        }
        Value {
            name: name.to_string(),
            ..x
        }
    }

    /// The conv-BN block at `path` (its convolution at `path.0`), then `activation`.
    fn conv_block(
        &mut self,
        x: &Value,
        path: &str,
        activation: Option<Activation>,
    ) -> Result<Value, String> {
        let conv = format!("{path}.0");
        let y = self.conv(x, &conv)?;
        Ok(match activation {
            Some(a) => self.apply(y, &format!("{path}.act"), a),
            None => y,
        })
    }

    /// A squeeze-and-excitation gate at `path` (`path.fc1`, `path.fc2`) applied to `x`.
    fn squeeze_excitation(
        &mut self,
        x: Value,
        path: &str,
        squeeze: SqueezeSettings,
    ) -> Result<Value, String> {
        let pooled = format!("{path}.avgpool");
        self.node("GlobalAveragePool", &pooled, &[&x.name], &pooled, vec![]);
        let pooled = Value {
            name: pooled,
            channels: x.channels,
            hw: [1, 1],
        };
        let h = self.conv(&pooled, &format!("{path}.fc1"))?;
        let h = self.apply(h, &format!("{path}.act"), squeeze.activation);
        let gate = self.conv(&h, &format!("{path}.fc2"))?;
        let gate = self.apply(gate, &format!("{path}.gate"), squeeze.gate);
        let name = format!("{path}.scale");
        self.node("Mul", &name, &[&x.name, &gate.name], &name, vec![]);
        Ok(Value { name, ..x })
    }

    /// The backbone of a network of MBConv blocks (MobileNetV3, EfficientNet): stem, each
    /// block's expansion, depthwise convolution, squeeze-and-excitation and projection with the
    /// residual connection where the block has one, then the last convolution.
    fn mbconv_network(&mut self, x: Value, network: &MBConvNetwork) -> Result<Value, String> {
        let mut x = self.conv_block(&x, &network.stem, Some(network.activation))?;
        for (path, block) in &network.blocks {
            let input = x.clone();
            let mut layer = 0;
            let mut h = x;
            if block.expands() {
                h = self.conv_block(&h, &format!("{path}.block.0"), Some(block.activation))?;
                layer += 1;
            }
            h = self.conv_block(&h, &format!("{path}.block.{layer}"), Some(block.activation))?;
            layer += 1;
            if let Some(squeeze) = block.squeeze {
                h = self.squeeze_excitation(h, &format!("{path}.block.{layer}"), squeeze)?;
                layer += 1;
            }
            h = self.conv_block(&h, &format!("{path}.block.{layer}"), None)?;
            x = if block.has_residual() {
                self.add(&h, &input, &format!("{path}.add"))?
            } else {
                h
            };
        }
        self.conv_block(&x, &network.last, Some(network.activation))
    }

    fn add(&mut self, a: &Value, b: &Value, name: &str) -> Result<Value, String> {
        if a.channels != b.channels || a.hw != b.hw {
            return Err(format!(
                "`{name}` adds {}×{:?} to {}×{:?}",
                a.channels, a.hw, b.channels, b.hw
            ));
        }
        self.node("Add", name, &[&a.name, &b.name], name, vec![]);
        Ok(Value {
            name: name.to_string(),
            ..a.clone()
        })
    }

    /// The backbone of a MobileNetV2: per block, its convolutions with ReLU6 after all but a
    /// block's projection, and the skip connection where torchvision has one (stride 1, as many
    /// channels out as in).
    fn mobilenet_v2(
        &mut self,
        mut x: Value,
        blocks: &[String],
        order: &[String],
    ) -> Result<Value, String> {
        for block in blocks {
            let prefix = format!("{block}.");
            let paths: Vec<&String> = order.iter().filter(|p| p.starts_with(&prefix)).collect();
            match paths.as_slice() {
                [] => return Err(format!("block `{block}` has no convolution")),
                [only] => {
                    let y = self.conv(&x, only)?;
                    x = self.apply(y, &format!("{only}.relu6"), Activation::ReLU6);
                }
                [inner @ .., project] => {
                    let input = x.clone();
                    let unit_stride = paths
                        .iter()
                        .all(|p| self.convs.get(p.as_str()).is_some_and(|c| c.stride == 1));
                    let mut h = input.clone();
                    for path in inner {
                        let y = self.conv(&h, path)?;
                        h = self.apply(y, &format!("{path}.relu6"), Activation::ReLU6);
                    }
                    h = self.conv(&h, project)?;
                    x = if unit_stride && h.channels == input.channels {
                        self.add(&h, &input, &format!("{block}.add"))?
                    } else {
                        h
                    };
                }
            }
        }
        Ok(x)
    }

    /// The backbone of a ResNet: stem convolution, ReLU and max pool, then basic blocks
    /// (`relu(conv2(relu(conv1(x))) + downsample(x))`).
    fn resnet(&mut self, x: Value, blocks: &[String], order: &[String]) -> Result<Value, String> {
        let stem = self.conv(&x, "conv1")?;
        let stem = self.apply(stem, "relu", Activation::ReLU);
        let [h, w] = stem.hw;
        let pooled = |n: usize| (n + 2).checked_sub(3).map(|v| v / 2 + 1);
        let (Some(ph), Some(pw)) = (pooled(h), pooled(w)) else {
            return Err(format!(
                "the max pool gets a {h}×{w} input: the image is too small"
            ));
        };
        self.node(
            "MaxPool",
            "maxpool",
            &[&stem.name],
            "maxpool",
            vec![
                Attr::Ints("kernel_shape", vec![3, 3]),
                Attr::Ints("strides", vec![2, 2]),
                Attr::Ints("pads", vec![1, 1, 1, 1]),
                Attr::Ints("dilations", vec![1, 1]),
                Attr::Int("ceil_mode", 0),
            ],
        );
        let mut x = Value {
            name: "maxpool".to_string(),
            hw: [ph, pw],
            ..stem
        };
        for block in blocks {
            let prefix = format!("{block}.");
            if !order.iter().any(|p| p.starts_with(&prefix)) {
                continue; // `conv1` and `bn1`: the stem, done above.
            }
            let h = self.conv(&x, &format!("{block}.conv1"))?;
            let h = self.apply(h, &format!("{block}.conv1.relu"), Activation::ReLU);
            let h = self.conv(&h, &format!("{block}.conv2"))?;
            let downsample = format!("{block}.downsample.0");
            let identity = if order.contains(&downsample) {
                self.conv(&x, &downsample)?
            } else {
                x
            };
            let sum = self.add(&h, &identity, &format!("{block}.add"))?;
            x = self.apply(sum, &format!("{block}.relu"), Activation::ReLU);
        }
        Ok(x)
    }

    /// `GlobalAveragePool` → `Flatten` → one `Gemm` per classifier layer (with its activation
    /// after the hidden ones), the last one into [`OUTPUT_NAME`].
    fn classifier(&mut self, x: Value, layers: &[ClassifierLayer]) -> Result<(), String> {
        self.node(
            "GlobalAveragePool",
            "avgpool",
            &[&x.name],
            "avgpool",
            vec![],
        );
        self.node(
            "Flatten",
            "flatten",
            &["avgpool"],
            "flatten",
            vec![Attr::Int("axis", 1)],
        );
        let mut x = Value {
            name: "flatten".into(),
            hw: [1, 1],
            ..x
        };
        for (i, layer) in layers.iter().enumerate() {
            let path = layer.path;
            let outputs = layer.outputs;
            if layer.weight.len() != outputs * x.channels || layer.bias.len() != outputs {
                return Err(format!(
                    "the classifier layer `{path}` does not map {} features to {outputs}",
                    x.channels
                ));
            }
            let (w, b) = (format!("{path}.weight"), format!("{path}.bias"));
            self.parameter(&w, &[outputs, x.channels], &layer.weight);
            self.parameter(&b, &[outputs], &layer.bias);
            let last = i + 1 == layers.len();
            let output = if last { OUTPUT_NAME } else { path };
            self.node(
                "Gemm",
                path,
                &[&x.name, &w, &b],
                output,
                vec![Attr::Int("transB", 1)],
            );
            x = Value {
                name: output.to_string(),
                channels: outputs,
                hw: [1, 1],
            };
            if let Some(activation) = layer.activation.filter(|_| !last) {
                x = self.apply(x, &format!("{path}.act"), activation);
            }
        }
        Ok(())
    }
}

/// A linear layer of the classifier on the host: a hidden one (with its activation) or the head.
struct ClassifierLayer {
    path: &'static str,
    weight: Vec<f32>,
    bias: Vec<f32>,
    outputs: usize,
    activation: Option<Activation>,
}

/// A float32 graph input or output `[batch, dims...]` with a symbolic batch dimension.
fn value_info(name: &str, dims: &[usize]) -> ValueInfoProto {
    let mut v = ValueInfoProto::new();
    v.name = name.to_string();
    let tensor = v.type_.mut_or_insert_default().mut_tensor_type();
    tensor.elem_type = DT_FLOAT;
    let shape = tensor.shape.mut_or_insert_default();
    push_default(&mut shape.dim).set_dim_param(BATCH_DIM.to_string());
    for &d in dims {
        push_default(&mut shape.dim).set_dim_value(d as i64);
    }
    v
}

/// Appends a default element to `v` and returns it (for protobuf types onnx-ir does not name).
fn push_default<T: Default>(v: &mut Vec<T>) -> &mut T {
    v.push(T::default());
    let last = v.len() - 1;
    &mut v[last]
}
