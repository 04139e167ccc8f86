//! ONNX import parity: native models loaded from the fixtures of `../shared/fixtures/onnx`
//! reproduce onnxruntime's logits; anonymised files load by structure; bad files are refused
//! with errors that name them; save → load reproduces logits bit for bit.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use transfer_vision::backend::Cpu;
use transfer_vision::data::Normalization;
use transfer_vision::models::layers::Padding;
use transfer_vision::models::{
    AnyModel, Architecture, ImageClassifier, MobileNetV2, ModelSpec, ResNet,
};
use transfer_vision::verify::{compare_logits, onnx_fixture_parity};
use transfer_vision::weights::onnx::anonymize_names;
use transfer_vision::weights::{
    ImportReport, MappedBy, ModelInfo, WeightsError, load_model, save_model,
};

type Device = burn::tensor::Device<Cpu>;

fn input(name: &str, device: &Device) -> Option<Tensor<Cpu, 4>> {
    let npy = common::npy_f32(&common::shared(&format!("fixtures/onnx/{name}.input.npy"))?);
    let shape: [usize; 4] = npy.shape.clone().try_into().expect("4-D input");
    Some(Tensor::from_data(TensorData::new(npy.data, shape), device))
}

/// Asserts max |ours − golden| ≤ 1e-4 × max |golden| and returns the ratio.
fn assert_logits_match(name: &str, logits: Tensor<Cpu, 2>) -> f32 {
    let golden =
        common::npy_f32(&common::shared(&format!("fixtures/onnx/{name}.logits.npy")).unwrap());
    assert_eq!(logits.dims().to_vec(), golden.shape, "{name}: logits shape");
    let c = compare_logits(&logits.into_data().to_vec::<f32>().unwrap(), &golden);
    eprintln!(
        "{name}: max |diff| {:.3e}, max |logit| {:.3}, ratio {:.3e}",
        c.max_abs_diff, c.max_abs_logit, c.ratio
    );
    assert!(
        c.ratio <= 1e-4,
        "{name}: max diff {} > 1e-4 × {}",
        c.max_abs_diff,
        c.max_abs_logit
    );
    assert_eq!(c.top1_agree, c.rows, "{name}: top-1 classes differ");
    c.ratio
}

fn load_mobilenet(path: &Path, device: &Device) -> (MobileNetV2<Cpu>, ImportReport) {
    MobileNetV2::<Cpu>::from_onnx(path, device).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn mobilenet_v2_with_batch_norm_matches_onnxruntime() {
    let device = Device::default();
    let Some(path) = common::shared("fixtures/onnx/mobilenet_v2.onnx") else {
        return;
    };
    let (model, report) = load_mobilenet(&path, &device);
    assert_eq!(report.mapped_by, MappedBy::Name);
    assert!(!report.batch_norm_folded);
    assert_logits_match(
        "mobilenet_v2",
        model.forward(input("mobilenet_v2", &device).unwrap()),
    );
}

#[test]
fn mobilenet_v2_with_folded_batch_norm_matches_onnxruntime() {
    let device = Device::default();
    let Some(path) = common::shared("fixtures/onnx/mobilenet_v2_fused.onnx") else {
        return;
    };
    let (model, report) = load_mobilenet(&path, &device);
    assert!(report.batch_norm_folded);
    assert_logits_match(
        "mobilenet_v2_fused",
        model.forward(input("mobilenet_v2_fused", &device).unwrap()),
    );
}

#[test]
fn resnet18_matches_onnxruntime() {
    let device = Device::default();
    let Some(path) = common::shared("fixtures/onnx/resnet18.onnx") else {
        return;
    };
    let (model, report) =
        ResNet::<Cpu>::from_onnx(&path, &device).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.spec.name(), "resnet18");
    assert_logits_match(
        "resnet18",
        model.forward(input("resnet18", &device).unwrap()),
    );
}

fn anonymized_copy(name: &str, dir: &Path) -> Option<PathBuf> {
    let path = common::shared(&format!("fixtures/onnx/{name}.onnx"))?;
    let bytes = std::fs::read(&path).unwrap();
    let out = dir.join(format!("{name}_anonymous.onnx"));
    std::fs::write(&out, anonymize_names(&bytes, &path).unwrap()).unwrap();
    Some(out)
}

#[test]
fn files_with_meaningless_names_load_by_structure() {
    let device = Device::default();
    let dir = tempfile::tempdir().unwrap();
    for name in ["mobilenet_v2", "mobilenet_v2_fused"] {
        let Some(path) = anonymized_copy(name, dir.path()) else {
            return;
        };
        let (model, report) = load_mobilenet(&path, &device);
        assert_eq!(report.mapped_by, MappedBy::Structure, "{name}");
        assert_logits_match(name, model.forward(input(name, &device).unwrap()));
    }
    let Some(path) = anonymized_copy("resnet18", dir.path()) else {
        return;
    };
    let (model, report) =
        ResNet::<Cpu>::from_onnx(&path, &device).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.mapped_by, MappedBy::Structure);
    assert_logits_match(
        "resnet18",
        model.forward(input("resnet18", &device).unwrap()),
    );
}

#[test]
fn real_tf_imagenet_weights_load_with_tf_padding() {
    let device = Device::default();
    let Some(path) = common::shared("weights/mobilenet_v2_tf_imagenet.onnx") else {
        return;
    };
    let (model, report) = load_mobilenet(&path, &device);
    let ModelSpec::MobileNetV2(config) = &report.spec else {
        panic!("not a MobileNetV2")
    };
    assert_eq!(config.padding, Padding::TfSame);
    assert_eq!(config.num_classes, 1000);
    assert!(report.batch_norm_folded);
    assert_eq!(
        report.preprocessing.normalization,
        Normalization::Tf,
        "{:?}",
        report.preprocessing
    );
    assert_eq!(
        model
            .features(Tensor::zeros([1, 3, 160, 160], &device))
            .dims(),
        [1, 1280]
    );
}

fn expect_err<T>(result: Result<T, WeightsError>, file: &Path) -> WeightsError {
    match result {
        Ok(_) => panic!("{} loaded but should not", file.display()),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&file.display().to_string()),
                "message does not name the file: {msg}"
            );
            e
        }
    }
}

#[test]
fn broken_files_are_refused_with_the_file_named() {
    let device = Device::default();
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    let err = expect_err(MobileNetV2::<Cpu>::from_onnx(&empty, &device), &empty);
    assert!(matches!(err, WeightsError::Onnx(_)), "{err:?}");

    let random = dir.path().join("random.onnx");
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&random, bytes).unwrap();
    let err = expect_err(MobileNetV2::<Cpu>::from_onnx(&random, &device), &random);
    assert!(matches!(err, WeightsError::Onnx(_)), "{err:?}");

    let missing = dir.path().join("missing.onnx");
    expect_err(ResNet::<Cpu>::from_onnx(&missing, &device), &missing);

    let Some(fixture) = common::shared("fixtures/onnx/mobilenet_v2.onnx") else {
        return;
    };
    let full = std::fs::read(&fixture).unwrap();
    for fraction in [0.001, 0.3, 0.97] {
        let cut = dir.path().join(format!("truncated_{fraction}.onnx"));
        std::fs::write(&cut, &full[..(full.len() as f64 * fraction) as usize]).unwrap();
        let err = expect_err(MobileNetV2::<Cpu>::from_onnx(&cut, &device), &cut);
        assert!(matches!(err, WeightsError::Onnx(_)), "{err:?}");
    }
}

#[test]
fn a_resnet_file_is_not_a_mobilenet() {
    let device = Device::default();
    let Some(path) = common::shared("fixtures/onnx/resnet18.onnx") else {
        return;
    };
    let err = expect_err(MobileNetV2::<Cpu>::from_onnx(&path, &device), &path);
    assert!(matches!(err, WeightsError::Architecture { .. }), "{err:?}");
    let Some(path) = common::shared("fixtures/onnx/mobilenet_v2.onnx") else {
        return;
    };
    let err = expect_err(ResNet::<Cpu>::from_onnx(&path, &device), &path);
    assert!(matches!(err, WeightsError::Architecture { .. }), "{err:?}");
}

/// A copy of the MobileNetV2 fixture whose classifier keeps only its first 10 classes.
fn ten_class_copy(dir: &Path) -> Option<PathBuf> {
    use protobuf::Message;
    let path = common::shared("fixtures/onnx/mobilenet_v2.onnx")?;
    let mut model = onnx_ir::ModelProto::parse_from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    for t in graph.initializer.iter_mut() {
        if t.name == "classifier.1.weight" || t.name == "classifier.1.bias" {
            let row: usize = t.dims.iter().skip(1).product::<i64>() as usize;
            t.dims[0] = 10;
            if t.float_data.is_empty() {
                t.raw_data.truncate(10 * row * 4);
            } else {
                t.float_data.truncate(10 * row);
            }
        }
    }
    let out = dir.join("mobilenet_v2_10_classes.onnx");
    std::fs::write(&out, model.write_to_bytes().unwrap()).unwrap();
    Some(out)
}

#[test]
fn a_ten_class_classifier_loads_with_ten_classes() {
    let device = Device::default();
    let dir = tempfile::tempdir().unwrap();
    let Some(path) = ten_class_copy(dir.path()) else {
        return;
    };
    let (model, report) = load_mobilenet(&path, &device);
    assert_eq!(model.num_classes(), 10);
    assert_eq!(report.spec.name(), "mobilenet_v2");
    // Its logits are the first 10 of the full model's.
    let full = common::npy_f32(&common::shared("fixtures/onnx/mobilenet_v2.logits.npy").unwrap());
    let ours = model
        .forward(input("mobilenet_v2", &device).unwrap())
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    for row in 0..2 {
        for k in 0..10 {
            assert!((ours[row * 10 + k] - full.data[row * 1000 + k]).abs() < 1e-3);
        }
    }
}

#[test]
fn save_and_load_reproduce_logits_bit_for_bit() {
    let device = Device::default();
    let Some(path) = common::shared("fixtures/onnx/resnet18.onnx") else {
        return;
    };
    let (model, _) = ResNet::<Cpu>::from_onnx(&path, &device).unwrap();
    let model = model.with_new_head(3, &device);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.tvm");
    let info = ModelInfo {
        class_names: vec!["a".into(), "b".into(), "c".into()],
        ..Default::default()
    };
    save_model(&model, &info, &file).unwrap();
    let (loaded, loaded_info) = load_model::<Cpu, ResNet<Cpu>>(&file, &device).unwrap();
    assert_eq!(loaded_info, info);
    assert_eq!(loaded.spec(), model.spec());
    let x = input("resnet18", &device).unwrap();
    let a = model
        .forward(x.clone())
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let b = loaded.forward(x).into_data().to_vec::<f32>().unwrap();
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));

    // The wrong architecture, a torn file and an altered file are refused, naming the file.
    let err = expect_err(load_model::<Cpu, MobileNetV2<Cpu>>(&file, &device), &file);
    assert!(matches!(err, WeightsError::Architecture { .. }));
    let bytes = std::fs::read(&file).unwrap();
    let torn = dir.path().join("torn.tvm");
    std::fs::write(&torn, &bytes[..bytes.len() - 100]).unwrap();
    assert!(matches!(
        expect_err(load_model::<Cpu, ResNet<Cpu>>(&torn, &device), &torn),
        WeightsError::Corrupt { .. }
    ));
    let mut altered = bytes.clone();
    let last = altered.len() - 10;
    altered[last] ^= 0x55;
    let altered_path = dir.path().join("altered.tvm");
    std::fs::write(&altered_path, altered).unwrap();
    let err = expect_err(
        load_model::<Cpu, ResNet<Cpu>>(&altered_path, &device),
        &altered_path,
    );
    assert!(matches!(err, WeightsError::Corrupt { .. }));
}

#[test]
fn folding_batch_norm_for_inference_keeps_the_logits() {
    let device = Device::default();
    let Some(path) = common::shared("fixtures/onnx/mobilenet_v2.onnx") else {
        return;
    };
    let (model, _) = load_mobilenet(&path, &device);
    let x = input("mobilenet_v2", &device).unwrap();
    let plain = model
        .forward(x.clone())
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let fused = model.fuse_for_inference();
    assert_logits_match("mobilenet_v2", fused.forward(x.clone()));
    let folded = fused.forward(x).into_data().to_vec::<f32>().unwrap();
    let max = plain.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = plain
        .iter()
        .zip(&folded)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff <= 1e-5 * max,
        "fused MobileNetV2 differs by {diff} (max logit {max})"
    );

    let Some(path) = common::shared("fixtures/onnx/resnet18.onnx") else {
        return;
    };
    let (model, _) = ResNet::<Cpu>::from_onnx(&path, &device).unwrap();
    let x = input("resnet18", &device).unwrap();
    let plain = model
        .forward(x.clone())
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let folded = model
        .fuse_for_inference()
        .forward(x)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let max = plain.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = plain
        .iter()
        .zip(&folded)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("fused ResNet18: max |diff| {diff:.2e} (max logit {max:.2})");
    assert!(
        diff <= 1e-5 * max,
        "fused ResNet18 differs by {diff} (max logit {max})"
    );
}

/// The check `examples/device_check.rs` runs on CUDA, here on the CPU at the CPU's tolerance.
#[test]
fn fixture_parity_check_passes_on_the_cpu() {
    let Some(dir) = common::shared("fixtures/onnx") else {
        return;
    };
    let device = Device::default();
    for name in [
        "mobilenet_v2",
        "mobilenet_v2_fused",
        "resnet18",
        "mobilenet_v3_small",
        "mobilenet_v3_large",
        "efficientnet_b0",
    ] {
        let c = onnx_fixture_parity::<Cpu>(&dir, name, &device).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.ratio <= 1e-4, "{name}: {c:?}");
        assert_eq!((c.top1_agree, c.rows), (2, 2), "{name}: {c:?}");
    }
    let missing = onnx_fixture_parity::<Cpu>(&dir, "no_such_fixture", &device).unwrap_err();
    assert!(missing.to_string().contains("no_such_fixture"), "{missing}");
}

/// MobileNetV3 Small / Large and EfficientNet-B0 (`../shared/fixtures/onnx`, BatchNorm kept,
/// torchvision names) as exported, anonymised, with BatchNorm folded into the convolutions (what
/// torch's exporter does by default) and both: each matches onnxruntime's logits, folding the
/// model's BatchNorms for inference keeps them, and save → load reproduces them bit for bit.
#[test]
fn mobilenet_v3_and_efficientnet_match_onnxruntime_in_every_form() {
    let device = Device::default();
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "mobilenet_v3_small",
        "mobilenet_v3_large",
        "efficientnet_b0",
    ] {
        let Some(path) = common::shared(&format!("fixtures/onnx/{name}.onnx")) else {
            return;
        };
        let x = input(name, &device).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let folded = common::onnx_edit::fold_batch_norms(&bytes);
        let forms = [
            ("exported", bytes.clone(), MappedBy::Name, false),
            (
                "anonymous",
                anonymize_names(&bytes, &path).unwrap(),
                MappedBy::Structure,
                false,
            ),
            ("folded", folded.clone(), MappedBy::Name, true),
            (
                "folded_anonymous",
                anonymize_names(&folded, &path).unwrap(),
                MappedBy::Structure,
                true,
            ),
        ];
        for (form, bytes, mapped_by, batch_norm_folded) in forms {
            let file = dir.path().join(format!("{name}_{form}.onnx"));
            std::fs::write(&file, bytes).unwrap();
            let (model, report) = AnyModel::<Cpu>::from_onnx(&file, &device)
                .unwrap_or_else(|e| panic!("{name} {form}: {e}"));
            assert_eq!(report.spec.name(), name, "{form}");
            assert_eq!(report.mapped_by, mapped_by, "{name} {form}");
            assert_eq!(report.batch_norm_folded, batch_norm_folded, "{name} {form}");
            assert_eq!(
                model.has_batch_norm_statistics(),
                !batch_norm_folded,
                "{name} {form}"
            );
            eprint!("{form}: ");
            assert_logits_match(name, model.forward(x.clone()));
            if form != "exported" {
                continue;
            }
            let fused = model.clone().fuse_for_inference();
            eprint!("fused for inference: ");
            assert_logits_match(name, fused.forward(x.clone()));

            let saved = dir.path().join(format!("{name}.tvm"));
            save_model(&model, &ModelInfo::default(), &saved).unwrap();
            let (loaded, _) = load_model::<Cpu, AnyModel<Cpu>>(&saved, &device).unwrap();
            assert_eq!(loaded.spec(), model.spec(), "{name}");
            let a = model
                .forward(x.clone())
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            let b = loaded
                .forward(x.clone())
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            assert!(
                a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{name}: saved and loaded logits differ"
            );
        }
    }
}
