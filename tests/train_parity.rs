//! Training parity with PyTorch (`../shared/fixtures/train`): seed-0 backbones from ONNX, a fresh
//! 2-class head with the fixture's initial weights, some layers frozen, 3 optimizer steps on
//! fixed batches. Losses per step and the final head must match PyTorch's.

mod common;

use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use transfer_vision::backend::CpuAutodiff;
use transfer_vision::models::layers::Linear;
use transfer_vision::models::{ImageClassifier, MobileNetV2, ResNet};
use transfer_vision::train::{Learner, OptimizerConfig, Trainable, set_trainable, trainable_keys};

type B = CpuAutodiff;
type Device = burn::tensor::Device<B>;

struct Case {
    name: String,
    fixture: serde_json::Value,
}

fn cases() -> Option<Vec<Case>> {
    let path = common::shared("fixtures/train/train_fixtures.json")?;
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    Some(
        json.as_object()
            .unwrap()
            .iter()
            .map(|(name, fixture)| Case {
                name: name.clone(),
                fixture: fixture.clone(),
            })
            .collect(),
    )
}

fn npy(case: &str, what: &str) -> common::Npy<f32> {
    common::npy_f32(&common::shared(&format!("fixtures/train/{case}.{what}.npy")).unwrap())
}

fn head(case: &str, device: &Device) -> Linear<B> {
    let w = npy(case, "head_init_weight");
    let [out, inp]: [usize; 2] = w.shape.clone().try_into().unwrap();
    Linear {
        weight: Param::from_data(TensorData::new(w.data, [out, inp]), device),
        bias: Param::from_data(TensorData::new(vec![0f32; out], [out]), device),
    }
}

fn optimizer(f: &serde_json::Value) -> OptimizerConfig {
    let lr = f["lr"].as_f64().unwrap();
    match f["optimizer"].as_str().unwrap() {
        "adam" => OptimizerConfig::adam(lr),
        "sgd" => OptimizerConfig::sgd(lr, f["sgd_momentum"].as_f64().unwrap()),
        other => panic!("unknown optimizer {other}"),
    }
}

/// Runs the case's steps and returns (losses, final head weight, final head bias, trainable keys).
fn run<M>(model: M, case: &Case, device: &Device) -> (Vec<f64>, Vec<f32>, Vec<f32>, Vec<String>)
where
    M: ImageClassifier<B> + burn::module::AutodiffModule<B>,
    M::InnerModule: ImageClassifier<<B as burn::tensor::backend::AutodiffBackend>::InnerBackend>,
{
    let f = &case.fixture;
    let prefixes: Vec<String> = f["trainable_prefixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let model = set_trainable(model, &Trainable::Prefixes(prefixes)).unwrap();
    let keys = trainable_keys::<B, M>(&model);
    let inputs = npy(&case.name, "inputs");
    let labels = common::npy_i64(
        &common::shared(&format!("fixtures/train/{}.labels.npy", case.name)).unwrap(),
    );
    let (steps, batch) = (
        f["steps"].as_u64().unwrap() as usize,
        f["batch"].as_u64().unwrap() as usize,
    );
    // inputs are [steps, batch, 3, H, W], labels [steps, batch].
    let per_image: usize = inputs.shape[2..].iter().product();
    let [_, _, c, h, w]: [usize; 5] = inputs.shape.clone().try_into().unwrap();
    let mut learner = Learner::<B, M>::new(&optimizer(f), 0.0);
    let mut model = model;
    let mut losses = Vec::new();
    for step in 0..steps {
        let data = inputs.data[step * batch * per_image..(step + 1) * batch * per_image].to_vec();
        let images = Tensor::<B, 4>::from_data(TensorData::new(data, [batch, c, h, w]), device);
        let y = &labels.data[step * batch..(step + 1) * batch];
        let frozen = keys.iter().all(|k| k.starts_with(model.head_path()));
        let (next, out) = learner.step(model, images, y, 0, frozen);
        model = next;
        losses.push(out.loss);
    }
    let head = model.head();
    let weight = head.weight.val().into_data().to_vec::<f32>().unwrap();
    let bias = head.bias.val().into_data().to_vec::<f32>().unwrap();
    (losses, weight, bias, keys)
}

#[test]
fn training_steps_match_pytorch() {
    let device = Device::default();
    let Some(cases) = cases() else { return };
    assert_eq!(cases.len(), 4);
    for case in cases {
        let f = &case.fixture;
        let onnx = common::shared(&format!(
            "fixtures/train/{}",
            f["backbone_onnx"].as_str().unwrap()
        ))
        .unwrap();
        let (losses, weight, bias, keys) = match f["model"].as_str().unwrap() {
            "mobilenet_v2" => {
                let (mut model, _) = MobileNetV2::<B>::from_onnx(&onnx, &device).unwrap();
                model.classifier.0.prob = 0.0; // the fixtures run the head without dropout
                model.classifier.1 = head(&case.name, &device);
                run(model, &case, &device)
            }
            "resnet18" => {
                let (mut model, _) = ResNet::<B>::from_onnx(&onnx, &device).unwrap();
                model.fc = head(&case.name, &device);
                run(model, &case, &device)
            }
            other => panic!("unknown model {other}"),
        };
        let expected_keys: Vec<String> = f["trainable_params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        assert_eq!(keys, expected_keys, "{}: trainable parameters", case.name);
        let golden: Vec<f64> = f["losses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let rel_tol = if f["optimizer"] == "sgd" { 1e-3 } else { 1e-4 };
        for (step, (ours, theirs)) in losses.iter().zip(&golden).enumerate() {
            let rel = (ours - theirs).abs() / theirs.abs();
            eprintln!(
                "{} step {step}: ours {ours:.7} torch {theirs:.7} rel {rel:.2e}",
                case.name
            );
            assert!(
                rel <= rel_tol,
                "{} step {step}: loss {ours} vs {theirs} (rel {rel:.2e})",
                case.name
            );
        }
        let w = npy(&case.name, "head_final_weight");
        let b = npy(&case.name, "head_final_bias");
        let max_w = weight
            .iter()
            .zip(&w.data)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let max_b = bias
            .iter()
            .zip(&b.data)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!(
            "{}: head max |diff| weight {max_w:.2e} bias {max_b:.2e}",
            case.name
        );
        assert!(
            max_w <= 1e-4 && max_b <= 1e-4,
            "{}: head differs (weight {max_w}, bias {max_b})",
            case.name
        );
    }
}
