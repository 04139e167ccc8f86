//! `transfer-vision export`: a fine-tuned model as a standard ONNX file.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::{Distribution, Tensor};
use clap::Args;
use transfer_vision::backend::DeviceSpec;
use transfer_vision::kernels::ConvBackend;
use transfer_vision::models::{AnyModel, Architecture, ImageClassifier};
use transfer_vision::weights::{export_onnx, load_model};

use crate::backend::{DeviceArgs, with_backend};
use crate::error::{CliError, existing_file};

/// `transfer-vision export`.
#[derive(Debug, Args)]
#[command(after_help = "\
The file has BatchNorm folded into the convolutions, opset 13, a dynamic batch dimension, and
the class names (`class_names`, JSON) and preprocessing (`preprocessing`) in its metadata. It is
read back after writing and its logits compared with the model's on random images.")]
pub struct ExportArgs {
    /// The fine-tuned model (`model.tvm` written by `train`).
    #[arg(long)]
    model: PathBuf,
    /// The ONNX file to write.
    #[arg(long)]
    onnx: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Runs `export`.
pub fn run(args: &ExportArgs) -> Result<ExitCode, CliError> {
    with_backend!(args.device, export(args))
}

fn export<B: ConvBackend>(
    args: &ExportArgs,
    device: B::Device,
    _spec: &DeviceSpec,
) -> Result<ExitCode, CliError> {
    existing_file("--model", &args.model)?;
    let (model, info) = load_model::<B, AnyModel<B>>(&args.model, &device)?;
    let report = export_onnx(&model, &info, &args.onnx)?;
    println!(
        "wrote {}: {} for {} classes, input [batch, {}, {}, {}], opset {}, {} nodes, {} \
         parameters, {} bytes",
        report.path.display(),
        report.model,
        report.num_classes,
        report.input_shape[0],
        report.input_shape[1],
        report.input_shape[2],
        report.opset,
        report.nodes,
        report.parameters,
        report.bytes
    );

    // Read back by this crate's own import: the logits must be the model's.
    let (reread, _) = AnyModel::<B>::from_onnx(&args.onnx, &device)?;
    let size = info.preprocessing.image_size as usize;
    B::seed(&device, 0);
    let x = Tensor::<B, 4>::random([2, 3, size, size], Distribution::Normal(0.0, 1.0), &device);
    let want = model.fuse_for_inference().forward(x.clone()).into_data();
    let got = reread.forward(x).into_data();
    let (want, got) = (
        want.to_vec::<f32>().unwrap_or_default(),
        got.to_vec::<f32>().unwrap_or_default(),
    );
    let scale = want
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let diff = want
        .iter()
        .zip(&got)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    if want.len() != got.len() || want.is_empty() || diff > 1e-4 * scale {
        return Err(CliError::Check(format!(
            "{}: read back, its logits differ from the model's by {diff:.3e} (max |logit| \
             {scale:.3e})",
            args.onnx.display()
        )));
    }
    println!(
        "read back: logits equal the model's within {:.2e} of max |logit| on 2 random images",
        diff / scale
    );
    Ok(ExitCode::SUCCESS)
}
