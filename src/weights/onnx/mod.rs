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
//!
//! # Layout
//!
//! One private file per concern, their public items re-exported here: `error` and `model`
//! (what callers see), `validate` (the raw protobuf, checked before anything reads it), `graph`
//! and `ops` (the walk, the per-operator decoding), `tensor` (element types), `onnx_ir_check`
//! and `anonymize`.

mod anonymize;
mod error;
mod graph;
mod model;
mod onnx_ir_check;
mod ops;
mod tensor;
mod validate;

use std::path::Path;

pub use anonymize::anonymize_names;
pub use error::OnnxError;
pub use model::{
    AutoPad, BatchNormLayer, ConvLayer, FloatType, LayerKind, LinearLayer, LinearSource,
    OnnxIrSummary, OnnxLayer, OnnxModel, OnnxTensor, PoolLayer,
};

use graph::GraphReader;
use onnx_ir_check::verify_with_onnx_ir;
use validate::decode;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_errors_naming_the_file() {
        let path = Path::new("some/model.onnx");
        let err = guard::<()>(path, || panic!("boom")).unwrap_err();
        assert!(matches!(&err, OnnxError::Panicked { message, .. } if message == "boom"));
        assert!(err.to_string().starts_with("some/model.onnx: "), "{err}");
    }
}
