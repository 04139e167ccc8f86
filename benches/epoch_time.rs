//! Seconds per epoch of the hymenoptera recipe (244 training / 153 validation images, batch 16,
//! 2 loader workers, 224×224), for MobileNetV2 and ResNet18 on the CPU backend:
//! feature extraction with augmentation (backbone recomputed every epoch), feature extraction
//! with the feature cache (deterministic training transform: backbone features computed once),
//! and fine-tuning of the last blocks. Random weights: this measures speed only.
//!
//! `cargo bench --bench epoch_time` (needs `../shared/datasets/hymenoptera_data`, or set
//! `HYMENOPTERA=path`). `EPOCHS=n` (default 2) epochs per case. Prints a markdown table.

use std::time::Instant;
use transfer_vision::kernels::AutodiffConvBackend;

use burn::module::AutodiffModule;
use transfer_vision::backend::CpuAutodiff;
use transfer_vision::data::{
    DataLoader, FolderOptions, LoaderConfig, Normalization, TrainVal, presets,
};
use transfer_vision::models::{Architecture, ImageClassifier, MobileNetV2Config, ResNetConfig};
use transfer_vision::train::{FitConfig, OptimizerConfig, Trainable, fit};

fn case<B, M>(
    name: &str,
    model: &M,
    regime: &str,
    trainable: Trainable,
    cached: bool,
    sets: &TrainVal,
    epochs: usize,
) where
    B: AutodiffConvBackend,
    M: Architecture<B> + AutodiffModule<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
{
    let device = B::Device::default();
    let mut cfg = LoaderConfig::new(16);
    cfg.workers = 2;
    let train_transform = if cached {
        presets::imagenet_eval(224, Normalization::ImageNet)
    } else {
        presets::imagenet_train(224, Normalization::ImageNet)
    };
    let train = DataLoader::new(&sets.train, train_transform, cfg).expect("train loader");
    cfg.shuffle = false;
    let val = DataLoader::new(
        &sets.val,
        presets::imagenet_eval(224, Normalization::ImageNet),
        cfg,
    )
    .expect("val loader");
    let config = FitConfig::new(epochs, OptimizerConfig::adam(1e-3), trainable).with_quiet(true);
    let started = Instant::now();
    let out = fit(model.clone(), &train, &val, &config, &device).expect("fit");
    let total = started.elapsed().as_secs_f64();
    let per_epoch: Vec<f64> = out.history.epochs.iter().map(|e| e.seconds).collect();
    let train_s: Vec<f64> = out
        .history
        .epochs
        .iter()
        .map(|e| sets.train.len() as f64 / e.images_per_second)
        .collect();
    let last = per_epoch.len() - 1;
    println!(
        "| {name} | {regime} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
        per_epoch[last],
        train_s[last],
        per_epoch[last] - train_s[last],
        total / epochs as f64,
        out.used_feature_cache
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let root = std::env::var("HYMENOPTERA")
        .unwrap_or_else(|_| "../shared/datasets/hymenoptera_data".into());
    let epochs: usize = std::env::var("EPOCHS")
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(2);
    let Ok(sets) = TrainVal::open(&root, FolderOptions::default(), 0.0, 0) else {
        eprintln!("epoch_time: no dataset at {root} (set HYMENOPTERA)");
        return;
    };
    let device = Default::default();
    println!(
        "| model | regime | s/epoch (last) | train s | val s | s/epoch incl. cache build | feature cache |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mobilenet = MobileNetV2Config::new()
        .with_num_classes(2)
        .init::<CpuAutodiff>(&device);
    let resnet = ResNetConfig::resnet18(2).init::<CpuAutodiff>(&device);
    case(
        name(&mobilenet),
        &mobilenet,
        "feature extraction, augmented",
        Trainable::HeadOnly,
        false,
        &sets,
        epochs,
    );
    case(
        name(&mobilenet),
        &mobilenet,
        "feature extraction, cached",
        Trainable::HeadOnly,
        true,
        &sets,
        epochs,
    );
    case(
        name(&mobilenet),
        &mobilenet,
        "fine-tune features.14+",
        Trainable::FromBlock("features.14".into()),
        false,
        &sets,
        epochs,
    );
    case(
        name(&resnet),
        &resnet,
        "feature extraction, augmented",
        Trainable::HeadOnly,
        false,
        &sets,
        epochs,
    );
    case(
        name(&resnet),
        &resnet,
        "feature extraction, cached",
        Trainable::HeadOnly,
        true,
        &sets,
        epochs,
    );
    case(
        name(&resnet),
        &resnet,
        "fine-tune layer4",
        Trainable::FromBlock("layer4".into()),
        false,
        &sets,
        epochs,
    );
}

fn name<B: transfer_vision::kernels::ConvBackend, M: Architecture<B>>(model: &M) -> &'static str {
    match model.spec().name().as_str() {
        "mobilenet_v2" => "MobileNetV2",
        _ => "ResNet18",
    }
}
