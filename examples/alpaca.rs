//! Alpaca / not alpaca with MobileNetV2: the Coursera transfer-learning exercise, in Rust.
//!
//! `cargo run --release --example alpaca -- --data ../shared/datasets/alpaca \
//!     --weights ../shared/weights/mobilenet_v2_tf_imagenet.onnx`

mod common;

use std::path::PathBuf;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use clap::Parser;
use common::{CommonArgs, Metrics, RunOutputs, WEIGHTS_HELP, or_exit, require};
use transfer_vision::backend::DeviceSpec;
use transfer_vision::data::{DataLoader, FolderOptions, LoaderConfig, TrainVal, presets};
use transfer_vision::models::{ImageClassifier, MobileNetV2};
use transfer_vision::train::{
    BatchNormPolicy, FitConfig, OptimizerConfig, Trainable, fit, predict,
};
use transfer_vision::weights::ModelInfo;

/// Fine-tune an ImageNet MobileNetV2 to tell alpacas from everything else.
#[derive(Parser, Debug)]
struct Args {
    /// Folder with `alpaca/` and `not alpaca/` sub-folders.
    #[arg(long, default_value = "data/alpaca")]
    data: PathBuf,
    /// ImageNet MobileNetV2 as ONNX.
    #[arg(long, default_value = "weights/mobilenet_v2_tf_imagenet.onnx")]
    weights: PathBuf,
    /// Epochs of feature extraction (backbone frozen).
    #[arg(long, default_value_t = 5)]
    epochs_head: usize,
    /// Epochs of fine-tuning the last blocks.
    #[arg(long, default_value_t = 5)]
    epochs_finetune: usize,
    /// First block that fine-tuning unfreezes (the exercise unfreezes from layer 120).
    #[arg(long, default_value = "features.14")]
    unfreeze_from: String,
    /// Input size. The exercise uses 160; the ImageNet weights were trained at 224, where the
    /// frozen features separate the classes better (0.92 vs 0.88 validation accuracy here).
    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(32..))]
    image_size: u32,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() {
    let args = Args::parse();
    common::on_backend!(args.common, run(&args));
}

fn run<B: AutodiffBackend>(args: &Args, device: B::Device, spec: &DeviceSpec) {
    let started = Instant::now();
    let common = &args.common;
    require(
        &args.data,
        "the alpaca dataset",
        "  copy the exercise's dataset (alpaca/ and 'not alpaca/' folders) there, or pass --data ../shared/datasets/alpaca",
    );
    // With the `download` feature, missing weights are fetched from the ONNX model zoo.
    #[cfg(feature = "download")]
    let weights = if args.weights.exists() {
        args.weights.clone()
    } else {
        use transfer_vision::weights::download::{Pretrained, fetch};
        or_exit(fetch(Pretrained::MobileNetV2), "downloading the weights")
    };
    #[cfg(not(feature = "download"))]
    let weights = args.weights.clone();
    require(&weights, "the ImageNet MobileNetV2 weights", WEIGHTS_HELP);

    // 1. Data: one folder per class, split 80/20 with a seed (262 / 65 images).
    let mut sets = or_exit(
        TrainVal::open(&args.data, FolderOptions::default(), 0.2, common.seed),
        "loading the dataset",
    );
    if common.quick {
        sets.train = or_exit(sets.train.split(0.2, common.seed), "subset").1;
        sets.val = or_exit(sets.val.split(0.5, common.seed), "subset").1;
        or_exit(sets.check_trainable(), "--quick subset");
    }
    println!(
        "classes {:?}: {} training / {} validation images",
        sets.train.classes(),
        sets.train.len(),
        sets.val.len()
    );
    let classes = sets.train.classes().to_vec();
    let size = args.image_size;
    let mut loader = LoaderConfig::new(common.batch_size.unwrap_or(32) as usize);
    (loader.seed, loader.workers) = (common.seed, common.workers);
    let train = or_exit(
        DataLoader::new(&sets.train, presets::alpaca_train(size), loader),
        "training loader",
    );
    loader.shuffle = false;
    let val_transform = presets::alpaca_eval(size);
    let val = or_exit(
        DataLoader::new(&sets.val, val_transform.clone(), loader),
        "validation loader",
    );

    // 2. The ImageNet model, imported from ONNX.
    let (base, import) = or_exit(
        MobileNetV2::<B>::from_onnx(&weights, &device),
        "loading the weights",
    );
    println!("{}", base.summary([3, size as usize, size as usize]));

    // 3. What the untouched ImageNet model sees in a few training images.
    let imagenet: Vec<String> = transfer_vision::imagenet::imagenet_classes()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let first = or_exit(train.epoch(0).next().transpose(), "first batch");
    if let Some(batch) = first {
        // Inference runs on the model without autodiff (`valid()`): on the training backend,
        // BatchNorm would use (and update) batch statistics, like PyTorch's train mode.
        let images = batch.images_tensor::<B::InnerBackend>(&device);
        for (p, path) in predict(&base.valid(), images, &imagenet)
            .iter()
            .zip(&batch.paths)
            .take(4)
        {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            println!(
                "ImageNet top-1 for {name}: {} ({:.2})",
                p.name, p.probabilities[p.class]
            );
        }
    }

    // 4. Feature extraction: frozen backbone, new 2-class head.
    // Weights with BatchNorm folded carry no statistics to fine-tune: keep those BatchNorms frozen.
    let batch_norm = if import.batch_norm_folded {
        BatchNormPolicy::Frozen
    } else {
        BatchNormPolicy::Train
    };
    let epochs = |n: usize| if common.quick { 1 } else { n };
    // Seeded, so a rerun (or a restart after a kill, see --resume) draws the same new head.
    B::seed(&device, common.seed);
    let model = base.with_new_head(classes.len(), &device);
    let unfreeze = Trainable::FromBlock(args.unfreeze_from.clone());
    or_exit(unfreeze.prefixes(&model), "--unfreeze-from"); // before any training, not after
    let out_dir = common.out_dir("alpaca");
    let phase1 = common.checkpointed(
        FitConfig::new(
            epochs(args.epochs_head),
            OptimizerConfig::adam(1e-3),
            Trainable::HeadOnly,
        )
        .with_phase("feature_extraction")
        .with_seed(common.seed)
        .with_quiet(common.quiet),
        &out_dir,
    );
    let t = Instant::now();
    let head = or_exit(
        fit(model, &train, &val, &phase1, &device),
        "feature extraction",
    );
    let phase1_seconds = t.elapsed().as_secs_f64();

    // 5. Fine-tuning: unfreeze the last blocks, ten times lower learning rate.
    let phase2 = common.checkpointed(
        FitConfig::new(
            epochs(args.epochs_finetune),
            OptimizerConfig::adam(1e-4),
            unfreeze,
        )
        .with_phase("fine_tuning")
        .with_batch_norm(batch_norm)
        .with_first_epoch(head.history.epochs.len())
        .with_seed(common.seed)
        .with_quiet(common.quiet),
        &out_dir,
    );
    let t = Instant::now();
    let tuned = or_exit(
        fit(head.model, &train, &val, &phase2, &device),
        "fine-tuning",
    );
    let phase2_seconds = t.elapsed().as_secs_f64();
    let mut history = head.history.clone();
    history.extend(&tuned.history);

    // 6. Plots, metrics and the fine-tuned model.
    let evaluation = common::final_evaluation(&tuned.model, &val, &device);
    let out = RunOutputs::new(out_dir);
    let info = ModelInfo {
        class_names: classes.clone(),
        metadata: [
            ("preprocessing".to_string(), "p / 127.5 - 1".to_string()),
            ("image_size".to_string(), size.to_string()),
        ]
        .into(),
    };
    let metrics = Metrics {
        example: "alpaca",
        model: "mobilenet_v2".into(),
        backend: spec.backend_name().into(),
        device: spec.to_string(),
        precision: &common.precision,
        classes: &classes,
        train_images: sets.train.len(),
        val_images: sets.val.len(),
        history: &history,
        final_evaluation: &evaluation,
        seconds_per_phase: vec![
            ("feature_extraction".into(), phase1_seconds),
            ("fine_tuning".into(), phase2_seconds),
        ],
        total_seconds: started.elapsed().as_secs_f64(),
        quick: common.quick,
    };
    out.write::<B, _>(
        &tuned.model,
        &info,
        &sets.val,
        &val_transform,
        &metrics,
        &device,
    );

    // 7. The report.
    common::report(
        &evaluation,
        &classes,
        &history,
        started.elapsed().as_secs_f64(),
    );
}
