//! Stripping an ONNX file of its meaningful names: a tool for tests and fuzzing (a loader must
//! not depend on torchvision's names), which rewrites the protobuf rather than reading it.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use protobuf::Message;

use super::OnnxError;
use super::guard;
use super::validate::decode;

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
