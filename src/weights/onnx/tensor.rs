//! Decoding tensors: ONNX element types and storage layouts (typed fields or little-endian raw
//! bytes) turned into `f32` weights or `i64` shapes, with every length and size checked.

use std::path::Path;

use onnx_ir::TensorProto;

use super::graph::{Const, ConstValue};
use super::{FloatType, OnnxError, OnnxTensor};

/// Decodes a constant to f32 (float16, bfloat16 and float64 are converted).
pub(super) fn to_f32(c: &Const, path: &Path) -> Result<OnnxTensor, OnnxError> {
    let bad = |reason: String| OnnxError::BadTensor {
        path: path.to_path_buf(),
        tensor: c.name.clone(),
        reason,
    };
    let (shape, data, source_dtype) = match &c.value {
        ConstValue::Floats(shape, v) => (shape.clone(), v.clone(), FloatType::F32),
        ConstValue::Ints(_) => {
            return Err(OnnxError::UnsupportedDtype {
                path: path.to_path_buf(),
                tensor: c.name.clone(),
                dtype: "INT64".to_string(),
            });
        }
        ConstValue::Tensor(t) => {
            let (shape, n) = tensor_shape(t).map_err(bad)?;
            check_stored_inline(t).map_err(bad)?;
            let raw: &[u8] = &t.raw_data;
            let (data, dtype) = match t.data_type {
                DT_FLOAT => (
                    if raw.is_empty() {
                        t.float_data.clone()
                    } else {
                        le_chunks::<4>(raw, n)
                            .map_err(bad)?
                            .map(f32::from_le_bytes)
                            .collect()
                    },
                    FloatType::F32,
                ),
                DT_DOUBLE => (
                    if raw.is_empty() {
                        t.double_data.iter().map(|&v| v as f32).collect()
                    } else {
                        le_chunks::<8>(raw, n)
                            .map_err(bad)?
                            .map(|b| f64::from_le_bytes(b) as f32)
                            .collect()
                    },
                    FloatType::F64,
                ),
                DT_FLOAT16 | DT_BFLOAT16 => {
                    let bits: Vec<u16> = if raw.is_empty() {
                        t.int32_data.iter().map(|&v| v as u16).collect()
                    } else {
                        le_chunks::<2>(raw, n)
                            .map_err(bad)?
                            .map(u16::from_le_bytes)
                            .collect()
                    };
                    if t.data_type == DT_FLOAT16 {
                        (bits.into_iter().map(f16_to_f32).collect(), FloatType::F16)
                    } else {
                        (
                            bits.into_iter()
                                .map(|b| f32::from_bits(u32::from(b) << 16))
                                .collect(),
                            FloatType::BF16,
                        )
                    }
                }
                other => {
                    return Err(OnnxError::UnsupportedDtype {
                        path: path.to_path_buf(),
                        tensor: c.name.clone(),
                        dtype: dtype_name(other),
                    });
                }
            };
            (shape, data, dtype)
        }
    };
    let expected: usize = shape.iter().product();
    if data.len() != expected {
        return Err(bad(format!(
            "shape {shape:?} needs {expected} values, the file stores {}",
            data.len()
        )));
    }
    Ok(OnnxTensor {
        name: c.name.clone(),
        shape,
        data,
        source_dtype,
    })
}

/// Decodes an integer constant (INT64 or INT32).
pub(super) fn to_i64(c: &Const, path: &Path) -> Result<Vec<i64>, OnnxError> {
    let bad = |reason: String| OnnxError::BadTensor {
        path: path.to_path_buf(),
        tensor: c.name.clone(),
        reason,
    };
    match &c.value {
        ConstValue::Ints(v) => Ok(v.clone()),
        ConstValue::Floats(..) => Err(OnnxError::UnsupportedDtype {
            path: path.to_path_buf(),
            tensor: c.name.clone(),
            dtype: "FLOAT (an integer tensor was expected)".to_string(),
        }),
        ConstValue::Tensor(t) => {
            let (_, n) = tensor_shape(t).map_err(bad)?;
            check_stored_inline(t).map_err(bad)?;
            let raw: &[u8] = &t.raw_data;
            let v: Vec<i64> = match t.data_type {
                DT_INT64 if raw.is_empty() => t.int64_data.clone(),
                DT_INT64 => le_chunks::<8>(raw, n)
                    .map_err(bad)?
                    .map(i64::from_le_bytes)
                    .collect(),
                DT_INT32 if raw.is_empty() => t.int32_data.iter().map(|&v| v.into()).collect(),
                DT_INT32 => le_chunks::<4>(raw, n)
                    .map_err(bad)?
                    .map(|b| i32::from_le_bytes(b).into())
                    .collect(),
                other => {
                    return Err(OnnxError::UnsupportedDtype {
                        path: path.to_path_buf(),
                        tensor: c.name.clone(),
                        dtype: format!("{} (an integer tensor was expected)", dtype_name(other)),
                    });
                }
            };
            if v.len() != n {
                return Err(bad(format!(
                    "shape needs {n} values, the file stores {}",
                    v.len()
                )));
            }
            Ok(v)
        }
    }
}

/// ONNX `TensorProto.DataType` values of the element types decoded here.
const DT_FLOAT: i32 = 1;
const DT_INT32: i32 = 6;
const DT_INT64: i32 = 7;
const DT_FLOAT16: i32 = 10;
const DT_DOUBLE: i32 = 11;
const DT_BFLOAT16: i32 = 16;

fn dtype_name(dt: i32) -> String {
    let name = match dt {
        0 => "UNDEFINED",
        1 => "FLOAT",
        2 => "UINT8",
        3 => "INT8",
        4 => "UINT16",
        5 => "INT16",
        6 => "INT32",
        7 => "INT64",
        8 => "STRING",
        9 => "BOOL",
        10 => "FLOAT16",
        11 => "DOUBLE",
        12 => "UINT32",
        13 => "UINT64",
        14 => "COMPLEX64",
        15 => "COMPLEX128",
        16 => "BFLOAT16",
        17..=20 => "FLOAT8",
        21 => "UINT4",
        22 => "INT4",
        23 => "FLOAT4E2M1",
        _ => return format!("unknown ({dt})"),
    };
    name.to_string()
}

/// The shape of a tensor and its element count, checked for negative dims and overflow.
fn tensor_shape(t: &TensorProto) -> Result<(Vec<usize>, usize), String> {
    let mut shape = Vec::with_capacity(t.dims.len());
    let mut n: usize = 1;
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| format!("negative dimension in {:?}", t.dims))?;
        n = n
            .checked_mul(d)
            .ok_or_else(|| format!("shape {:?} is too large", t.dims))?;
        shape.push(d);
    }
    Ok((shape, n))
}

/// Rejects tensors whose data lives in an external file.
fn check_stored_inline(t: &TensorProto) -> Result<(), String> {
    if t.data_location.value() == 1 || !t.external_data.is_empty() {
        return Err(
            "its data is stored in an external file, which is not supported; save the model \
             with its weights inside the .onnx file"
                .to_string(),
        );
    }
    Ok(())
}

/// Splits little-endian raw data into `n` chunks of `N` bytes, checking the length.
fn le_chunks<const N: usize>(
    raw: &[u8],
    n: usize,
) -> Result<impl Iterator<Item = [u8; N]> + '_, String> {
    if Some(raw.len()) != n.checked_mul(N) {
        return Err(format!(
            "{} bytes of raw data for {n} elements of {N} bytes",
            raw.len()
        ));
    }
    Ok(raw.chunks_exact(N).map(|c| {
        let mut b = [0u8; N];
        b.copy_from_slice(c);
        b
    }))
}

/// IEEE 754 half precision to single precision.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: m * 2^-24.
            let v = m as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
    }
}
