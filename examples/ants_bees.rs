//! Ants / bees with ResNet18: the PyTorch transfer-learning tutorial, in Rust.
//!
//! `cargo run --release --example ants_bees -- --data ../shared/datasets/hymenoptera_data \
//!     --weights weights/resnet18.onnx` (or `--model mobilenet_v2 --weights …` with MobileNetV2).

mod common;

use std::path::PathBuf;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use clap::{Parser, ValueEnum};
use common::{CommonArgs, Metrics, RunOutputs, WEIGHTS_HELP, or_exit, require};
use transfer_vision::backend::DeviceSpec;
use transfer_vision::data::{
    DataLoader, FolderOptions, LoaderConfig, Normalization, TrainVal, presets,
};
use transfer_vision::models::{Architecture, ImageClassifier, MobileNetV2, ResNet};
use transfer_vision::train::{BatchNormPolicy, FitConfig, OptimizerConfig, Trainable, fit};
use transfer_vision::weights::{ConvPairs, ModelInfo, load_onnx_model};

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Model {
    Resnet18,
    #[value(name = "mobilenet_v2", alias = "mobilenet-v2")]
    MobilenetV2,
}

/// Fine-tune an ImageNet CNN to tell ants from bees.
#[derive(Parser, Debug)]
struct Args {
    /// Folder with `train/` and `val/`, each with `ants/` and `bees/`.
    #[arg(long, default_value = "data/hymenoptera_data")]
    data: PathBuf,
    /// ImageNet weights as ONNX (default: weights/<model>.onnx).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Architecture.
    #[arg(long, value_enum, default_value = "resnet18")]
    model: Model,
    /// Epochs with the backbone frozen (feature extraction).
    #[arg(long, default_value_t = 8)]
    epochs_head: usize,
    /// Epochs fine-tuning the last blocks.
    #[arg(long, default_value_t = 2)]
    epochs_finetune: usize,
    /// Learning rate of the head phase (Adam).
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Learning rate of the fine-tuning phase (Adam).
    #[arg(long, default_value_t = 1e-5)]
    lr_finetune: f64,
    /// Input size.
    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(32..))]
    image_size: u32,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() {
    let args = Args::parse();
    common::on_backend!(args.common, dispatch(&args));
}

fn dispatch<B: AutodiffBackend>(args: &Args, device: B::Device, spec: &DeviceSpec) {
    match args.model {
        Model::Resnet18 => run::<B, ResNet<B>>(args, device, spec, "resnet18", "layer4"),
        Model::MobilenetV2 => {
            run::<B, MobileNetV2<B>>(args, device, spec, "mobilenet_v2", "features.14")
        }
    }
}

fn run<B, M>(args: &Args, device: B::Device, spec: &DeviceSpec, name: &str, last_blocks: &str)
where
    B: AutodiffBackend,
    M: Architecture<B> + ConvPairs<B> + AutodiffModule<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
{
    let started = Instant::now();
    let common = &args.common;
    let weights = args
        .weights
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("weights/{name}.onnx")));
    // With the `download` feature, missing inputs are fetched (verified, cached); without it,
    // the message says where they were looked for and how to get them.
    #[cfg(feature = "download")]
    let (data, weights) = common::fetch_missing(&args.data, weights, name);
    #[cfg(not(feature = "download"))]
    let data = args.data.clone();
    require(
        &data,
        "the hymenoptera dataset",
        "  download https://download.pytorch.org/tutorial/hymenoptera_data.zip and unzip it into data/\n  (or build with --features download to fetch it), or pass --data ../shared/datasets/hymenoptera_data",
    );
    require(&weights, &format!("ImageNet {name} weights"), WEIGHTS_HELP);

    // 1. Data: train/ and val/ folders (244 / 153 images; a plain root/<class> folder is split
    // 80/20), the tutorial's transforms, normalised as the weights expect.
    let mut sets = or_exit(
        TrainVal::open(&data, FolderOptions::default(), 0.2, common.seed),
        "loading the dataset",
    );
    if common.quick {
        sets.train = or_exit(sets.train.split(0.2, common.seed), "subset").1;
        sets.val = or_exit(sets.val.split(0.2, common.seed), "subset").1;
        or_exit(sets.check_trainable(), "--quick subset");
    }
    let (model, import) = or_exit(
        load_onnx_model::<B, M>(&weights, &device),
        "loading the weights",
    );
    let norm = if import.tf_preprocessing() {
        Normalization::Tf
    } else {
        Normalization::ImageNet
    };
    println!(
        "classes {:?}: {} training / {} validation images ({norm:?} normalisation)",
        sets.train.classes(),
        sets.train.len(),
        sets.val.len()
    );
    let classes = sets.train.classes().to_vec();
    let size = args.image_size;
    let mut loader = LoaderConfig::new(common.batch_size.unwrap_or(16) as usize);
    (loader.seed, loader.workers) = (common.seed, common.workers);
    let train = or_exit(
        DataLoader::new(&sets.train, presets::imagenet_train(size, norm), loader),
        "training loader",
    );
    loader.shuffle = false;
    let val_transform = presets::imagenet_eval(size, norm);
    let val = or_exit(
        DataLoader::new(&sets.val, val_transform.clone(), loader),
        "validation loader",
    );

    // 2. The pretrained model with a new 2-class head.
    println!("{}", model.summary([3, size as usize, size as usize]));
    // Seeded, so a rerun (or a restart after a kill, see --resume) draws the same new head.
    B::seed(&device, common.seed);
    let model = model.with_new_head(classes.len(), &device);

    // 3. Feature extraction: only the head trains.
    let epochs = |n: usize| if common.quick { 1 } else { n };
    let out_dir = common.out_dir("ants_bees");
    let phase1 = common.checkpointed(
        FitConfig::new(
            epochs(args.epochs_head),
            OptimizerConfig::adam(args.lr),
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

    // 4. Fine-tuning the last blocks at a lower rate.
    let batch_norm = if import.batch_norm_folded {
        BatchNormPolicy::Frozen
    } else {
        BatchNormPolicy::Train
    };
    let phase2 = common.checkpointed(
        FitConfig::new(
            epochs(args.epochs_finetune),
            OptimizerConfig::adam(args.lr_finetune),
            Trainable::FromBlock(last_blocks.into()),
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

    // 5. Plots, metrics, the model, and the report.
    let evaluation = common::final_evaluation(&tuned.model, &val, &device);
    let out = RunOutputs::new(out_dir);
    let info = ModelInfo {
        class_names: classes.clone(),
        metadata: [
            ("normalization".to_string(), format!("{norm:?}")),
            ("image_size".to_string(), size.to_string()),
        ]
        .into(),
    };
    let metrics = Metrics {
        example: "ants_bees",
        model: name.into(),
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
    common::report(
        &evaluation,
        &classes,
        &history,
        started.elapsed().as_secs_f64(),
    );
}
