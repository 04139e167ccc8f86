//! The cross-check against onnx-ir (burn-import's ONNX front end): its importer must accept the
//! model and see the same convolutions and batch norms, with the same weights, as the reader.

use super::{ConvLayer, FloatType, OnnxError, OnnxIrSummary, OnnxModel};

/// Imports the model with onnx-ir and checks it against the layers read from the protobuf.
pub(super) fn verify_with_onnx_ir(
    bytes: &[u8],
    model: &OnnxModel,
) -> Result<OnnxIrSummary, OnnxError> {
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
        *summary
            .node_counts
            .entry(node_kind(node).to_string())
            .or_insert(0) += 1;
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

/// The key of `node` in [`OnnxIrSummary::node_counts`]: its [`onnx_ir::Node`] variant's name.
///
/// onnx-ir has no public way to name a node's kind (its `NodeType` is crate-private), so the
/// variants are matched by type. Those listed are every kind onnx-ir makes of the operators the
/// reader accepts (it only runs on graphs the reader accepted); any other counts as `other`.
fn node_kind(node: &onnx_ir::Node) -> &'static str {
    /// Matches each variant, named by its identifier so that name and variant cannot drift.
    macro_rules! by_variant {
        ($($variant:ident)*) => {
            match node {
                $(onnx_ir::Node::$variant(_) => stringify!($variant),)*
                _ => "other",
            }
        };
    }
    by_variant! {
        Conv2d BatchNormalization Linear Gemm MatMul Constant Relu HardSwish HardSigmoid Sigmoid
        Clip Add Sub Mul Div
        MaxPool2d AveragePool2d GlobalAveragePool ReduceMean Flatten Reshape Squeeze Unsqueeze
        Transpose Pad Concat Identity Dropout Softmax Shape Gather Cast Slice ConstantOfShape
    }
}
