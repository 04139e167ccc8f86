//! Tests of `weights::onnx`: reading ONNX files into typed, execution-ordered layers.
//!
//! The tests named `shared_*` read the real files under `../shared` (`fixtures/onnx/*.onnx` and
//! `weights/mobilenet_v2_tf_imagenet.onnx`): they skip when `../shared` is absent and fail when
//! it is absent under `CI=true` (see `common::shared`). Edited copies of those files (renamed,
//! truncated, re-typed, rewired) are built in memory from their protobuf.

mod common;

use std::path::{Path, PathBuf};

use onnx_ir::{ModelProto, TensorProto};
use protobuf::Message;
use transfer_vision::weights::onnx::{
    AutoPad, FloatType, LayerKind, LinearSource, OnnxError, OnnxModel, ReadOptions,
    anonymize_names, read_onnx, read_onnx_bytes, read_onnx_bytes_with,
};

const MOBILENET: &str = "fixtures/onnx/mobilenet_v2.onnx";
const MOBILENET_FUSED: &str = "fixtures/onnx/mobilenet_v2_fused.onnx";
const RESNET18: &str = "fixtures/onnx/resnet18.onnx";
const MOBILENET_TF: &str = "weights/mobilenet_v2_tf_imagenet.onnx";

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

fn read(path: &Path) -> OnnxModel {
    read_onnx(path).unwrap_or_else(|e| panic!("{e}"))
}

fn decode(path: &Path) -> ModelProto {
    ModelProto::parse_from_bytes(&std::fs::read(path).expect("read fixture")).expect("decode")
}

fn encode(model: &ModelProto) -> Vec<u8> {
    model.write_to_bytes().expect("encode")
}

/// Number of learned parameters: conv weights and biases, BatchNorm scale and bias, linear
/// weights and biases (running statistics are not parameters).
fn parameter_count(model: &OnnxModel) -> usize {
    model
        .layers
        .iter()
        .map(|l| match &l.kind {
            LayerKind::Conv(c) => c.weight.len() + c.bias.as_ref().map_or(0, |b| b.len()),
            LayerKind::BatchNorm(b) => b.scale.len() + b.bias.len(),
            LayerKind::Linear(x) => x.weight.len() + x.bias.as_ref().map_or(0, |b| b.len()),
            _ => 0,
        })
        .sum()
}

fn count(model: &OnnxModel, kind: &str) -> usize {
    model.count(kind)
}

/// The layers with every name removed (tensor, node and value names), for comparisons.
fn without_names(model: &OnnxModel) -> Vec<LayerKind> {
    model
        .layers
        .iter()
        .map(|l| {
            let mut kind = l.kind.clone();
            let clear = |t: &mut transfer_vision::weights::onnx::OnnxTensor| t.name.clear();
            match &mut kind {
                LayerKind::Conv(c) => {
                    clear(&mut c.weight);
                    c.bias.as_mut().map(clear);
                }
                LayerKind::BatchNorm(b) => {
                    for t in [&mut b.scale, &mut b.bias, &mut b.mean, &mut b.var] {
                        clear(t);
                    }
                }
                LayerKind::Linear(x) => {
                    clear(&mut x.weight);
                    x.bias.as_mut().map(clear);
                }
                LayerKind::Add { constant }
                | LayerKind::Sub { constant }
                | LayerKind::Mul { constant }
                | LayerKind::Div { constant } => {
                    constant.as_mut().map(clear);
                }
                _ => {}
            }
            kind
        })
        .collect()
}

/// Checks that an error names the file.
fn assert_names_file(err: &OnnxError, path: &Path) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name {}: {msg}",
        path.display()
    );
    assert_eq!(err.path(), path);
}

/// A deterministic pseudo-random byte stream (xorshift).
fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

fn f32_tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.dims = dims.to_vec();
    t.data_type = 1;
    t.raw_data = data
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect::<Vec<u8>>()
        .into();
    t
}

fn f32_data(t: &TensorProto) -> Vec<f32> {
    t.raw_data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

// ------------------------------------------------------------------------------------------
// The real files in ../shared
// ------------------------------------------------------------------------------------------

#[test]
fn shared_mobilenet_v2_with_batch_norm() {
    let Some(path) = common::shared(MOBILENET) else {
        return;
    };
    let m = read(&path);
    assert_eq!(m.input_name, "input");
    assert_eq!(m.input_shape, [None, Some(3), Some(224), Some(224)]);
    assert_eq!(m.output_names, ["logits"]);
    assert_eq!(m.op_counts["Conv"], 52);
    assert_eq!(m.op_counts["BatchNormalization"], 52);
    assert_eq!(count(&m, "Conv"), 52);
    assert_eq!(count(&m, "BatchNorm"), 52);
    assert_eq!(count(&m, "Clip"), 35);
    assert_eq!(count(&m, "Add"), 10);
    assert_eq!(count(&m, "GlobalAveragePool"), 1);
    assert_eq!(count(&m, "Flatten"), 1);
    assert_eq!(count(&m, "Linear"), 1);
    assert_eq!(m.layers.len(), 52 + 52 + 35 + 10 + 3);
    // torchvision's MobileNetV2 has 3,504,872 parameters.
    assert_eq!(parameter_count(&m), 3_504_872);

    // Execution order: Conv, BatchNorm, Clip(0, 6), ...
    assert!(matches!(m.layers[0].kind, LayerKind::Conv(_)));
    assert!(matches!(m.layers[1].kind, LayerKind::BatchNorm(_)));
    assert!(
        matches!(
            m.layers[2].kind,
            LayerKind::Clip {
                min: Some(0.0),
                max: Some(6.0)
            }
        ),
        "{:?}",
        m.layers[2].kind
    );
    let LayerKind::Conv(first) = &m.layers[0].kind else {
        unreachable!()
    };
    assert_eq!(first.weight.name, "features.0.0.weight");
    assert_eq!(first.weight.shape, [32, 3, 3, 3]);
    assert_eq!(
        (first.strides, first.pads, first.group),
        ([2, 2], [1, 1, 1, 1], 1)
    );
    assert!(first.bias.is_none());
    let LayerKind::BatchNorm(bn) = &m.layers[1].kind else {
        unreachable!()
    };
    assert_eq!(
        [&bn.scale.name, &bn.bias.name, &bn.mean.name, &bn.var.name],
        [
            "features.0.1.weight",
            "features.0.1.bias",
            "features.0.1.running_mean",
            "features.0.1.running_var"
        ]
    );
    assert_eq!(bn.epsilon, 1e-5);
    assert!(bn.var.data.iter().all(|&v| v > 0.0));

    let convs: Vec<_> = m.convs().collect();
    assert_eq!(convs[1].weight.name, "features.1.conv.0.0.weight");
    assert!(convs[1].is_depthwise() && convs[1].group == 32);
    assert_eq!(convs.iter().filter(|c| c.is_depthwise()).count(), 17);
    assert!(
        convs
            .iter()
            .all(|c| c.has_symmetric_pads() && c.auto_pad == AutoPad::NotSet)
    );
    assert!(
        convs
            .iter()
            .all(|c| c.pads == if c.kernel == [3, 3] { [1; 4] } else { [0; 4] })
    );
    assert_eq!(convs.last().unwrap().weight.shape, [1280, 320, 1, 1]);

    let classifier = m.classifier().expect("classifier");
    let LayerKind::Linear(fc) = &classifier.kind else {
        panic!("{classifier:?}")
    };
    assert_eq!(fc.weight.name, "classifier.1.weight");
    assert_eq!(fc.weight.shape, [1000, 1280]);
    assert_eq!(fc.bias.as_ref().unwrap().name, "classifier.1.bias");
    assert_eq!(fc.source, LinearSource::Gemm);
    assert_eq!(m.num_classes(), Some(1000));

    // Every tensor name is a torchvision state-dict key, used once.
    let names = m.weight_names();
    assert_eq!(names.len(), 52 + 52 * 4 + 2);
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("features.") || n.starts_with("classifier."))
    );
    let unique: std::collections::HashSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len());

    // The residual Adds read two run-time values.
    let add = m
        .layers
        .iter()
        .find(|l| matches!(l.kind, LayerKind::Add { .. }))
        .unwrap();
    assert_eq!(add.inputs.len(), 2);
    assert!(matches!(add.kind, LayerKind::Add { constant: None }));

    // onnx-ir saw the same graph (its Gemm became a Linear).
    let ir = m.onnx_ir.as_ref().expect("verified with onnx-ir");
    assert_eq!(ir.node_counts["Conv2d"], 52);
    assert_eq!(ir.node_counts["BatchNormalization"], 52);
}

#[test]
fn shared_mobilenet_v2_fused_batch_norm() {
    let Some(path) = common::shared(MOBILENET_FUSED) else {
        return;
    };
    let m = read(&path);
    assert_eq!(count(&m, "Conv"), 52);
    assert_eq!(count(&m, "BatchNorm"), 0);
    assert_eq!(count(&m, "Clip"), 35);
    assert_eq!(count(&m, "Add"), 10);
    assert_eq!(count(&m, "Linear"), 1);
    // The head is ReduceMean over H, W then Reshape instead of GlobalAveragePool + Flatten.
    assert_eq!(count(&m, "GlobalAveragePool"), 0);
    let head: Vec<_> = m.layers.iter().rev().take(3).map(|l| &l.kind).collect();
    assert!(matches!(head[0], LayerKind::Linear(_)));
    assert!(matches!(head[1], LayerKind::Reshape { shape: Some(s) } if s == &[-1, 1280]));
    assert!(
        matches!(head[2], LayerKind::ReduceMean { axes: Some(a), keepdims: true } if a == &[-1, -2])
    );
    // Every conv carries the folded BatchNorm as its bias.
    for c in m.convs() {
        let bias = c.bias.as_ref().expect("folded bias");
        assert_eq!(bias.shape, [c.out_channels()]);
        assert_eq!(bias.name, format!("{}_bias", c.weight.name));
    }
    let first = m.convs().next().unwrap();
    assert_eq!(first.weight.name, "features.0.0.weight");
    assert_eq!((first.strides, first.pads), ([2, 2], [1, 1, 1, 1]));
    // The exporter wrote no classifier bias.
    let fc = m.linears().next().unwrap();
    assert_eq!(fc.weight.shape, [1000, 1280]);
    assert_eq!(fc.weight.name, "classifier.1.weight");
    assert_eq!(m.num_classes(), Some(1000));
}

#[test]
fn shared_resnet18() {
    let Some(path) = common::shared(RESNET18) else {
        return;
    };
    let m = read(&path);
    assert_eq!(count(&m, "Conv"), 20);
    assert_eq!(count(&m, "BatchNorm"), 20);
    assert_eq!(count(&m, "Relu"), 17);
    assert_eq!(count(&m, "Add"), 8);
    assert_eq!(count(&m, "MaxPool"), 1);
    assert_eq!(count(&m, "Linear"), 1);
    assert_eq!(m.op_counts["Gemm"], 1);
    // torchvision's ResNet18 has 11,689,512 parameters.
    assert_eq!(parameter_count(&m), 11_689_512);

    let LayerKind::Conv(stem) = &m.layers[0].kind else {
        panic!()
    };
    assert_eq!(stem.weight.name, "conv1.weight");
    assert_eq!(stem.weight.shape, [64, 3, 7, 7]);
    assert_eq!((stem.strides, stem.pads), ([2, 2], [3, 3, 3, 3]));
    let LayerKind::MaxPool(pool) = &m.layers[3].kind else {
        panic!("{:?}", m.layers[3])
    };
    assert_eq!(
        (pool.kernel, pool.strides, pool.pads),
        ([3, 3], [2, 2], [1, 1, 1, 1])
    );
    assert!(!pool.ceil_mode);

    // Three 1x1 stride-2 downsample convolutions.
    let downsample: Vec<_> = m.convs().filter(|c| c.kernel == [1, 1]).collect();
    assert_eq!(downsample.len(), 3);
    assert!(
        downsample
            .iter()
            .all(|c| c.strides == [2, 2] && c.pads == [0; 4])
    );
    assert_eq!(downsample[0].weight.name, "layer2.0.downsample.0.weight");

    let fc = m.linears().next().unwrap();
    assert_eq!(fc.weight.name, "fc.weight");
    assert_eq!(fc.weight.shape, [1000, 512]);
    assert_eq!((fc.in_features, fc.out_features), (512, 1000));
    assert_eq!(m.num_classes(), Some(1000));
}

#[test]
fn shared_tf_mobilenet_v2_same_padding_and_metadata() {
    let Some(path) = common::shared(MOBILENET_TF) else {
        return;
    };
    let m = read(&path);
    assert_eq!(m.opset, 17);
    assert_eq!(m.input_shape, [None, Some(3), None, None]);
    assert!(
        m.metadata["preprocessing"].contains("127.5"),
        "{:?}",
        m.metadata
    );
    assert_eq!(count(&m, "Conv"), 52);
    assert_eq!(count(&m, "BatchNorm"), 0);
    assert_eq!(count(&m, "Clip"), 35);
    assert_eq!(count(&m, "Add"), 10);
    assert_eq!(count(&m, "GlobalAveragePool"), 1);
    assert_eq!(count(&m, "Flatten"), 1);
    assert_eq!(count(&m, "Linear"), 1);
    // The README gives 3,487,818 parameters: the layers' plus the two Clip bounds (initializers
    // `relu6_min` and `relu6_max`).
    assert_eq!(parameter_count(&m) + 2, 3_487_818);
    for c in m.convs() {
        let expected = match (c.kernel, c.strides) {
            ([3, 3], [2, 2]) => [0, 0, 1, 1],
            ([3, 3], [1, 1]) => [1, 1, 1, 1],
            ([1, 1], _) => [0, 0, 0, 0],
            other => panic!("unexpected conv {other:?}"),
        };
        assert_eq!(c.pads, expected, "{}", c.weight.name);
        assert_eq!(
            c.bias.as_ref().unwrap().name,
            c.weight.name.replace("weight", "bias")
        );
    }
    assert_eq!(m.convs().filter(|c| c.pads == [0, 0, 1, 1]).count(), 5);
    assert_eq!(m.convs().next().unwrap().weight.name, "features.0.0.weight");
    assert!(m.layers.iter().all(|l| match l.kind {
        LayerKind::Clip { min, max } => min == Some(0.0) && max == Some(6.0),
        _ => true,
    }));
    let fc = m.linears().next().unwrap();
    assert_eq!(fc.weight.name, "classifier.1.weight");
    assert_eq!(fc.weight.shape, [1000, 1280]);
}

// ------------------------------------------------------------------------------------------
// Meaningless names, indirections, other encodings
// ------------------------------------------------------------------------------------------

#[test]
fn shared_anonymized_names_give_identical_layers() {
    for rel in [MOBILENET, MOBILENET_FUSED, MOBILENET_TF] {
        let Some(path) = common::shared(rel) else {
            return;
        };
        let original = read(&path);
        let bytes = anonymize_names(&std::fs::read(&path).unwrap(), &path).unwrap();
        let anon = read_onnx_bytes(&bytes, "anonymized.onnx").unwrap_or_else(|e| panic!("{e}"));
        // The same layers in the same order with the same data ...
        assert_eq!(without_names(&anon), without_names(&original), "{rel}");
        assert_eq!(anon.input_name, original.input_name);
        // ... and none of the names survived.
        for name in anon.weight_names() {
            assert!(
                name.strip_prefix('t')
                    .is_some_and(|n| n.parse::<usize>().is_ok()),
                "{rel}: {name}"
            );
        }
        assert!(anon.layers.iter().all(|l| l.node_name.starts_with('n')));
        assert!(
            anon.layers
                .iter()
                .flat_map(|l| l.inputs.iter().chain(&l.outputs))
                .all(|v| v == "input" || v == "logits" || v.starts_with('v')),
            "{rel}"
        );
        assert_ne!(anon.weight_names(), original.weight_names());
    }
}

#[test]
fn shared_weights_through_identity_and_constant_nodes() {
    let Some(path) = common::shared(RESNET18) else {
        return;
    };
    let original = read(&path);
    let mut model = decode(&path);
    let graph = model.graph.mut_or_insert_default();
    // conv1.weight through Identity: initializer `src.conv1` -> Identity -> `conv1.weight`.
    let i = graph
        .initializer
        .iter()
        .position(|t| t.name == "conv1.weight")
        .unwrap();
    graph.initializer[i].name = "src.conv1".into();
    // fc.weight as a Constant node's value.
    let j = graph
        .initializer
        .iter()
        .position(|t| t.name == "fc.weight")
        .unwrap();
    let mut fc = graph.initializer.remove(j);
    fc.name.clear();
    let mut identity = graph.node[0].clone();
    identity.clear();
    identity.op_type = "Identity".into();
    identity.name = "weight_identity".into();
    identity.input = vec!["src.conv1".into()];
    identity.output = vec!["conv1.weight".into()];
    let mut constant = identity.clone();
    constant.op_type = "Constant".into();
    constant.name = "fc_constant".into();
    constant.input.clear();
    constant.output = vec!["fc.weight".into()];
    constant.attribute.push(Default::default());
    let attr = &mut constant.attribute[0];
    attr.name = "value".into();
    attr.type_ = protobuf::EnumOrUnknown::from_i32(4); // TENSOR
    attr.t = protobuf::MessageField::some(fc);
    graph.node.insert(0, constant);
    graph.node.insert(0, identity);

    let m = read_onnx_bytes(&encode(&model), "indirect.onnx").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(without_names(&m), without_names(&original));
    assert_eq!(m.convs().next().unwrap().weight.name, "src.conv1");
    assert_eq!(m.linears().next().unwrap().weight.name, "fc.weight");
    assert_eq!(m.op_counts["Identity"], 1);
    assert_eq!(m.op_counts["Constant"], 1);
    assert_eq!(
        m.count("Identity"),
        0,
        "Identity on a weight is not a layer"
    );
}

#[test]
fn shared_matmul_add_and_gemm_variants_normalise_to_out_in() {
    let Some(path) = common::shared(MOBILENET) else {
        return;
    };
    let original = read(&path);
    let fc = original.linears().next().unwrap().clone();
    let base = decode(&path);
    let gemm_index = base
        .graph
        .node
        .iter()
        .position(|n| n.op_type == "Gemm")
        .unwrap();
    let w = base
        .graph
        .initializer
        .iter()
        .find(|t| t.name == "classifier.1.weight")
        .unwrap();
    let w = f32_data(w);
    let (rows, cols) = (1000usize, 1280usize);
    let mut wt = vec![0.0f32; w.len()]; // [in, out]
    for r in 0..rows {
        for c in 0..cols {
            wt[c * rows + r] = w[r * cols + c];
        }
    }

    // Gemm with transB = 0 and the weight stored [in, out].
    let mut model = base.clone();
    let graph = model.graph.mut_or_insert_default();
    graph
        .initializer
        .push(f32_tensor("w_in_out", &[1280, 1000], &wt));
    let gemm = &mut graph.node[gemm_index];
    gemm.input[1] = "w_in_out".into();
    gemm.attribute.retain(|a| a.name != "transB");
    let m = read_onnx_bytes(&encode(&model), "gemm_transb0.onnx").unwrap_or_else(|e| panic!("{e}"));
    let got = m.linears().next().unwrap();
    assert_eq!(got.weight.shape, [1000, 1280]);
    assert_eq!(got.weight.data, fc.weight.data);
    assert_eq!(got.weight.name, "w_in_out");

    // Gemm with alpha = 2, beta = 0.5.
    let mut model = base.clone();
    for a in model.graph.mut_or_insert_default().node[gemm_index]
        .attribute
        .iter_mut()
    {
        match a.name.as_str() {
            "alpha" => a.f = 2.0,
            "beta" => a.f = 0.5,
            _ => {}
        }
    }
    let m = read_onnx_bytes(&encode(&model), "gemm_alpha.onnx").unwrap_or_else(|e| panic!("{e}"));
    let got = m.linears().next().unwrap();
    assert!(
        got.weight
            .data
            .iter()
            .zip(&fc.weight.data)
            .all(|(a, b)| *a == 2.0 * b)
    );
    let (b0, b1) = (got.bias.as_ref().unwrap(), fc.bias.as_ref().unwrap());
    assert!(b0.data.iter().zip(&b1.data).all(|(a, b)| *a == 0.5 * b));

    // MatMul + Add instead of Gemm: one Linear layer, the Add fused in.
    let mut model = base.clone();
    let graph = model.graph.mut_or_insert_default();
    graph
        .initializer
        .push(f32_tensor("mm_weight", &[1280, 1000], &wt));
    let gemm = graph.node[gemm_index].clone();
    let mut matmul = gemm.clone();
    matmul.op_type = "MatMul".into();
    matmul.name = "mm".into();
    matmul.attribute.clear();
    matmul.input = vec![gemm.input[0].clone(), "mm_weight".into()];
    matmul.output = vec!["mm_out".into()];
    let mut add = gemm.clone();
    add.op_type = "Add".into();
    add.name = "mm_bias".into();
    add.attribute.clear();
    add.input = vec!["mm_out".into(), gemm.input[2].clone()];
    graph.node[gemm_index] = matmul;
    graph.node.insert(gemm_index + 1, add);
    let m = read_onnx_bytes(&encode(&model), "matmul_add.onnx").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.count("Linear"), 1);
    assert_eq!(
        m.count("Add"),
        10,
        "the bias Add is fused into the Linear layer"
    );
    let layer = m.classifier().unwrap();
    assert_eq!(layer.outputs, ["logits"]);
    let LayerKind::Linear(got) = &layer.kind else {
        panic!()
    };
    assert_eq!(got.source, LinearSource::MatMulAdd);
    assert_eq!(got.weight.shape, [1000, 1280]);
    assert_eq!(got.weight.data, fc.weight.data);
    assert_eq!(got.bias, fc.bias);
    assert_eq!(m.num_classes(), Some(1000));
}

#[test]
fn shared_auto_pad_is_reported() {
    let Some(path) = common::shared(MOBILENET_TF) else {
        return;
    };
    let mut model = decode(&path);
    let conv = &mut model.graph.mut_or_insert_default().node[0];
    assert_eq!(conv.op_type, "Conv");
    conv.attribute.retain(|a| a.name != "pads");
    conv.attribute.push(Default::default());
    let attr = conv.attribute.last_mut().unwrap();
    attr.name = "auto_pad".into();
    attr.type_ = protobuf::EnumOrUnknown::from_i32(3); // STRING
    attr.s = "SAME_UPPER".as_bytes().to_vec().into();
    let options = ReadOptions {
        verify_with_onnx_ir: false,
    };
    let m = read_onnx_bytes_with(&encode(&model), "auto_pad.onnx", &options).unwrap();
    let first = m.convs().next().unwrap();
    assert_eq!(first.auto_pad, AutoPad::SameUpper);
    assert_eq!(first.pads, [0; 4]);
}

#[test]
fn shared_float16_and_float64_weights_are_converted() {
    let Some(path) = common::shared(RESNET18) else {
        return;
    };
    let original = read(&path);
    let mut model = decode(&path);
    for t in model.graph.mut_or_insert_default().initializer.iter_mut() {
        let data = f32_data(t);
        if t.name == "conv1.weight" {
            // float16, stored in raw_data.
            t.data_type = 10;
            let raw: Vec<u8> = data
                .iter()
                .flat_map(|v| f32_to_f16(*v).to_le_bytes())
                .collect();
            t.raw_data = raw.into();
        } else if t.name == "fc.bias" {
            // float64, stored in double_data.
            t.data_type = 11;
            t.raw_data = Default::default();
            t.double_data = data.iter().map(|&v| f64::from(v)).collect();
        }
    }
    // onnx-ir rejects a float16 weight on a float32 input, so read the protobuf only.
    let options = ReadOptions {
        verify_with_onnx_ir: false,
    };
    let m = read_onnx_bytes_with(&encode(&model), "f16.onnx", &options).unwrap();
    let (a, b) = (m.convs().next().unwrap(), original.convs().next().unwrap());
    assert_eq!(a.weight.source_dtype, FloatType::F16);
    assert!(
        a.weight
            .data
            .iter()
            .zip(&b.weight.data)
            .all(|(x, y)| (x - y).abs() <= 1e-3 * y.abs() + 1e-4)
    );
    let (a, b) = (
        m.linears().next().unwrap(),
        original.linears().next().unwrap(),
    );
    assert_eq!(a.bias.as_ref().unwrap().source_dtype, FloatType::F64);
    assert_eq!(
        a.bias,
        b.bias.clone().map(|mut t| {
            t.source_dtype = FloatType::F64;
            t
        })
    );
}

/// Round-to-nearest f32 → f16 for normal values (enough for test data).
fn f32_to_f16(v: f32) -> u16 {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    if exp <= 0 {
        return sign; // flush tiny values to zero
    }
    let mant = bits & 0x7f_ffff;
    let half = (((exp as u32) << 10) | (mant >> 13)) + ((mant >> 12) & 1);
    sign | half as u16
}

// ------------------------------------------------------------------------------------------
// Errors: typed, never a panic, and the message names the file
// ------------------------------------------------------------------------------------------

#[test]
fn missing_file_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no_such_model.onnx");
    let err = read_onnx(&path).unwrap_err();
    assert!(matches!(err, OnnxError::NotFound { .. }), "{err:?}");
    assert_names_file(&err, &path);
}

#[test]
fn directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = read_onnx(dir.path()).unwrap_err();
    assert!(matches!(err, OnnxError::Io { .. }), "{err:?}");
    assert_names_file(&err, dir.path());
}

#[test]
fn empty_file_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.onnx");
    std::fs::write(&path, b"").unwrap();
    let err = read_onnx(&path).unwrap_err();
    assert!(matches!(err, OnnxError::Empty { .. }), "{err:?}");
    assert_names_file(&err, &path);
}

#[test]
fn random_bytes_are_not_onnx() {
    let dir = tempfile::tempdir().unwrap();
    for (i, len) in [1usize, 7, 64, 1000, 100_000].into_iter().enumerate() {
        let path = dir.path().join(format!("random_{len}.onnx"));
        std::fs::write(&path, random_bytes(len, 0x9e37_79b9_7f4a_7c15 + i as u64)).unwrap();
        let err = read_onnx(&path).unwrap_err();
        assert!(
            matches!(
                err,
                OnnxError::Malformed { .. } | OnnxError::NotAModel { .. }
            ),
            "{len} bytes: {err:?}"
        );
        assert_names_file(&err, &path);
    }
}

#[test]
fn text_and_other_formats_are_not_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8]); 4] = [
        ("text.onnx", b"this is not an onnx model\n"),
        ("json.onnx", b"{\"ir_version\": 8, \"graph\": {}}"),
        (
            "png.onnx",
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0",
        ),
        ("zeros.onnx", &[0u8; 32]),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = read_onnx(&path).unwrap_err();
        assert!(
            matches!(
                err,
                OnnxError::Malformed { .. } | OnnxError::NotAModel { .. }
            ),
            "{name}: {err:?}"
        );
        assert_names_file(&err, &path);
    }
}

#[test]
fn shared_npy_file_is_not_onnx() {
    let Some(path) = common::shared("fixtures/onnx/resnet18.logits.npy") else {
        return;
    };
    let err = read_onnx(&path).unwrap_err();
    assert!(
        matches!(
            err,
            OnnxError::Malformed { .. } | OnnxError::NotAModel { .. }
        ),
        "{err:?}"
    );
    assert_names_file(&err, &path);
}

#[test]
fn shared_truncated_copies_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for rel in [MOBILENET_FUSED, RESNET18] {
        let Some(source) = common::shared(rel) else {
            return;
        };
        let bytes = std::fs::read(&source).unwrap();
        let n = bytes.len();
        for cut in [
            1,
            2,
            10,
            100,
            1_000,
            100_000,
            n / 3,
            n / 2,
            n - 1_000,
            n - 10,
            n - 1,
        ] {
            let path = dir.path().join(format!("truncated_{cut}.onnx"));
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let err = read_onnx(&path).unwrap_err();
            assert!(
                matches!(
                    err,
                    OnnxError::Malformed { .. } | OnnxError::NotAModel { .. }
                ),
                "{rel} cut at {cut}: {err:?}"
            );
            assert_names_file(&err, &path);
        }
    }
}

#[test]
fn shared_missing_initializer_is_named() {
    let Some(path) = common::shared(RESNET18) else {
        return;
    };
    let mut model = decode(&path);
    model
        .graph
        .mut_or_insert_default()
        .initializer
        .retain(|t| t.name != "layer1.0.bn1.running_var");
    let label = PathBuf::from("missing_initializer.onnx");
    let err = read_onnx_bytes(&encode(&model), &label).unwrap_err();
    let OnnxError::MissingInitializer { input, node, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(input, "layer1.0.bn1.running_var");
    assert!(
        node.contains("/layer1/layer1.0/bn1/BatchNormalization"),
        "{node}"
    );
    assert_names_file(&err, &label);
}

#[test]
fn shared_unsupported_operator_is_named() {
    let Some(path) = common::shared(RESNET18) else {
        return;
    };
    let mut model = decode(&path);
    let relu = model
        .graph
        .mut_or_insert_default()
        .node
        .iter_mut()
        .find(|n| n.op_type == "Relu")
        .unwrap();
    relu.op_type = "LeakyRelu".into();
    let label = PathBuf::from("leaky_relu.onnx");
    let err = read_onnx_bytes(&encode(&model), &label).unwrap_err();
    let OnnxError::UnsupportedOperator { op_type, node, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(op_type, "LeakyRelu");
    assert!(node.contains("/relu/Relu"), "{node}");
    assert!(err.to_string().contains("LeakyRelu"));
    assert_names_file(&err, &label);

    // An operator from another domain.
    let mut model = decode(&path);
    model.graph.mut_or_insert_default().node[0].domain = "com.microsoft".into();
    let err = read_onnx_bytes(&encode(&model), &label).unwrap_err();
    assert!(
        matches!(&err, OnnxError::UnsupportedOperator { op_type, .. } if op_type == "com.microsoft.Conv"),
        "{err:?}"
    );
}

#[test]
fn shared_integer_weights_are_a_dtype_error() {
    let Some(path) = common::shared(RESNET18) else {
        return;
    };
    let mut model = decode(&path);
    let t = model
        .graph
        .mut_or_insert_default()
        .initializer
        .iter_mut()
        .find(|t| t.name == "layer2.0.conv1.weight")
        .unwrap();
    let n: i64 = t.dims.iter().product();
    t.data_type = 3; // INT8
    t.raw_data = vec![1u8; n as usize].into();
    let label = PathBuf::from("int8.onnx");
    let err = read_onnx_bytes(&encode(&model), &label).unwrap_err();
    let OnnxError::UnsupportedDtype { tensor, dtype, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (tensor.as_str(), dtype.as_str()),
        ("layer2.0.conv1.weight", "INT8")
    );
    assert_names_file(&err, &label);
}

#[test]
fn shared_inconsistent_tensor_sizes_are_errors() {
    let Some(path) = common::shared(RESNET18) else {
        return;
    };
    let mut model = decode(&path);
    let t = model
        .graph
        .mut_or_insert_default()
        .initializer
        .iter_mut()
        .find(|t| t.name == "bn1.bias")
        .unwrap();
    t.raw_data = t.raw_data.slice(..12);
    let label = PathBuf::from("short_tensor.onnx");
    let err = read_onnx_bytes(&encode(&model), &label).unwrap_err();
    assert!(
        matches!(&err, OnnxError::BadTensor { tensor, .. } if tensor == "bn1.bias"),
        "{err:?}"
    );
    assert_names_file(&err, &label);

    // A weight whose declared shape is huge: an error, not an allocation failure.
    let mut model = decode(&path);
    let t = &mut model.graph.mut_or_insert_default().initializer[0];
    t.dims = vec![i64::MAX, i64::MAX];
    let err = read_onnx_bytes(&encode(&model), &label).unwrap_err();
    assert!(matches!(err, OnnxError::BadTensor { .. }), "{err:?}");
}

#[test]
fn shared_models_without_graph_nodes_or_opset_are_not_models() {
    let Some(path) = common::shared(MOBILENET_TF) else {
        return;
    };
    let label = PathBuf::from("broken.onnx");
    let mut no_nodes = decode(&path);
    no_nodes.graph.mut_or_insert_default().node.clear();
    let mut no_graph = decode(&path);
    no_graph.graph.clear();
    let mut no_opset = decode(&path);
    no_opset.opset_import.clear();
    for model in [no_nodes, no_graph, no_opset] {
        let err = read_onnx_bytes(&encode(&model), &label).unwrap_err();
        assert!(matches!(err, OnnxError::NotAModel { .. }), "{err:?}");
        assert_names_file(&err, &label);
    }
}

#[test]
fn shared_dangling_input_is_an_error() {
    let Some(path) = common::shared(MOBILENET_TF) else {
        return;
    };
    let mut model = decode(&path);
    let graph = model.graph.mut_or_insert_default();
    let add = graph.node.iter_mut().find(|n| n.op_type == "Add").unwrap();
    add.input[1] = "nowhere".into();
    let label = PathBuf::from("dangling.onnx");
    let err = read_onnx_bytes(&encode(&model), &label).unwrap_err();
    assert!(
        matches!(&err, OnnxError::UnknownInput { input, .. } if input == "nowhere"),
        "{err:?}"
    );
    assert_names_file(&err, &label);
}

/// A committed fuzz seed (`fuzz/seeds/onnx_load/`), decoded: a small MobileNetV2 that every
/// clone has, for tests that edit a real graph without ../shared.
fn committed_seed(file: &str) -> ModelProto {
    decode(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds/onnx_load")
            .join(file),
    )
}

/// The index of the first `op` node of `model`'s graph.
fn first_node(model: &ModelProto, op: &str) -> usize {
    model
        .graph
        .node
        .iter()
        .position(|n| n.op_type == op)
        .unwrap_or_else(|| panic!("the seed has a {op} node"))
}

/// Constant nodes that break the ONNX schema (an input, no output, no value, two values, a
/// string or sparse value) are refused by name before onnx-ir, whose constant lifting panics on
/// them (a fuzzer finding: a Constant whose name field became an input). Runs on the committed
/// fuzz seed, so without ../shared too.
#[test]
fn malformed_constant_nodes_are_refused_by_name() {
    let label = PathBuf::from("constants.onnx");
    let clean = committed_seed("mobilenet_v2_w010_bn.onnx");
    let first_constant = first_node(&clean, "Constant");
    read_onnx_bytes(&encode(&clean), &label).expect("the seed itself reads");

    // onnx-ir keeps `NodeProto` private: each edit reaches the node through the model.
    type Edit = fn(&mut ModelProto, usize);
    let edits: [(&str, Edit); 6] = [
        ("an input", |m, i| {
            let n = &mut m.graph.mut_or_insert_default().node[i];
            n.input.push(n.name.clone());
        }),
        ("no output", |m, i| {
            m.graph.mut_or_insert_default().node[i].output.clear();
        }),
        ("no value", |m, i| {
            m.graph.mut_or_insert_default().node[i].attribute.clear();
        }),
        ("two values", |m, i| {
            let n = &mut m.graph.mut_or_insert_default().node[i];
            let again = n.attribute[0].clone();
            n.attribute.push(again);
        }),
        ("a string value", |m, i| {
            let a = &mut m.graph.mut_or_insert_default().node[i].attribute[0];
            a.name = "value_string".into();
            a.type_ = protobuf::EnumOrUnknown::from_i32(3); // STRING
            a.s = b"six".to_vec().into();
        }),
        ("a sparse value", |m, i| {
            let a = &mut m.graph.mut_or_insert_default().node[i].attribute[0];
            a.name = "sparse_value".into();
            a.type_ = protobuf::EnumOrUnknown::from_i32(11); // SPARSE_TENSOR
        }),
    ];
    for (what, edit) in edits {
        let mut model = clean.clone();
        edit(&mut model, first_constant);
        let err = read_onnx_bytes(&encode(&model), &label).unwrap_err();
        assert!(
            matches!(&err, OnnxError::NotAModel { reason, .. }
                if reason.contains(&format!("Constant node #{first_constant}"))),
            "a Constant with {what}: {err:?}"
        );
        assert_names_file(&err, &label);
    }
}

/// A Flatten over another axis than 1 is refused by name before onnx-ir, which indexes the
/// input's shape by the axis unchecked (a fuzzer finding: axis 122).
#[test]
fn flatten_over_another_axis_is_refused() {
    let label = PathBuf::from("flatten.onnx");
    let clean = committed_seed("mobilenet_v2_w010_folded.onnx");
    let flatten = first_node(&clean, "Flatten");
    for axis in [0i64, 2, 4, 122, -1] {
        let mut model = clean.clone();
        let node = &mut model.graph.mut_or_insert_default().node[flatten];
        let a = node
            .attribute
            .iter_mut()
            .find(|a| a.name == "axis")
            .expect("the seed's Flatten names its axis");
        a.i = axis;
        let err = read_onnx_bytes(&encode(&model), &label).unwrap_err();
        assert!(
            matches!(&err, OnnxError::Unsupported { op_type, reason, .. }
                if op_type == "Flatten" && reason.contains(&format!("axis {axis}"))),
            "axis {axis}: {err:?}"
        );
        assert_names_file(&err, &label);
    }
}

/// An attribute the ONNX schema does not give the operator is refused by name before onnx-ir,
/// whose importers panic on attributes they do not expect (a fuzzer finding: Gemm's `transB`
/// became `b%ta`).
#[test]
fn attributes_outside_the_schema_are_refused() {
    let label = PathBuf::from("attributes.onnx");
    let clean = committed_seed("mobilenet_v2_w010_bn.onnx");
    for op in [
        "Gemm",
        "Conv",
        "BatchNormalization",
        "Clip",
        "Flatten",
        "Add",
    ] {
        let index = first_node(&clean, op);
        let mut model = clean.clone();
        let node = &mut model.graph.mut_or_insert_default().node[index];
        let mut extra = node.attribute.first().cloned().unwrap_or_default();
        extra.name = "b%ta".into();
        extra.type_ = protobuf::EnumOrUnknown::from_i32(2); // INT
        extra.i = 1;
        node.attribute.push(extra);
        let err = read_onnx_bytes(&encode(&model), &label).unwrap_err();
        assert!(
            matches!(&err, OnnxError::Unsupported { op_type, reason, .. }
                if op_type == op && reason.contains("`b%ta`")),
            "{op}: {err:?}"
        );
        assert_names_file(&err, &label);
    }
}
