//! `transfer-vision eval`: how a model does on a folder of class folders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use transfer_vision::backend::DeviceSpec;
use transfer_vision::data::{DataLoader, FolderOptions, ImageFolder, LoaderConfig};
use transfer_vision::kernels::ConvBackend;
use transfer_vision::predict::Predictor;
use transfer_vision::train::evaluate;

use crate::backend::{DeviceArgs, with_backend};
use crate::error::{CliError, existing_file, existing_folder};
use crate::explain;

/// Which images of `--data` to evaluate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    /// `val/` when the folder has `train/` and `val/`; for a folder of class folders, the
    /// validation part of the split the model was trained with (its seed and fraction are in
    /// model.tvm); every image when the model file does not say.
    Auto,
    /// The validation images as `auto` finds them, an error when there are none.
    Val,
    /// Every image of the class folders.
    All,
}

/// `transfer-vision eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The model: a `model.tvm` written by `train`, or an ONNX file.
    #[arg(long)]
    model: PathBuf,
    /// Folder of class folders (the model's classes), or with `train/` and `val/`.
    #[arg(long)]
    data: PathBuf,
    /// Which images.
    #[arg(long, value_enum, default_value = "auto")]
    split: SplitArg,
    /// Validation fraction of a folder of class folders [default: the model's].
    #[arg(long)]
    val_fraction: Option<f64>,
    /// Seed of that split [default: the model's].
    #[arg(long)]
    seed: Option<u64>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Folder for eval.json and the pictures [default: eval/ beside the model file].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write no pictures.
    #[arg(long)]
    no_pictures: bool,
    /// Images per batch.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// Threads decoding images.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    workers: u32,
    /// Leave out images that cannot be decoded (one warning each) instead of stopping.
    #[arg(long)]
    skip_bad_images: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Runs `eval`.
pub fn run(args: &EvalArgs) -> Result<ExitCode, CliError> {
    with_backend!(args.device, eval(args))
}

fn eval<B: ConvBackend>(
    args: &EvalArgs,
    device: B::Device,
    _spec: &DeviceSpec,
) -> Result<ExitCode, CliError> {
    existing_file("--model", &args.model)?;
    existing_folder("--data", &args.data)?;
    let predictor = Predictor::<B>::from_file(&args.model, &device)?;
    let mut set = select_images(args, predictor.metadata())?;
    check_classes(&set, predictor.class_names())?;
    set.verify(args.workers as usize)?;
    for warning in set.warnings() {
        eprintln!("warning: {warning}");
    }

    let config = LoaderConfig::new(args.batch_size as usize)
        .with_shuffle(false)
        .with_workers(args.workers as usize);
    let loader = DataLoader::new(&set, predictor.pipeline().clone(), config)?;
    let report = evaluate(predictor.network(), &loader, &device)?;
    let classes = predictor.class_names();
    let metrics = report.class_metrics();

    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.model.parent().unwrap_or(Path::new(".")).join("eval"));
    let json = serde_json::json!({
        "model": args.model.display().to_string(),
        "data": set.root().display().to_string(),
        "images": report.count,
        "accuracy": report.accuracy,
        "loss": report.loss,
        "classes": classes,
        "per_class": metrics,
        "confusion": report.confusion,
    });
    std::fs::create_dir_all(&out).map_err(|e| CliError::io(&out, e))?;
    let json_path = out.join("eval.json");
    let text = serde_json::to_string_pretty(&json)
        .map_err(|e| CliError::Check(format!("{}: cannot encode: {e}", json_path.display())))?;
    std::fs::write(&json_path, &text).map_err(|e| CliError::io(&json_path, e))?;
    if !args.no_pictures {
        explain::write_pictures(
            predictor.network(),
            &predictor_info(&predictor),
            &report,
            &loader,
            &out,
            &device,
        )?;
    }

    if args.json {
        println!("{text}");
    } else {
        println!(
            "{} on {} ({} images): accuracy {:.4}, loss {:.4}\n",
            args.model.display(),
            set.root().display(),
            report.count,
            report.accuracy,
            report.loss
        );
        println!("{}", report.table(classes));
        println!(
            "wrote {} and the pictures in {}",
            json_path.display(),
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The class names and preprocessing `predictor` uses, as a [`ModelInfo`](transfer_vision::weights::ModelInfo).
fn predictor_info<B: ConvBackend>(predictor: &Predictor<B>) -> transfer_vision::weights::ModelInfo {
    transfer_vision::weights::ModelInfo::new(
        predictor.class_names().to_vec(),
        *predictor.preprocessing(),
    )
}

/// The images `--split` asks for.
fn select_images(
    args: &EvalArgs,
    metadata: &BTreeMap<String, String>,
) -> Result<ImageFolder, CliError> {
    let options = FolderOptions::default().lenient(args.skip_bad_images);
    let root = &args.data;
    let presplit = root.join("train").is_dir() && root.join("val").is_dir();
    let trained_split = metadata.get("split").map(String::as_str) == Some("random");
    let fraction = args
        .val_fraction
        .or_else(|| metadata.get("val_fraction").and_then(|v| v.parse().ok()));
    let seed = args
        .seed
        .or_else(|| metadata.get("seed").and_then(|v| v.parse().ok()));
    let quick = metadata.get("quick").map(String::as_str) == Some("true");
    match args.split {
        SplitArg::All if presplit => Err(CliError::Usage(format!(
            "--split all: {} has train/ and val/; pass one of them as --data",
            root.display()
        ))),
        SplitArg::All => Ok(ImageFolder::with_options(root, options)?),
        _ if presplit => {
            let val = ImageFolder::with_options(root.join("val"), options)?;
            // A `--quick` training run validated on a fifth of val/, drawn with its seed.
            Ok(if quick {
                val.split(0.2, seed.unwrap_or(42))?.1
            } else {
                val
            })
        }
        _ if trained_split || args.val_fraction.is_some() => {
            let (Some(fraction), Some(seed)) = (fraction, seed) else {
                return Err(CliError::Usage(
                    "a random split needs --val-fraction and --seed (the model file does not \
                     say which it was trained with)"
                        .into(),
                ));
            };
            let all = ImageFolder::with_options(root, options)?;
            let val = all.split(fraction, seed)?.1;
            Ok(if quick { val.split(0.2, seed)?.1 } else { val })
        }
        SplitArg::Val => Err(CliError::Usage(format!(
            "--split val: {} has no val/ folder and the model file records no split; pass \
             --val-fraction and --seed, or --split all",
            root.display()
        ))),
        SplitArg::Auto => Ok(ImageFolder::with_options(root, options)?),
    }
}

/// The folder's classes must be the model's, in the same order.
fn check_classes(set: &ImageFolder, model_classes: &[String]) -> Result<(), CliError> {
    if set.classes() == model_classes {
        return Ok(());
    }
    Err(CliError::Check(format!(
        "{}: class folders {:?} are not the model's classes {:?}",
        set.root().display(),
        set.classes(),
        model_classes
    )))
}
