//! The reader's error type: every way an ONNX file can fail to read, each naming the file.
//! Kept apart so that every stage (validation, graph walk, tensor decoding, onnx-ir) shares it.

use std::path::{Path, PathBuf};

/// Why an ONNX file could not be read into an [`OnnxModel`](super::OnnxModel).
///
/// Every message starts with the path of the file (or the label given to
/// [`read_onnx_bytes`](super::read_onnx_bytes)) and says what is wrong.
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
         Clip, HardSwish, Sigmoid, Add, Mul, pools, ...) are supported",
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
