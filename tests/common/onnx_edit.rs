//! Rewriting ONNX files for tests: the BatchNorm-folded variant of a file that keeps its
//! BatchNorms, as torch's exporter makes by default (`do_constant_folding` in eval mode).

use std::collections::HashMap;

use onnx_ir::{ModelProto, TensorProto};
use protobuf::Message;

/// The float32 values of an initializer (`float_data` or little-endian `raw_data`).
fn values(t: &TensorProto) -> Vec<f32> {
    if !t.float_data.is_empty() {
        return t.float_data.clone();
    }
    t.raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn tensor(name: &str, dims: &[i64], data: Vec<f32>) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.dims = dims.to_vec();
    t.data_type = 1; // FLOAT
    t.float_data = data;
    t
}

/// `bytes` with every `BatchNormalization` that follows a `Conv` folded into it: the kernel
/// scaled by `γ / √(var + ε)` per output channel, the bias `(b − mean) · scale + β`, the
/// BatchNorm node removed. Initializers reached through `Identity` nodes (torch's exporter
/// de-duplicates equal tensors that way) are followed. Panics on a file it cannot fold.
pub fn fold_batch_norms(bytes: &[u8]) -> Vec<u8> {
    let mut model = ModelProto::parse_from_bytes(bytes).expect("an ONNX model");
    let graph = model.graph.as_mut().expect("a graph");
    let mut by_name: HashMap<String, TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    for node in &graph.node {
        if node.op_type == "Identity"
            && let Some(t) = by_name.get(&node.input[0]).cloned()
        {
            by_name.insert(node.output[0].clone(), t);
        }
    }
    let producer: HashMap<String, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.clone(), i)))
        .collect();
    let mut removed = Vec::new();
    // (Conv node, folded weight, folded bias, the BatchNorm's output it now produces)
    let mut rewires: Vec<(usize, String, String, String)> = Vec::new();
    let mut new_tensors = Vec::new();
    for (i, node) in graph.node.iter().enumerate() {
        if node.op_type != "BatchNormalization" {
            continue;
        }
        let Some(&conv) = producer.get(&node.input[0]) else {
            continue;
        };
        let conv_node = &graph.node[conv];
        if conv_node.op_type != "Conv" {
            continue;
        }
        let epsilon = node
            .attribute
            .iter()
            .find(|a| a.name == "epsilon")
            .map_or(1e-5, |a| a.f);
        let get = |name: &str| values(by_name.get(name).expect("a BatchNorm initializer"));
        let (gamma, beta, mean, var) = (
            get(&node.input[1]),
            get(&node.input[2]),
            get(&node.input[3]),
            get(&node.input[4]),
        );
        let weight = by_name.get(&conv_node.input[1]).expect("a Conv weight");
        let mut kernel = values(weight);
        let out = gamma.len();
        let per_channel = kernel.len() / out;
        let bias = conv_node
            .input
            .get(2)
            .map(|b| values(by_name.get(b).expect("a Conv bias")))
            .unwrap_or_else(|| vec![0.0; out]);
        let mut folded_bias = Vec::with_capacity(out);
        for c in 0..out {
            let scale = gamma[c] / (var[c] + epsilon).sqrt();
            for v in &mut kernel[c * per_channel..(c + 1) * per_channel] {
                *v *= scale;
            }
            folded_bias.push((bias[c] - mean[c]) * scale + beta[c]);
        }
        // The kernel keeps its name (torchvision's key, where the file has them): the folded
        // file still loads by name. The bias is named after it.
        let w_name = conv_node.input[1].clone();
        let b_name = match w_name.strip_suffix(".weight") {
            Some(stem) => format!("{stem}.bias"),
            None => format!("{w_name}.bias"),
        };
        new_tensors.push(tensor(&w_name, &weight.dims, kernel));
        new_tensors.push(tensor(&b_name, &[out as i64], folded_bias));
        rewires.push((conv, w_name, b_name, node.output[0].clone()));
        removed.push(i);
    }
    for (conv, weight, bias, output) in rewires {
        let node = &mut graph.node[conv];
        node.input.truncate(1);
        node.input.extend([weight, bias]);
        node.output[0] = output;
    }
    let mut index = 0;
    graph.node.retain(|_| {
        index += 1;
        !removed.contains(&(index - 1))
    });
    let replaced: Vec<String> = new_tensors.iter().map(|t| t.name.clone()).collect();
    graph.initializer.retain(|t| !replaced.contains(&t.name));
    graph.initializer.extend(new_tensors);
    model.write_to_bytes().expect("re-encoding")
}
