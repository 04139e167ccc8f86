//! Saved models (`.tvm`) without `../shared`: a concrete model and `AnyModel` read each other's
//! files, the preprocessing travels with the weights into a `Predictor`, and what cannot be
//! saved or loaded is refused naming the file.

use burn::tensor::{Tensor, TensorData};
use transfer_vision::backend::Cpu;
use transfer_vision::data::Preprocessing;
use transfer_vision::models::{
    AnyModel, Architecture, ImageClassifier, MobileNetV2, MobileNetV2Config,
};
use transfer_vision::predict::Predictor;
use transfer_vision::weights::{ModelInfo, WeightsError, load_model, load_model_bytes, save_model};

type Device = burn::tensor::Device<Cpu>;

fn small_model() -> MobileNetV2<Cpu> {
    let device = Device::default();
    <Cpu as burn::tensor::backend::Backend>::seed(&device, 5);
    MobileNetV2Config::new()
        .with_width_mult(0.35)
        .with_num_classes(2)
        .init::<Cpu>(&device)
}

fn info() -> ModelInfo {
    let pre = Preprocessing::tf(96).with_exact_resize();
    ModelInfo::new(vec!["alpaca".into(), "not alpaca".into()], pre)
}

fn logits<M: ImageClassifier<Cpu>>(model: &M) -> Vec<f32> {
    // A fixed input, not drawn from the backend's RNG: burn-ndarray's is one per process, which
    // the tests running beside this one reseed and draw from between a seed and a draw here.
    let device = Device::default();
    let values: Vec<f32> = (0..2 * 3 * 64 * 64)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let x = Tensor::<Cpu, 4>::from_data(TensorData::new(values, [2, 3, 64, 64]), &device);
    model.forward(x).into_data().to_vec::<f32>().unwrap()
}

#[test]
fn any_model_and_the_concrete_model_read_each_others_files() {
    let device = Device::default();
    let dir = tempfile::tempdir().unwrap();
    let model = small_model();
    let concrete = dir.path().join("concrete.tvm");
    save_model(&model, &info(), &concrete).unwrap();
    let (any, read_info) = load_model::<Cpu, AnyModel<Cpu>>(&concrete, &device).unwrap();
    assert_eq!(read_info, info());
    assert_eq!(any.spec(), model.spec());
    assert_eq!(logits(&any), logits(&model));

    let through_any = dir.path().join("any.tvm");
    save_model(&any, &info(), &through_any).unwrap();
    let (back, _) = load_model::<Cpu, MobileNetV2<Cpu>>(&through_any, &device).unwrap();
    assert_eq!(logits(&back), logits(&model));
}

#[test]
fn a_predictor_prepares_images_as_the_saved_model_says() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.tvm");
    save_model(&small_model(), &info(), &file).unwrap();
    let predictor = Predictor::<Cpu>::from_file(&file, &Device::default()).unwrap();
    assert_eq!(*predictor.preprocessing(), info().preprocessing);
    assert_eq!(*predictor.pipeline(), info().preprocessing.eval_transform());
    assert_eq!(predictor.class_names(), info().class_names.as_slice());
}

#[test]
fn a_folded_model_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fused.tvm");
    let Err(err) = save_model(&small_model().fuse_for_inference(), &info(), &file) else {
        panic!("a folded model was saved");
    };
    assert!(matches!(err, WeightsError::Unsavable { .. }), "{err}");
    assert!(err.to_string().contains("fused.tvm") && err.to_string().contains("folded"));
    assert!(!file.exists());
}

/// The saved file's bytes with `from` replaced by `to` in its (unchecksummed) JSON header.
fn with_header_edit(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let header_len = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[16..16 + header_len].to_vec()).unwrap();
    let crafted = header.replace(from, to);
    assert_ne!(crafted, header, "`{from}` is not in the header: {header}");
    let mut altered = bytes[..8].to_vec();
    altered.extend_from_slice(&(crafted.len() as u64).to_le_bytes());
    altered.extend_from_slice(crafted.as_bytes());
    altered.extend_from_slice(&bytes[16 + header_len..]);
    altered
}

#[test]
fn preprocessing_that_asks_for_giant_images_is_refused_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.tvm");
    save_model(&small_model(), &info(), &file).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let altered = with_header_edit(&bytes, "\"image_size\":96", "\"image_size\":4000000000");
    let label = dir.path().join("crafted.tvm");
    let Err(err) = load_model_bytes::<Cpu, MobileNetV2<Cpu>>(&altered, &label, &Device::default())
    else {
        panic!("a giant input size was accepted");
    };
    assert!(matches!(err, WeightsError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("crafted.tvm"), "{err}");
}

/// Configuration values a network cannot be built from (burn's dropout asserts on a probability
/// above 1: a fuzzer finding) are refused on load, naming the file and the field, for the
/// concrete model and `AnyModel` alike.
#[test]
fn configurations_no_network_has_are_refused_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.tvm");
    save_model(&small_model(), &info(), &file).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let label = dir.path().join("damaged.tvm");
    let device = Device::default();
    for (from, to, field) in [
        ("\"dropout\":0.2", "\"dropout\":1.2", "dropout"),
        ("\"dropout\":0.2", "\"dropout\":-0.5", "dropout"),
        ("\"width_mult\":0.35", "\"width_mult\":0.0", "width_mult"),
        ("\"width_mult\":0.35", "\"width_mult\":1e300", "width_mult"),
        (
            "\"round_nearest\":8",
            "\"round_nearest\":0",
            "round_nearest",
        ),
        ("\"num_classes\":2", "\"num_classes\":0", "num_classes"),
    ] {
        let altered = with_header_edit(&bytes, from, to);
        let concrete = load_model_bytes::<Cpu, MobileNetV2<Cpu>>(&altered, &label, &device);
        let any = load_model_bytes::<Cpu, AnyModel<Cpu>>(&altered, &label, &device);
        for err in [concrete.err(), any.err()] {
            let err = err.unwrap_or_else(|| panic!("{to} was accepted"));
            assert!(matches!(err, WeightsError::Corrupt { .. }), "{to}: {err}");
            let message = err.to_string();
            assert!(
                message.contains("damaged.tvm") && message.contains(field),
                "{to}: {message}"
            );
        }
    }
}
