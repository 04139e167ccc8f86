//! Alpaca / not alpaca with MobileNetV2: the Coursera (Keras) transfer-learning exercise, in Rust.
//!
//! ```text
//! cargo run --release --example alpaca -- --data ../shared/datasets/alpaca \
//!     --weights ../shared/weights/mobilenet_v2_tf_imagenet.onnx
//! ```
//!
//! The exercise's recipe: 5 epochs of Adam at 1e-3 on a new head over the frozen network, then
//! 5 more at 1e-4 with the top blocks unfrozen (from Keras' layer 120, torchvision's
//! `features.14`); flips and rotations as augmentation.

mod common;

use std::error::Error;
use std::path::PathBuf;
use transfer_vision::kernels::AutodiffConvBackend;

use clap::Parser;
use common::{CommonArgs, Run};
use transfer_vision::prelude::*;

/// Fine-tune an ImageNet MobileNetV2 to tell alpacas from everything else.
#[derive(Parser, Debug)]
struct Args {
    /// Folder with `alpaca/` and `not alpaca/` sub-folders.
    #[arg(long, default_value = "data/alpaca")]
    data: PathBuf,
    /// ImageNet MobileNetV2 as ONNX [default: weights/mobilenet_v2_tf_imagenet.onnx, else the
    /// ONNX model zoo's MobileNetV2, downloaded (verified, cached)].
    #[arg(long)]
    weights: Option<PathBuf>,
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

fn run<B: AutodiffConvBackend>(
    args: &Args,
    device: B::Device,
    device_spec: &DeviceSpec,
) -> Result<(), Box<dyn Error>> {
    let common = &args.common;
    let run = Run::start("alpaca", common, device_spec);
    let how = "  copy the exercise's dataset (alpaca/ and 'not alpaca/' folders) there, or pass \
               --data ../shared/datasets/alpaca";
    common::require(&args.data, "the alpaca dataset", how);

    // 1. The data: one folder per class, split 80/20 with a seed (262 / 65 images).
    let sets = common.open_data(&args.data, 0.2)?;
    let classes = sets.train.classes().to_vec();

    // 2. MobileNetV2 pretrained on ImageNet; the file says how its images must be prepared
    // (TensorFlow's [-1, 1] scaling here), resized whole to the input size as Keras does.
    let default_weights = PathBuf::from("weights/mobilenet_v2_tf_imagenet.onnx");
    let weights = args.weights.as_ref().unwrap_or(&default_weights);
    let weights = common::find_weights(weights, "mobilenet_v2", args.weights.is_some());
    let (base, import) = MobileNetV2::<B>::from_onnx(&weights, &device)?;
    let size = args.image_size;
    let pre = import
        .preprocessing
        .with_image_size(size)
        .with_exact_resize();
    let augment = presets::alpaca_train(size, pre.normalization);
    let (train, val) = common.loaders(&sets, augment, pre.eval_transform(), 32)?;

    // 3. A look at the network, and at what it sees in a few photos as it is.
    println!("{}", base.summary([3, size as usize, size as usize]));
    common::show_imagenet_guesses(&base, &train, 4, &device);

    // 4. A new 2-class head, then the exercise's two phases: the frozen base model's features
    // train the head; then the top blocks fine-tune with it at a ten times lower rate.
    B::seed(&device, common.seed); // the head is drawn from --seed: reruns and resumed runs agree
    let model = base.with_new_head(classes.len(), &device);
    let recipe = TransferRecipe::keras_exercise(&args.unfreeze_from)
        .with_epochs(args.epochs_head, args.epochs_finetune);
    let outcome = common
        .adjust(recipe, &run.out_dir())
        .run(model, &train, &val, &device)?;

    // 5. Plot both phases, show predictions, save the model with its preprocessing.
    run.finish(&sets, &val, ModelInfo::new(classes, pre), &outcome, &device)
}
