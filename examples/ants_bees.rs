//! Ants / bees: the PyTorch transfer-learning tutorial, in Rust.
//!
//! ```text
//! cargo run --release --example ants_bees -- --model mobilenet_v2 \
//!     --data ../shared/datasets/hymenoptera_data --weights ../shared/weights/mobilenet_v2_tf_imagenet.onnx
//! ```
//!
//! The tutorial's recipe (SGD, learning rate 1e-3, momentum 0.9, ×0.1 every 7 epochs) in its two
//! scenarios, one after the other: the pretrained network as a fixed feature extractor (only a
//! new head trains), then fine-tuning of its last blocks with the head.

mod common;

use std::error::Error;
use std::path::PathBuf;
use transfer_vision::kernels::AutodiffConvBackend;

use clap::Parser;
use clap::builder::PossibleValuesParser;
use common::{CommonArgs, Run};
use transfer_vision::prelude::*;

/// Fine-tune an ImageNet CNN to tell ants from bees.
#[derive(Parser, Debug)]
struct Args {
    /// Folder with `train/` and `val/`, each with `ants/` and `bees/` (or one folder of class
    /// folders, split 80/20) [default: data/hymenoptera_data, downloaded there if missing].
    #[arg(long)]
    data: Option<PathBuf>,
    /// ImageNet weights as ONNX [default: weights/<model>.onnx; for mobilenet_v2 and resnet18,
    /// the ONNX model zoo's file is downloaded (verified, cached) when it is missing].
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Architecture the weights hold.
    #[arg(long, default_value = "resnet18", value_parser = PossibleValuesParser::new(ModelSpec::names()))]
    model: String,
    /// Epochs with the backbone frozen (feature extraction).
    #[arg(long, default_value_t = 10)]
    epochs_head: usize,
    /// Epochs fine-tuning the last blocks.
    #[arg(long, default_value_t = 5)]
    epochs_finetune: usize,
    /// First block that fine-tuning unfreezes (default: the architecture's last stage,
    /// `layer4` or `features.14`).
    #[arg(long)]
    unfreeze_from: Option<String>,
    /// Input size.
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
    let run = Run::start("ants_bees", common, device_spec);

    // 1. The data: train/ and val/ folders of ants and bees (244 / 153 images).
    let data = args.data.clone();
    let default_data = PathBuf::from("data/hymenoptera_data");
    let data = common::find_hymenoptera(data.as_ref().unwrap_or(&default_data), data.is_some());
    let sets = common.open_data(&data, 0.2)?;
    let classes = sets.train.classes().to_vec();

    // 2. The network pretrained on ImageNet; the file says how its images must be prepared.
    let default_weights = PathBuf::from(format!("weights/{}.onnx", args.model));
    let weights = common::find_weights(
        args.weights.as_ref().unwrap_or(&default_weights),
        &args.model,
        args.weights.is_some(),
    );
    let (model, import) = AnyModel::<B>::from_onnx(&weights, &device)?;
    import.spec.expect(&args.model, &weights)?;
    let pre = import.preprocessing.with_image_size(args.image_size);
    let (train, val) = common.loaders(&sets, pre.train_transform(), pre.eval_transform(), 16)?;

    // 3. A look at the network, and at what it sees in a few ants and bees as it is.
    let size = args.image_size as usize;
    println!("{}", model.summary([3, size, size]));
    common::show_imagenet_guesses(&model, &val, 4, &device);

    // 4. The tutorial's two scenarios, one after the other, on a new 2-class head: the ConvNet
    // as a fixed feature extractor (only the head trains), then fine-tuning its last blocks.
    B::seed(&device, common.seed); // the head is drawn from --seed: reruns and resumed runs agree
    let with_head = model.with_new_head(classes.len(), &device);
    let unfreeze = args
        .unfreeze_from
        .as_deref()
        .unwrap_or(import.spec.fine_tune_from());
    let recipe = TransferRecipe::pytorch_tutorial(args.epochs_head, args.epochs_finetune, unfreeze);
    let outcome = common
        .adjust(recipe, &run.out_dir())
        .run(with_head, &train, &val, &device)?;

    // 5. Plot both phases, show predictions, save the model with its preprocessing.
    run.finish(&sets, &val, ModelInfo::new(classes, pre), &outcome, &device)
}
