//! What `examples/predict.rs` runs (`transfer_vision::imagenet`), against onnxruntime.
//!
//! `tests/fixtures/predict/` holds 224 x 224 PNGs (RGB, greyscale and palette) and, in
//! `expected.json`, onnxruntime's top-5 indices and probabilities for each with
//! `../shared/weights/mobilenet_v2_tf_imagenet.onnx` on the PNG's own pixels scaled
//! `p / 127.5 - 1` (made by `tools/make_predict_fixtures.py`). `predict --resize none --crop none`
//! must give the same classes and probabilities within 1e-4.
//!
//! The tests named `shared_*` read `../shared/weights/mobilenet_v2_tf_imagenet.onnx`: they skip
//! without it, and fail under `CI=true`.

mod common;

use std::path::{Path, PathBuf};

use transfer_vision::backend::Cpu;
use transfer_vision::data::{ChwImage, Normalization};
use transfer_vision::imagenet::{NUM_CLASSES, imagenet_classes};
use transfer_vision::predict::{PredictError, PredictOptions, Predictor, Preprocess, TopK};
use transfer_vision::weights::WeightsError;

const WEIGHTS: &str = "weights/mobilenet_v2_tf_imagenet.onnx";
const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/predict")
}

fn expected() -> serde_json::Value {
    let path = fixtures().join("expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `--resize none --crop none`, everything else `auto`.
fn raw_options() -> PredictOptions {
    PredictOptions {
        resize: None,
        crop: None,
        ..PredictOptions::default()
    }
}

fn predictor(weights: &Path, options: &PredictOptions) -> Predictor<Cpu> {
    Predictor::<Cpu>::from_onnx(weights, options, &Default::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn usizes(v: &serde_json::Value) -> Vec<usize> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("index") as usize)
        .collect()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

#[test]
fn imagenet_classes_are_torchvisions_1000_names() {
    let names = imagenet_classes();
    assert_eq!(names.len(), NUM_CLASSES);
    assert_eq!(names[0], "tench");
    assert_eq!(names[207], "golden retriever");
    assert_eq!(names[817], "sports car");
    assert_eq!(names[999], "toilet tissue");
    assert!(names.contains(&"potter's wheel"));
    let unique: std::collections::BTreeSet<_> = names.iter().collect();
    assert_eq!(unique.len(), NUM_CLASSES, "names are distinct");
    assert!(names.iter().all(|n| !n.is_empty() && n.trim() == *n));
    // The names the reference script wrote next to its indices agree.
    for image in expected()["images"].as_array().unwrap() {
        let idx = usizes(&image["indices"]);
        for (i, name) in idx.iter().zip(image["names"].as_array().unwrap()) {
            assert_eq!(names[*i], name.as_str().unwrap());
        }
    }
}

#[test]
fn shared_predict_raw_pngs_matches_onnxruntime() {
    let Some(weights) = common::shared(WEIGHTS) else {
        return;
    };
    let expected = expected();
    let p = predictor(&weights, &raw_options());
    assert_eq!(p.preprocessing().normalization, Normalization::Tf);
    assert_eq!(p.normalization(), Normalization::Tf, "auto picks [-1, 1]");
    assert_eq!(p.spec().name(), "mobilenet_v2");
    let images = expected["images"].as_array().unwrap();
    let files: Vec<PathBuf> = images
        .iter()
        .map(|im| fixtures().join(im["file"].as_str().unwrap()))
        .collect();
    let results = p.predict_files(&files, 5);
    assert_eq!(results.len(), images.len());
    let mut worst = 0f32;
    for ((image, file), result) in images.iter().zip(&files).zip(results) {
        let top = result.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&top.file, file);
        let want_idx = usizes(&image["indices"]);
        let want_p = floats(&image["probabilities"]);
        assert_eq!(top.indices, want_idx, "{}: top-5 classes", file.display());
        for (k, (got, want)) in top.probabilities.iter().zip(&want_p).enumerate() {
            let diff = (got - want).abs();
            worst = worst.max(diff);
            assert!(
                diff <= TOLERANCE,
                "{}: rank {k} (class {}): probability {got} vs onnxruntime {want}",
                file.display(),
                want_idx[k]
            );
        }
        // The JSON line `predict --json` prints.
        let line = top.to_json();
        assert!(!line.contains('\n'));
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["file", "indices", "names", "probabilities"]);
        assert_eq!(json["file"].as_str().unwrap(), file.to_string_lossy());
        assert_eq!(usizes(&json["indices"]), want_idx);
        assert_eq!(json["names"], image["names"]);
        assert_eq!(floats(&json["probabilities"]), top.probabilities);
    }
    eprintln!("max |probability - onnxruntime| = {worst:.2e}");
}

#[test]
fn shared_predict_default_pipeline_and_batching() {
    let Some(weights) = common::shared(WEIGHTS) else {
        return;
    };
    let files: Vec<PathBuf> = [
        "tench.png",
        "golden_retriever.png",
        "sports_car_palette.png",
    ]
    .iter()
    .map(|f| fixtures().join(f))
    .collect();
    // Resize 256 + crop 224 (the default) in batches of 2: same top-1 as the raw PNGs, and
    // batching does not change the results.
    let mut options = PredictOptions {
        batch_size: 2,
        ..PredictOptions::default()
    };
    let batched: Vec<TopK> = predictor(&weights, &options)
        .predict_files(&files, 3)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        batched.iter().map(|t| t.indices[0]).collect::<Vec<_>>(),
        [0, 207, 817]
    );
    options.batch_size = 1;
    let single: Vec<TopK> = predictor(&weights, &options)
        .predict_files(&files, 3)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    for (a, b) in batched.iter().zip(&single) {
        assert_eq!(a.indices, b.indices);
        for (x, y) in a.probabilities.iter().zip(&b.probabilities) {
            assert!((x - y).abs() <= 1e-5, "{x} vs {y}");
        }
    }
}

#[test]
fn shared_bad_images_are_errors_that_name_the_file() {
    let Some(weights) = common::shared(WEIGHTS) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jpg");
    let garbage = dir.path().join("garbage.jpg");
    std::fs::write(&garbage, b"not an image at all").unwrap();
    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let tiny = dir.path().join("tiny.png");
    image::RgbImage::new(8, 8).save(&tiny).unwrap();
    let good = fixtures().join("tench.png");
    let files = vec![
        missing.clone(),
        good.clone(),
        garbage.clone(),
        empty.clone(),
        tiny.clone(),
    ];
    let p = predictor(&weights, &raw_options());
    let results = p.predict_files(&files, 5);
    assert_eq!(results.len(), files.len());
    for (file, result) in files.iter().zip(&results) {
        if file == &good {
            assert_eq!(result.as_ref().unwrap().indices[0], 0, "tench still works");
            continue;
        }
        let err = result.as_ref().expect_err("must fail");
        assert_eq!(err.path(), file.as_path());
        let msg = err.to_string();
        assert!(msg.contains(&*file.to_string_lossy()), "{msg}");
    }
    assert!(matches!(results[0], Err(PredictError::Data(_))));
    assert!(matches!(results[4], Err(PredictError::Input { .. })));
    // With the default resize the tiny image is enlarged and goes through.
    let resized = predictor(&weights, &PredictOptions::default());
    assert!(resized.predict_files(&[tiny], 1)[0].is_ok());
}

#[test]
fn shared_mismatched_batches_are_errors() {
    let Some(weights) = common::shared(WEIGHTS) else {
        return;
    };
    let p = predictor(&weights, &raw_options());
    let img = |h: usize, w: usize| ChwImage {
        data: vec![0.0; 3 * h * w],
        channels: 3,
        height: h,
        width: w,
    };
    let paths = [PathBuf::from("a.png"), PathBuf::from("b.png")];
    let err = p
        .predict_images(&[img(64, 64), img(64, 96)], &paths)
        .expect_err("shapes differ");
    assert_eq!(err.path(), Path::new("b.png"));
    let err = p
        .predict_images(&[img(16, 16)], &paths)
        .expect_err("too small");
    assert_eq!(err.path(), Path::new("a.png"));
    assert!(p.predict_images(&[], &[]).unwrap().is_empty());
    let ok = p
        .predict_images(&[img(64, 64), img(64, 64)], &paths)
        .unwrap();
    assert_eq!(ok.len(), 2);
    assert_eq!(ok[0].probabilities.len(), NUM_CLASSES);
}

#[test]
fn shared_model_and_preprocess_choices() {
    let Some(weights) = common::shared(WEIGHTS) else {
        return;
    };
    let device = Default::default();
    for wrong in ["resnet18", "resnet34"] {
        let options = PredictOptions {
            model: Some(wrong.into()),
            ..PredictOptions::default()
        };
        let err = Predictor::<Cpu>::from_onnx(&weights, &options, &device).expect_err("wrong arch");
        assert!(
            matches!(
                err,
                PredictError::Weights(WeightsError::Architecture { .. })
            ),
            "{err}"
        );
        assert_eq!(err.path(), weights.as_path());
    }
    let options = PredictOptions {
        model: Some("mobilenet_v2".into()),
        preprocess: Preprocess::ImageNet,
        ..PredictOptions::default()
    };
    let p = predictor(&weights, &options);
    assert_eq!(
        p.normalization(),
        Normalization::ImageNet,
        "explicit choice wins"
    );
}

#[test]
fn missing_or_corrupt_weights_are_errors_that_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.onnx");
    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, [0xffu8; 64]).unwrap();
    for file in [missing, garbage] {
        let err =
            Predictor::<Cpu>::from_onnx(&file, &PredictOptions::default(), &Default::default())
                .expect_err("must fail");
        assert_eq!(err.path(), file.as_path());
        assert!(err.to_string().contains(&*file.to_string_lossy()), "{err}");
    }
}

#[test]
fn eval_options_follow_the_weights_readme() {
    let o = PredictOptions::eval(224);
    assert_eq!((o.resize, o.crop), (Some(256), Some(224)));
    let o = PredictOptions::eval(160);
    assert_eq!((o.resize, o.crop), (Some(183), Some(160)));
    assert_eq!(PredictOptions::default(), PredictOptions::eval(224));
}
