//! Decoding and checking the raw protobuf before anything else reads it: onnx-ir unwraps and
//! asserts on malformed enums and attribute types, so those are refused here, as errors.

use std::path::Path;

use onnx_ir::{ModelProto, TensorProto};
use protobuf::Message;

use super::OnnxError;

/// Decodes and sanity-checks the protobuf.
pub(super) fn decode(bytes: &[u8], path: &Path) -> Result<ModelProto, OnnxError> {
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
const ATTR_SPARSE_TENSOR: i32 = 11;

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
/// whose type is not the one their operator schema gives, malformed `Constant` nodes; in nested
/// graphs too.
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
        if node.op_type == "Constant" {
            let attributes: Vec<(&str, i32)> = node
                .attribute
                .iter()
                .map(|a| (a.name.as_str(), a.type_.value()))
                .collect();
            check_constant(
                index,
                &node.name,
                &node.input,
                &node.output,
                &attributes,
                path,
            )?;
        }
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
                && !(a.name == "value" && found == ATTR_SPARSE_TENSOR)
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

/// The `Constant` attributes onnx-ir turns into data: one of them, and nothing else (also the
/// operator's schema in [`super::ops::schema_attributes`]).
pub(super) const CONSTANT_VALUE_ATTRS: [&str; 5] = [
    "value",
    "value_float",
    "value_floats",
    "value_int",
    "value_ints",
];

/// Refuses a `Constant` node that is not what the ONNX schema allows and onnx-ir's constant
/// lifting assumes (it panics otherwise, at the node that reads the constant): no inputs, one
/// output, and exactly one numeric value attribute (string and sparse values are not weights).
/// (onnx-ir keeps `NodeProto` private, so the node comes in parts: its index and name, inputs,
/// outputs and `(name, type)` of each attribute.)
fn check_constant(
    index: usize,
    name: &str,
    inputs: &[String],
    outputs: &[String],
    attributes: &[(&str, i32)],
    path: &Path,
) -> Result<(), OnnxError> {
    let invalid = |reason: String| OnnxError::NotAModel {
        path: path.to_path_buf(),
        reason: format!("Constant node #{index} (`{name}`) {reason}"),
    };
    if !inputs.is_empty() {
        return Err(invalid(format!(
            "has {} input(s) ({}); the ONNX Constant operator takes none",
            inputs.len(),
            inputs.join(", ")
        )));
    }
    if outputs.len() != 1 || outputs[0].is_empty() {
        return Err(invalid(format!(
            "has {} output(s); a Constant has exactly one, named",
            outputs.iter().filter(|o| !o.is_empty()).count()
        )));
    }
    match attributes {
        [(attr, kind)] if CONSTANT_VALUE_ATTRS.contains(attr) && *kind != ATTR_SPARSE_TENSOR => {
            Ok(())
        }
        _ => Err(invalid(format!(
            "has attributes [{}]; a Constant holding weights has exactly one of {}, not a \
             string or sparse value",
            attributes
                .iter()
                .map(|(attr, _)| *attr)
                .collect::<Vec<_>>()
                .join(", "),
            CONSTANT_VALUE_ATTRS.join(", ")
        ))),
    }
}

/// The version of the default (`ai.onnx`) operator set, if the model imports it.
pub(super) fn default_opset(model: &ModelProto) -> Option<i64> {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
}
