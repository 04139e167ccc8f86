//! ONNX export without `../shared` or Python: MobileNetV2 (torchvision's and TF-SAME padded, of
//! other widths, at even and odd sizes), ResNet18/34, MobileNetV3 Small/Large and
//! EfficientNet-B0 with seeded random weights, a new 3-class
//! head and BatchNorm running statistics measured on random images (so that folding them into
//! the convolutions is really exercised), exported, re-imported by the crate's own import and
//! compared logit for logit with the original in inference mode, at batch 2 and batch 1 (the
//! batch dimension is symbolic). Class names, preprocessing and model name travel through the
//! file; what cannot be exported is refused naming the file.
//!
//! Parity with onnxruntime is checked by `examples/export_check.rs` and
//! `scripts/check_onnx_export.py`, not here (no Python in the tests).

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{AutodiffModule, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use protobuf::Message;
use transfer_vision::backend::{Cpu, CpuAutodiff};
use transfer_vision::data::Preprocessing;
use transfer_vision::models::layers::Padding;
use transfer_vision::models::{
    AnyModel, Architecture, EfficientNetConfig, ImageClassifier, MobileNetV2Config,
    MobileNetV3Config, ModelSpec, ResNetConfig,
};
use transfer_vision::predict::Predictor;
use transfer_vision::weights::onnx::read_onnx_bytes;
use transfer_vision::weights::{
    MappedBy, ModelInfo, WeightsError, export_onnx, load_onnx_model, onnx_bytes, read_onnx,
};

type Device = burn::tensor::Device<Cpu>;

fn class_names() -> Vec<String> {
    ["ants", "bees", "wasps \"quoted\", with comma"]
        .map(String::from)
        .to_vec()
}

/// `model` (on the autodiff backend) with random BatchNorm scales and shifts and running
/// statistics measured on random images (momentum 1: one forward pass in training mode sets
/// them to that batch's statistics), returned for inference on the plain backend.
fn with_statistics<M>(mut model: M, size: usize, seed: u64) -> M::InnerModule
where
    M: ImageClassifier<CpuAutodiff> + AutodiffModule<CpuAutodiff>,
{
    let device = Default::default();
    CpuAutodiff::seed(&device, seed);
    for pair in model.conv_bn_pairs_mut() {
        let c = pair.bn.channels();
        pair.bn.momentum = 1.0;
        pair.bn.weight = Param::from_tensor(Tensor::random(
            [c],
            Distribution::Uniform(0.5, 1.5),
            &device,
        ));
        pair.bn.bias = Param::from_tensor(Tensor::random(
            [c],
            Distribution::Uniform(-0.3, 0.3),
            &device,
        ));
    }
    let x = Tensor::<CpuAutodiff, 4>::random([2, 3, size, size], Distribution::Default, &device);
    let _ = model.forward(x);
    let far_from_identity = model.conv_bn_pairs_mut().iter().all(|pair| {
        let var: Vec<f32> = pair.bn.running_var().into_data().to_vec().unwrap();
        let mean: Vec<f32> = pair.bn.running_mean().into_data().to_vec().unwrap();
        var.iter().any(|v| (v - 1.0).abs() > 1e-3) && mean.iter().any(|m| m.abs() > 1e-3)
    });
    assert!(
        far_from_identity,
        "the running statistics were not measured"
    );
    model.valid()
}

/// The input comes from its own seeded generator, not the backend's, which the tests running
/// beside this one re-seed and draw from: both models must see the same images.
fn logits<M: ImageClassifier<Cpu>>(model: &M, batch: usize, size: usize, seed: u64) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let pixels: Vec<f32> = (0..batch * 3 * size * size)
        .map(|_| rng.random::<f32>())
        .collect();
    let data = TensorData::new(pixels, [batch, 3, size, size]);
    let x = Tensor::<Cpu, 4>::from_data(data, &Device::default());
    model.forward(x).into_data().to_vec::<f32>().unwrap()
}

/// Largest difference relative to the largest logit.
fn relative_diff(ours: &[f32], theirs: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len());
    let scale = ours.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = ours
        .iter()
        .zip(theirs)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale.max(f32::MIN_POSITIVE)
}

/// The input's first dimension as written in the file: its `dim_param`.
fn batch_dim_param(bytes: &[u8]) -> String {
    let model = onnx_ir::ModelProto::parse_from_bytes(bytes).unwrap();
    let dims = &model.graph.input[0].type_.tensor_type().shape.dim;
    assert_eq!(dims.len(), 4);
    dims[0].dim_param().to_string()
}

/// Exports `model`, re-imports it and checks everything that should survive the trip.
fn round_trip<M: Architecture<Cpu>>(model: &M, pre: Preprocessing, expected: ModelSpec) {
    let device = Device::default();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    let mut info = ModelInfo::new(class_names(), pre);
    info.metadata.insert("recipe".into(), "a test".into());
    let report = export_onnx(model, &info, &path).unwrap();
    let size = pre.image_size as usize;
    assert_eq!(report.path, path);
    assert_eq!(report.model, expected.name());
    assert_eq!(report.input_shape, [3, size, size]);
    assert_eq!(report.num_classes, 3);
    assert!(report.opset >= 13 && report.ir_version >= 7);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(report.bytes, bytes.len());
    assert_eq!(onnx_bytes(model, &info, "in memory").unwrap(), bytes);

    // The file as a reader sees it.
    assert_eq!(batch_dim_param(&bytes), "batch");
    let graph = read_onnx(&path).unwrap();
    assert!(graph.opset >= 13, "opset {}", graph.opset);
    assert_eq!(graph.producer, "transfer-vision 0.1.0");
    assert_eq!(graph.input_name, "input");
    assert_eq!(graph.input_shape, [None, Some(3), Some(size), Some(size)]);
    assert_eq!(graph.output_names, ["logits"]);
    assert_eq!(graph.metadata["model"], expected.name());
    assert_eq!(graph.metadata["recipe"], "a test");
    assert_eq!(
        graph.batch_norms().count(),
        0,
        "BatchNorm left in the graph"
    );
    assert_eq!(graph.count("Dropout"), 0);
    assert_eq!(report.nodes, graph.op_counts.values().sum::<usize>());
    let names: Vec<String> = serde_json::from_str(&graph.metadata["class_names"]).unwrap();
    assert_eq!(names, class_names());

    // Re-imported, the same network with the same labels and preprocessing.
    let (back, import) = load_onnx_model::<Cpu, AnyModel<Cpu>>(&path, &device).unwrap();
    assert_eq!(import.class_names, Some(class_names()));
    assert_eq!(import.preprocessing, pre);
    assert_eq!(import.spec, expected);
    assert_eq!(back.spec(), expected);
    assert!(import.batch_norm_folded);
    assert_eq!(import.mapped_by, MappedBy::Name);
    for (batch, seed) in [(2, 11), (1, 12)] {
        let ours = logits(model, batch, size, seed);
        let theirs = logits(&back, batch, size, seed);
        let rel = relative_diff(&ours, &theirs);
        assert!(
            rel <= 1e-4,
            "{}: batch {batch}: max |diff| / max |logit| = {rel:e}",
            expected.name()
        );
        // Not a network that lost its input: the images' logits differ.
        if batch == 2 {
            let spread = relative_diff(&ours[..3], &ours[3..]);
            assert!(spread > 1e-3, "the two images give the same logits");
        }
    }
}

#[test]
fn mobilenet_v2_round_trips_with_folded_batch_norm() {
    let device = Default::default();
    CpuAutodiff::seed(&device, 1);
    let model = MobileNetV2Config::new()
        .init::<CpuAutodiff>(&device)
        .with_new_head(3, &device);
    let model = with_statistics(model, 224, 2);
    let expected = MobileNetV2Config::new()
        .with_num_classes(3)
        .with_batch_norm_statistics(false);
    round_trip(&model, Preprocessing::imagenet(224), expected.into());
}

#[test]
fn tf_same_mobilenet_v2_of_another_width_round_trips_at_even_and_odd_sizes() {
    let device = Default::default();
    CpuAutodiff::seed(&device, 3);
    let config = MobileNetV2Config::new()
        .with_width_mult(0.5)
        .with_padding(Padding::TfSame);
    let model = config
        .init::<CpuAutodiff>(&device)
        .with_new_head(3, &device);
    let model = with_statistics(model, 96, 4);
    let expected = config.with_num_classes(3).with_batch_norm_statistics(false);
    // Even: explicit asymmetric pads, as the shared TF MobileNetV2 has them.
    round_trip(
        &model,
        Preprocessing::tf(96).with_exact_resize(),
        expected.clone().into(),
    );
    // Odd: TF-SAME pads the stem like symmetric padding, so `auto_pad = SAME_UPPER` says it.
    round_trip(&model, Preprocessing::tf(97), expected.into());
}

#[test]
fn resnet18_round_trips_with_folded_batch_norm() {
    let device = Default::default();
    CpuAutodiff::seed(&device, 5);
    let model = ResNetConfig::resnet18(1000)
        .init::<CpuAutodiff>(&device)
        .with_new_head(3, &device);
    let model = with_statistics(model, 224, 6);
    let expected = ResNetConfig::resnet18(3).with_batch_norm_statistics(false);
    round_trip(&model, Preprocessing::imagenet(224), expected.into());
}

#[test]
fn resnet34_round_trips_with_folded_batch_norm() {
    let device = Default::default();
    CpuAutodiff::seed(&device, 7);
    let model = ResNetConfig::resnet34(3).init::<CpuAutodiff>(&device);
    let model = with_statistics(model, 160, 8);
    let expected = ResNetConfig::resnet34(3).with_batch_norm_statistics(false);
    round_trip(&model, Preprocessing::imagenet(160), expected.into());
}

#[test]
fn mobilenet_v3_and_efficientnet_round_trip_with_folded_batch_norm() {
    let device = Default::default();
    let configs: [(ModelSpec, usize); 3] = [
        (MobileNetV3Config::small(3).into(), 160),
        (MobileNetV3Config::large(3).into(), 96),
        (EfficientNetConfig::b0(3).into(), 128),
    ];
    for (i, (config, size)) in configs.into_iter().enumerate() {
        CpuAutodiff::seed(&device, 20 + i as u64);
        let model = AnyModel::<CpuAutodiff>::from_config(&config, &device);
        let model = with_statistics(model, size, 30 + i as u64);
        let expected = match config {
            ModelSpec::MobileNetV3(c) => c.with_batch_norm_statistics(false).into(),
            ModelSpec::EfficientNet(c) => c.with_batch_norm_statistics(false).into(),
            other => other,
        };
        round_trip(&model, Preprocessing::imagenet(size as u32), expected);
    }
}

#[test]
fn an_any_model_exports_the_same_bytes_and_the_export_reexports_identically() {
    let device = Device::default();
    Cpu::seed(&device, 9);
    let model = MobileNetV2Config::new()
        .with_width_mult(0.35)
        .with_num_classes(3)
        .init::<Cpu>(&device);
    let info = ModelInfo::new(class_names(), Preprocessing::imagenet(64));
    let bytes = onnx_bytes(&model, &info, "concrete").unwrap();
    let any = AnyModel::from(model);
    assert_eq!(onnx_bytes(&any, &info, "any").unwrap(), bytes);

    // Export → import → export: the second file holds the same graph and weights.
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.onnx");
    std::fs::write(&first, &bytes).unwrap();
    let (back, import) = AnyModel::<Cpu>::from_onnx(&first, &device).unwrap();
    let info_back = ModelInfo::new(import.class_names.unwrap(), import.preprocessing);
    let again = onnx_bytes(&back, &info_back, "again").unwrap();
    let (a, b) = (
        read_onnx_bytes(&bytes, "first").unwrap(),
        read_onnx_bytes(&again, "again").unwrap(),
    );
    assert_eq!(a.layers.len(), b.layers.len());
    for (x, y) in a.layers.iter().zip(&b.layers) {
        assert_eq!(x.op_type, y.op_type);
        assert_eq!(x.node_name, y.node_name);
    }
    let max_diff = a
        .convs()
        .zip(b.convs())
        .flat_map(|(x, y)| x.weight.data.iter().zip(&y.weight.data))
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(max_diff < 1e-5, "weights changed by {max_diff}");
}

#[test]
fn a_predictor_names_the_classes_and_prepares_images_as_the_exported_file_says() {
    let device = Device::default();
    let model = MobileNetV2Config::new()
        .with_width_mult(0.35)
        .with_num_classes(3)
        .init::<Cpu>(&device);
    let pre = Preprocessing::tf(64).with_exact_resize();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("named.onnx");
    export_onnx(&model, &ModelInfo::new(class_names(), pre), &path).unwrap();
    let predictor = Predictor::<Cpu>::from_file(&path, &device).unwrap();
    assert_eq!(predictor.class_names(), class_names().as_slice());
    assert_eq!(*predictor.preprocessing(), pre);
    assert_eq!(*predictor.pipeline(), pre.eval_transform());
}

#[test]
fn an_unwritable_path_is_an_error_naming_the_file() {
    let device = Device::default();
    let model = MobileNetV2Config::new()
        .with_width_mult(0.35)
        .with_num_classes(3)
        .init::<Cpu>(&device);
    let info = ModelInfo::new(class_names(), Preprocessing::imagenet(64));
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the folder should be: nothing can be created under it.
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"x").unwrap();
    let path = blocker.join("model.onnx");
    let err = export_onnx(&model, &info, &path).unwrap_err();
    assert!(matches!(err, WeightsError::Io { .. }), "{err}");
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    assert!(!path.exists());
}

#[test]
fn info_that_does_not_fit_the_model_is_refused_naming_the_file() {
    let device = Device::default();
    let model = MobileNetV2Config::new()
        .with_width_mult(0.35)
        .with_num_classes(3)
        .init::<Cpu>(&device);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refused.onnx");
    let refused = |info: &ModelInfo, words: &str| {
        let err = export_onnx(&model, info, &path).unwrap_err();
        assert!(matches!(err, WeightsError::Unsavable { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("refused.onnx") && text.contains(words),
            "{text}"
        );
        assert!(!path.exists());
    };
    let pre = Preprocessing::imagenet(64);
    refused(
        &ModelInfo::new(vec!["a".into(), "b".into()], pre),
        "2 class names",
    );
    let mut reserved = ModelInfo::new(class_names(), pre);
    reserved.metadata = BTreeMap::from([("model".to_string(), "mine".to_string())]);
    refused(&reserved, "`model` is reserved");
    refused(
        &ModelInfo::new(class_names(), Preprocessing::imagenet(16)),
        "32..=",
    );

    // No class names at all is fine: the file has none, the import reports none.
    let ok = dir.path().join("unnamed.onnx");
    export_onnx(&model, &ModelInfo::new(vec![], pre), &ok).unwrap();
    let (_, import) = load_onnx_model::<Cpu, AnyModel<Cpu>>(&ok, &device).unwrap();
    assert_eq!(import.class_names, None);
    assert!(Path::new(&ok).exists());
}
