//! `fit`: frozen layers stay bit-identical, trainable ones change, a resumed run equals an
//! uninterrupted one, and feature extraction on real data reaches the expected accuracy.

mod common;

use burn::module::AutodiffModule;
use transfer_vision::backend::CpuAutodiff;
use transfer_vision::data::{
    DataLoader, FolderOptions, LoaderConfig, Normalization, TrainVal, presets,
};
use transfer_vision::models::{
    Architecture, ArchitectureConfig, EfficientNetConfig, ImageClassifier, MobileNetV2,
    MobileNetV2Config, MobileNetV3Config, ResNetConfig,
};
use transfer_vision::train::{FitConfig, OptimizerConfig, Trainable, fit};

type B = CpuAutodiff;
type Device = burn::tensor::Device<B>;

fn check_frozen<M: burn::module::Module<B>>(before: &M, after: &M, trainable: &[&str]) {
    let (a, b) = (
        common::snapshot::<B, _>(before),
        common::snapshot::<B, _>(after),
    );
    assert_eq!(a.len(), b.len());
    let mut changed = 0;
    for ((key, x), (_, y)) in a.iter().zip(&b) {
        let trains = trainable.iter().any(|p| key.starts_with(p));
        if trains {
            changed += usize::from(x != y);
        } else {
            assert_eq!(x, y, "frozen tensor {key} changed");
        }
    }
    // Every trainable parameter and every trainable BatchNorm's statistics moved.
    let trainable_count = a
        .iter()
        .filter(|(k, _)| trainable.iter().any(|p| k.starts_with(p)))
        .count();
    assert_eq!(
        changed, trainable_count,
        "some trainable tensors did not change"
    );
}

#[test]
fn fine_tuning_changes_only_what_trains() {
    let device = Device::default();
    let dir = tempfile::tempdir().unwrap();
    common::synthetic_folder(dir.path(), &["red", "blue"], 8, 72);
    let (train, val) = common::small_loaders(dir.path(), 64, 4);

    let resnet = ResNetConfig::resnet18(2).init::<B>(&device);
    let before = resnet.clone();
    let config = FitConfig::new(
        1,
        OptimizerConfig::adam(1e-3),
        Trainable::FromBlock("layer4".into()),
    )
    .with_quiet(true);
    let out = fit(resnet, &train, &val, &config, &device).unwrap();
    check_frozen(&before, &out.model, &["layer4.", "fc."]);

    let mobilenet = MobileNetV2Config::new()
        .with_num_classes(2)
        .init::<B>(&device);
    let before = mobilenet.clone();
    let config = FitConfig::new(1, OptimizerConfig::sgd(1e-2, 0.9), Trainable::LastBlocks(2))
        .with_quiet(true);
    let out = fit(mobilenet, &train, &val, &config, &device).unwrap();
    check_frozen(
        &before,
        &out.model,
        &["features.17.", "features.18.", "classifier."],
    );

    // Feature extraction: only the head moves.
    let mobilenet = MobileNetV2Config::new()
        .with_num_classes(2)
        .init::<B>(&device);
    let before = mobilenet.clone();
    let config =
        FitConfig::new(2, OptimizerConfig::adam(1e-3), Trainable::HeadOnly).with_quiet(true);
    let out = fit(mobilenet, &train, &val, &config, &device).unwrap();
    check_frozen(&before, &out.model, &["classifier."]);
    assert_eq!(out.history.epochs.len(), 2);
}

#[test]
fn feature_extraction_on_hymenoptera_reaches_085_with_real_weights() {
    // Needs ../shared: the real ImageNet MobileNetV2 and the hymenoptera photos.
    let device = Device::default();
    let (Some(weights), Some(data)) = (
        common::shared("weights/mobilenet_v2_tf_imagenet.onnx"),
        common::shared("datasets/hymenoptera_data"),
    ) else {
        return;
    };
    let sets = TrainVal::open(&data, FolderOptions::default(), 0.0, 0).unwrap();
    // 64 training images (a seeded subset), the whole val folder.
    let n = sets.train.len();
    let (train64, _) = sets
        .train
        .split((n - 64) as f64 / n as f64 + 0.5 / n as f64, 0)
        .unwrap();
    assert_eq!(train64.len(), 64);
    let eval = presets::imagenet_eval(224, Normalization::Tf);
    let mut cfg = LoaderConfig::new(8);
    let train = DataLoader::new(&train64, eval.clone(), cfg).unwrap();
    cfg.shuffle = false;
    let val = DataLoader::new(&sets.val, eval, cfg).unwrap();

    let (model, _) = MobileNetV2::<B>::from_onnx(&weights, &device).unwrap();
    let model = model.with_new_head(2, &device);
    let config =
        FitConfig::new(3, OptimizerConfig::adam(3e-3), Trainable::HeadOnly).with_quiet(true);
    let out = fit(model, &train, &val, &config, &device).unwrap();
    assert!(out.used_feature_cache);
    let best = out.history.best().unwrap().val_accuracy;
    eprintln!(
        "hymenoptera feature extraction: val accuracy per epoch {:?}",
        out.history
            .epochs
            .iter()
            .map(|e| e.val_accuracy)
            .collect::<Vec<_>>()
    );
    assert!(best >= 0.85, "val accuracy {best} < 0.85");
    assert_eq!(AutodiffModule::<B>::valid(&out.model).num_classes(), 2);
}

/// MobileNetV3 and EfficientNet freeze and fine-tune as the others: feature extraction trains
/// the whole classifier (MobileNetV3's hidden `classifier.0` too, as torchvision recipes that
/// freeze `features` do) and fine-tuning from the default block trains the blocks from there
/// on. (That a folded frozen prefix trains like the whole model: `tests/train_prefix.rs`.)
#[test]
fn mobilenet_v3_and_efficientnet_freeze_and_fine_tune_like_the_others() {
    let device = Device::default();
    let dir = tempfile::tempdir().unwrap();
    common::synthetic_folder(dir.path(), &["red", "blue"], 8, 72);
    let (train, val) = common::small_loaders(dir.path(), 64, 4);

    let config = MobileNetV3Config::small(2).with_width_mult(0.5);
    assert_eq!(config.fine_tune_from(), "features.9");
    let model = config.init::<B>(&device);
    let before = model.clone();
    let head_only =
        FitConfig::new(1, OptimizerConfig::adam(1e-3), Trainable::HeadOnly).with_quiet(true);
    let out = fit(model, &train, &val, &head_only, &device).unwrap();
    check_frozen(&before, &out.model, &["classifier.0.", "classifier.3."]);
    let before = out.model.clone();
    let tune = FitConfig::new(
        1,
        OptimizerConfig::adam(1e-4),
        Trainable::FromBlock("features.9".into()),
    )
    .with_quiet(true);
    let out = fit(out.model, &train, &val, &tune, &device).unwrap();
    check_frozen(
        &before,
        &out.model,
        &[
            "features.9.",
            "features.10.",
            "features.11.",
            "features.12.",
            "classifier.",
        ],
    );

    // With a deterministic training pipeline, feature extraction trains on cached features,
    // MobileNetV3's hidden layer included.
    let sets = TrainVal::open(dir.path(), FolderOptions::default(), 0.25, 7).unwrap();
    let eval = presets::imagenet_eval(64, Normalization::ImageNet);
    let cached_train = DataLoader::new(&sets.train, eval, LoaderConfig::new(4)).unwrap();
    let model = config.init::<B>(&device);
    let before = model.clone();
    let out = fit(model, &cached_train, &val, &head_only, &device).unwrap();
    assert!(out.used_feature_cache);
    check_frozen(&before, &out.model, &["classifier.0.", "classifier.3."]);

    let model = EfficientNetConfig::b0(2).init::<B>(&device);
    let before = model.clone();
    let tune = FitConfig::new(
        1,
        OptimizerConfig::adam(1e-4),
        Trainable::FromBlock("features.7".into()),
    )
    .with_quiet(true);
    let out = fit(model, &train, &val, &tune, &device).unwrap();
    check_frozen(
        &before,
        &out.model,
        &["features.7.", "features.8.", "classifier."],
    );
}

/// Stochastic depth drops residual branches only while their block trains: two training
/// forward passes differ, inference (`.valid()`) and frozen blocks are deterministic.
#[test]
fn efficientnet_stochastic_depth_acts_only_while_training() {
    use burn::tensor::{Distribution, Tensor};
    use transfer_vision::train::set_trainable;
    let device = Device::default();
    <B as burn::tensor::backend::Backend>::seed(&device, 5);
    let model = EfficientNetConfig::b0(2)
        .with_dropout(0.0)
        .with_stochastic_depth_prob(0.5)
        .init::<B>(&device);
    let x = Tensor::<B, 4>::random([4, 3, 64, 64], Distribution::Default, &device);
    let rows = |t: Tensor<B, 2>| t.into_data().to_vec::<f32>().unwrap();
    let frozen = set_trainable(model.clone(), &Trainable::HeadOnly).unwrap();
    assert_eq!(
        rows(frozen.forward(x.clone())),
        rows(frozen.forward(x.clone()))
    );
    let inference = model.valid();
    let inner = x.clone().inner();
    assert_eq!(
        rows(Tensor::from_inner(inference.forward(inner.clone()))),
        rows(Tensor::from_inner(inference.forward(inner)))
    );
    let training = set_trainable(model, &Trainable::All).unwrap();
    assert_ne!(rows(training.forward(x.clone())), rows(training.forward(x)));
}

/// A folder of two synthetic classes (`red`, `blue`) and its loaders at 40 pixels.
fn two_synthetic_classes() -> (
    tempfile::TempDir,
    transfer_vision::data::DataLoader,
    transfer_vision::data::DataLoader,
) {
    let dir = tempfile::tempdir().unwrap();
    common::synthetic_folder(dir.path(), &["red", "blue"], 6, 48);
    let (train, val) = common::small_loaders(dir.path(), 40, 4);
    (dir, train, val)
}

/// A narrow (width 0.35) MobileNetV2 of `config`, fast to train.
fn tiny_mobilenet(config: MobileNetV2Config) -> MobileNetV2<B> {
    config.with_width_mult(0.35).init::<B>(&Device::default())
}

#[test]
fn evaluate_and_predict_run_a_trained_model_in_inference_mode() {
    use transfer_vision::train::{BatchNormPolicy, evaluate, predict};
    let device = Device::default();
    let (_dir, train, val) = two_synthetic_classes();
    let model = tiny_mobilenet(MobileNetV2Config::new().with_num_classes(2));
    // Trainable BatchNorms (the model has statistics): on the autodiff model `fit` returns,
    // a forward pass in training mode would use batch statistics and move the running ones.
    let config = FitConfig::new(1, OptimizerConfig::adam(1e-3), Trainable::LastBlocks(2))
        .with_batch_norm(BatchNormPolicy::Train)
        .with_quiet(true);
    let trained = fit(model, &train, &val, &config, &device).unwrap().model;
    let before = common::snapshot::<B, _>(&trained);
    let on_training_model = evaluate(&trained, &val, &device).unwrap();
    let images = burn::tensor::Tensor::<B, 4>::zeros([2, 3, 40, 40], &device);
    let names = ["red".to_string(), "blue".to_string()];
    let predicted = predict(&trained, images.clone(), &names);
    assert_eq!(
        common::snapshot::<B, _>(&trained),
        before,
        "a running statistic moved"
    );
    // The same figures as on the inference model (no batch statistics, no dropout), up to the
    // last bits that multi-threaded sums may change from run to run.
    let inner = AutodiffModule::<B>::valid(&trained);
    let on_inner_model = evaluate(&inner, &val, &device).unwrap();
    assert_eq!(on_training_model.confusion, on_inner_model.confusion);
    assert!(
        (on_training_model.loss - on_inner_model.loss).abs() < 1e-6,
        "{on_training_model:?} vs {on_inner_model:?}"
    );
    let inner_predicted = predict(&inner, images.clone().inner(), &names);
    // What the comparison guards against: this model's own forward pass is in training mode
    // (batch statistics), and visibly differs.
    let training_mode = burn::tensor::activation::softmax(trained.forward(images), 1);
    let training_mode = training_mode.into_data().to_vec::<f32>().unwrap();
    let gap = training_mode
        .iter()
        .zip(inner_predicted.iter().flat_map(|p| &p.probabilities))
        .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(
        gap > 1e-4,
        "training mode is indistinguishable here ({gap})"
    );
    for (a, b) in predicted.iter().zip(&inner_predicted) {
        assert_eq!(a.class, b.class);
        for (p, q) in a.probabilities.iter().zip(&b.probabilities) {
            assert!((p - q).abs() < 1e-6, "{p} vs {q}");
        }
    }
}

#[test]
fn batch_norms_of_folded_weights_stay_frozen_and_refuse_to_train() {
    use transfer_vision::train::BatchNormPolicy;
    let device = Device::default();
    let (_dir, train, val) = two_synthetic_classes();
    // What an import of BatchNorm-folded weights gives: BatchNorms without statistics.
    let model = tiny_mobilenet(
        MobileNetV2Config::new()
            .with_num_classes(2)
            .with_batch_norm_statistics(false),
    );
    assert!(!model.has_batch_norm_statistics());
    let tune =
        FitConfig::new(1, OptimizerConfig::adam(1e-3), Trainable::LastBlocks(2)).with_quiet(true);

    let asked = tune.clone().with_batch_norm(BatchNormPolicy::Train);
    let Err(err) = fit(model.clone(), &train, &val, &asked, &device) else {
        panic!("training BatchNorms without statistics must be refused");
    };
    let err = err.to_string();
    assert!(
        err.contains("features.17") && err.contains("folded") && err.contains("statistics"),
        "{err}"
    );

    // By default they stay frozen (statistics and affine parameters bit-identical) while the
    // convolutions of the same blocks and the head train.
    let before = common::snapshot::<B, _>(&model);
    let out = fit(model, &train, &val, &tune, &device).unwrap();
    let after = common::snapshot::<B, _>(&out.model);
    let pairs = out.model.conv_bn_pairs();
    let is_batch_norm = |key: &str| {
        pairs.iter().any(|p| {
            key.strip_prefix(&p.bn_path)
                .is_some_and(|r| r.starts_with('.'))
        })
    };
    let mut trained = 0;
    for ((key, a), (_, b)) in before.iter().zip(&after) {
        let in_tuned_blocks = ["features.17.", "features.18.", "classifier."]
            .iter()
            .any(|p| key.starts_with(p));
        if in_tuned_blocks && !is_batch_norm(key) {
            trained += usize::from(a != b);
        } else {
            assert_eq!(a, b, "{key} changed");
        }
    }
    assert!(trained >= 5, "only {trained} tensors trained");
    assert!(!out.model.has_batch_norm_statistics());
}

#[test]
fn a_head_that_does_not_fit_the_data_is_refused_before_training() {
    let device = Device::default();
    let (_dir, train, val) = two_synthetic_classes();
    let model = tiny_mobilenet(MobileNetV2Config::new().with_num_classes(3));
    let config =
        FitConfig::new(1, OptimizerConfig::adam(1e-3), Trainable::HeadOnly).with_quiet(true);
    let Err(err) = fit(model, &train, &val, &config, &device) else {
        panic!("3 classes against 2 must be refused");
    };
    let err = err.to_string();
    assert!(
        err.contains("3 classes") && err.contains("has 2") && err.contains("with_new_head(2"),
        "{err}"
    );
}

#[test]
fn feature_extraction_on_cached_features_trains_as_on_images() {
    // The cache holds the folded frozen backbone's features, computed once; training the head on
    // them must give the losses of running the images through the backbone every epoch.
    use transfer_vision::verify::feature_cache_parity;
    let device = Device::default();
    let mobilenet = tiny_mobilenet(MobileNetV2Config::new());
    let resnet = ResNetConfig::new([1, 1, 1, 1]).init::<B>(&device);
    for (name, parity) in [
        ("mobilenet_v2", feature_cache_parity(mobilenet, 48, &device)),
        ("resnet", feature_cache_parity(resnet, 48, &device)),
    ] {
        let parity = parity.unwrap();
        assert!(parity.used_cache, "{name}: trained without the cache");
        assert_eq!(
            parity.cached.len(),
            4,
            "{name}: two epochs of train / val loss"
        );
        assert!(
            parity.cached.iter().all(|l| l.is_finite() && *l > 0.0),
            "{name}: {:?}",
            parity.cached
        );
        // The head learned: the second epoch's training loss differs from the first's.
        assert_ne!(parity.cached[0], parity.cached[2], "{name}");
        assert!(
            parity.max_rel <= 1e-5,
            "{name}: cached {:?} vs images {:?}",
            parity.cached,
            parity.uncached
        );
    }
}
