//! The graph walk: the protobuf's nodes, in file order, turned into layers, with the constants
//! (initializers, `Constant` nodes, `Identity` of a constant) tracked by value name and every
//! run-time input checked to be produced before it is read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use onnx_ir::{ModelProto, TensorProto};

use super::ops::schema_attributes;
use super::tensor::{to_f32, to_i64};
use super::validate::default_opset;
use super::{LayerKind, OnnxError, OnnxLayer, OnnxModel, OnnxTensor};

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
pub(super) struct Node {
    index: usize,
    name: String,
    op_type: String,
    domain: String,
    inputs: Vec<String>,
    pub(super) outputs: Vec<String>,
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

    pub(super) fn int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).map_or(default, |a| a.i)
    }

    pub(super) fn float(&self, name: &str, default: f32) -> f32 {
        self.attr(name).map_or(default, |a| a.f)
    }

    pub(super) fn ints(&self, name: &str) -> Option<&[i64]> {
        self.attr(name).map(|a| a.ints.as_slice())
    }

    pub(super) fn string(&self, name: &str) -> Option<&str> {
        self.attr(name).map(|a| a.s.as_str())
    }

    /// The input at `i`, `None` when absent or empty (an omitted optional input).
    pub(super) fn input(&self, i: usize) -> Option<&str> {
        self.inputs
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// A constant value of the graph.
#[derive(Debug, Clone)]
pub(super) enum ConstValue {
    /// A tensor (initializer or `Constant`'s `value`).
    Tensor(Box<TensorProto>),
    /// `value_float(s)`.
    Floats(Vec<usize>, Vec<f32>),
    /// `value_int(s)`.
    Ints(Vec<i64>),
}

/// A named constant.
#[derive(Debug, Clone)]
pub(super) struct Const {
    /// The name reported for it (initializer name, or `Constant` output name).
    pub(super) name: String,
    pub(super) value: ConstValue,
}

pub(super) struct GraphReader<'a> {
    pub(super) path: &'a Path,
    model: &'a ModelProto,
    nodes: Vec<Node>,
    /// Constants by value name (initializers, `Constant` outputs, `Identity` of a constant).
    pub(super) consts: HashMap<String, Const>,
    /// Run-time values seen so far (graph inputs and outputs of earlier nodes).
    dynamic: HashSet<String>,
    /// How many times each value is read (node inputs and graph outputs).
    pub(super) uses: HashMap<String, usize>,
}

impl<'a> GraphReader<'a> {
    pub(super) fn new(model: &'a ModelProto, path: &'a Path) -> Result<Self, OnnxError> {
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

    pub(super) fn read(mut self) -> Result<OnnxModel, OnnxError> {
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
        if let Some(allowed) = schema_attributes(&node.op_type) {
            let mut names: Vec<&String> = node.attrs.keys().collect();
            names.sort();
            if let Some(unknown) = names.into_iter().find(|n| !allowed.contains(&n.as_str())) {
                return Err(self.unsupported(
                    node,
                    format!(
                        "attribute `{unknown}`, which the ONNX schema does not give {} (it takes: \
                         {})",
                        node.op_type,
                        if allowed.is_empty() {
                            "none".to_string()
                        } else {
                            allowed.join(", ")
                        }
                    ),
                ));
            }
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
            "HardSwish" => LayerKind::HardSwish,
            "HardSigmoid" => LayerKind::HardSigmoid {
                alpha: node.float("alpha", 0.2),
                beta: node.float("beta", 0.5),
            },
            "Sigmoid" => LayerKind::Sigmoid,
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
            "Flatten" => {
                // Classifiers flatten `[N, C, 1, 1]` into `[N, C]`; onnx-ir indexes the input's
                // shape by the axis unchecked (a panic for an axis past its rank).
                let axis = node.int("axis", 1);
                if axis != 1 {
                    return Err(self.unsupported(
                        node,
                        format!(
                            "axis {axis}; only axis 1 (`[N, C, ...]` into `[N, C * ...]`, as \
                             image classifiers flatten their features) is supported"
                        ),
                    ));
                }
                LayerKind::Flatten { axis }
            }
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

    pub(super) fn unsupported(&self, node: &Node, reason: impl Into<String>) -> OnnxError {
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
    pub(super) fn weight(
        &self,
        node: &Node,
        i: usize,
        what: &str,
    ) -> Result<OnnxTensor, OnnxError> {
        let c = self.required_const(node, i, what)?;
        to_f32(c, self.path)
    }

    /// The f32 tensor at optional input `i`: `None` when absent, an error when not constant.
    pub(super) fn optional_weight(
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
        let t = to_f32(c, self.path)?;
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
            Some(c) => to_i64(c, self.path).map(Some),
            None => Ok(None),
        }
    }

    /// The constant operand of a binary element-wise node, if any.
    fn binary_constant(&self, node: &Node) -> Result<Option<OnnxTensor>, OnnxError> {
        for i in 0..2 {
            if let Some(c) = node.input(i).and_then(|n| self.consts.get(n)) {
                return to_f32(c, self.path).map(Some);
            }
        }
        Ok(None)
    }
}

fn qualified_op(node: &Node) -> String {
    if node.domain.is_empty() || node.domain == "ai.onnx" {
        node.op_type.clone()
    } else {
        format!("{}.{}", node.domain, node.op_type)
    }
}
