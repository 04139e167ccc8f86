//! `transfer-vision predict`: the top-k classes of images.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use transfer_vision::backend::DeviceSpec;
use transfer_vision::kernels::ConvBackend;
use transfer_vision::predict::{PredictOptions, Predictor};

use crate::backend::{DeviceArgs, with_backend};
use crate::error::{CliError, existing_file};

/// `transfer-vision predict`.
#[derive(Debug, Args)]
#[command(after_help = "\
Images are prepared as the model file says (the fine-tuned model's stored preprocessing; an
ImageNet ONNX file's metadata or its exporter's conventions). An image that cannot be read is
reported on stderr, naming it, and the others go on; the exit status is then 1.")]
pub struct PredictArgs {
    /// The model: a `model.tvm` written by `train`, or an ONNX file.
    #[arg(long)]
    model: PathBuf,
    /// Classes to show per image.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    top: u16,
    /// One JSON object per image and line: `{"file", "indices", "names", "probabilities"}`.
    #[arg(long)]
    json: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    #[command(flatten)]
    device: DeviceArgs,
    /// The images.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// Runs `predict`.
pub fn run(args: &PredictArgs) -> Result<ExitCode, CliError> {
    with_backend!(args.device, predict(args))
}

fn predict<B: ConvBackend>(
    args: &PredictArgs,
    device: B::Device,
    _spec: &DeviceSpec,
) -> Result<ExitCode, CliError> {
    existing_file("--model", &args.model)?;
    let options = PredictOptions {
        batch_size: args.batch_size as usize,
        ..PredictOptions::from_model()
    };
    let predictor = Predictor::<B>::from_file_with(&args.model, &options, &device)?;
    if !args.json {
        eprintln!(
            "{}: {} ({} classes)",
            args.model.display(),
            predictor.spec().name(),
            predictor.class_names().len(),
        );
    }
    let mut failed = 0usize;
    let results = predictor.predict_files(&args.images, usize::from(args.top));
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(top) if args.json => println!("{}", top.to_json()),
            Ok(top) => {
                if i > 0 {
                    println!();
                }
                println!("{top}");
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} images could not be read", args.images.len());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
