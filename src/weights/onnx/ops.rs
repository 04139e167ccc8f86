//! Per-operator decoding for the graph walk: the attributes and weights of `Conv`, pools,
//! `BatchNormalization`, `Gemm` and `MatMul` (+ bias `Add`) checked and normalised to the
//! layer types, apart from the walk so that each operator's rules read on their own.

use super::graph::{GraphReader, Node};
use super::tensor::to_f32;
use super::validate::CONSTANT_VALUE_ATTRS;
use super::{
    AutoPad, BatchNormLayer, ConvLayer, LayerKind, LinearLayer, LinearSource, OnnxError, OnnxLayer,
    OnnxTensor, PoolLayer,
};

/// The attributes the ONNX schema gives each operator the reader supports (within the opsets
/// onnx-ir 0.21 reads), `None` for operators it does not support. onnx-ir's importers panic on
/// an attribute they do not expect (`Config extraction failed`), so any other is refused first.
pub(super) fn schema_attributes(op_type: &str) -> Option<&'static [&'static str]> {
    const POOL: &[&str] = &[
        "auto_pad",
        "ceil_mode",
        "count_include_pad",
        "dilations",
        "kernel_shape",
        "pads",
        "storage_order",
        "strides",
    ];
    Some(match op_type {
        "Conv" => &[
            "auto_pad",
            "dilations",
            "group",
            "kernel_shape",
            "pads",
            "strides",
        ],
        "BatchNormalization" => &[
            "epsilon",
            "momentum",
            "spatial",
            "consumed_inputs",
            "is_test",
            "training_mode",
        ],
        "Gemm" => &["alpha", "beta", "transA", "transB"],
        "HardSigmoid" => &["alpha", "beta"],
        "Clip" => &["min", "max"],
        // `storage_order` is MaxPool's, `count_include_pad` AveragePool's: one list for both is
        // looser than the schema, and both are read only by their own operator.
        "MaxPool" | "AveragePool" => POOL,
        "ReduceMean" => &["axes", "keepdims", "noop_with_empty_axes"],
        "Flatten" | "Concat" | "Softmax" | "Gather" => &["axis"],
        "Reshape" => &["allowzero"],
        "Squeeze" | "Unsqueeze" => &["axes"],
        "Transpose" => &["perm"],
        "Pad" => &["mode", "pads", "value"],
        "Dropout" => &["ratio", "seed"],
        "Shape" => &["start", "end"],
        "Cast" => &["to", "saturate"],
        "Slice" => &["starts", "ends", "axes"],
        "ConstantOfShape" => &["value"],
        "Constant" => &CONSTANT_VALUE_ATTRS,
        "MatMul" | "Add" | "Sub" | "Mul" | "Div" | "Relu" | "HardSwish" | "Sigmoid"
        | "GlobalAveragePool" | "Identity" => &[],
        _ => return None,
    })
}

impl GraphReader<'_> {
    pub(super) fn conv(&self, node: &Node) -> Result<ConvLayer, OnnxError> {
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

    pub(super) fn pool(&self, node: &Node) -> Result<PoolLayer, OnnxError> {
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

    pub(super) fn batch_norm(&self, node: &Node) -> Result<BatchNormLayer, OnnxError> {
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

    pub(super) fn gemm(&self, node: &Node) -> Result<LinearLayer, OnnxError> {
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

    pub(super) fn matmul(&self, node: &Node) -> Result<LinearLayer, OnnxError> {
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
    pub(super) fn fuse_bias(
        &self,
        node: &Node,
        layers: &mut [OnnxLayer],
    ) -> Result<bool, OnnxError> {
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
        let bias = to_f32(c, self.path)?;
        let squeezed: Vec<usize> = bias.shape.iter().copied().filter(|&d| d != 1).collect();
        if squeezed != [linear.out_features] && bias.len() != 1 {
            return Ok(false);
        }
        linear.bias = Some(self.linear_bias(node, bias, linear.out_features)?);
        linear.source = LinearSource::MatMulAdd;
        last.outputs = node.outputs.clone();
        Ok(true)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::onnx::FloatType;

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
