//! `transfer-vision`: fine-tune an ImageNet CNN on a folder of photos, evaluate it, classify
//! images with it and export it to ONNX, without writing code.
//!
//! ```text
//! transfer-vision train   --data photos/ --weights mobilenet_v2.onnx     # -> runs/photos-mobilenet_v2/
//! transfer-vision eval    --model runs/photos-mobilenet_v2/model.tvm --data photos/
//! transfer-vision predict --model runs/photos-mobilenet_v2/model.tvm new.jpg other.jpg
//! transfer-vision export  --model runs/photos-mobilenet_v2/model.tvm --onnx photos.onnx
//! transfer-vision devices  # what --device can name: cpu, cuda:N, wgpu:N
//! ```
//!
//! Exit status: 0 on success, 2 for a bad command line (a flag, a value, an output folder that
//! holds another finished run), 1 for bad data (a folder, an image, a model file), each with a
//! one-line `error: ...` naming the thing.

mod backend;
mod devices;
mod error;
mod eval;
mod explain;
mod export;
mod predict;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Fine-tune ImageNet CNNs (MobileNetV2, ResNet18/34) on your own photos, in pure Rust.
#[derive(Debug, Parser)]
#[command(name = "transfer-vision", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fine-tune a pretrained network on a folder of class folders: feature extraction, then
    /// fine-tuning of the last blocks; writes a run folder (model, metrics, pictures).
    Train(train::TrainArgs),
    /// Accuracy, per-class precision / recall / F1 and the confusion matrix of a model on a
    /// folder of class folders, as text or JSON, with the pictures that explain its errors.
    Eval(eval::EvalArgs),
    /// The top-k classes of images, with a fine-tuned model (`model.tvm`) or an ONNX file.
    Predict(predict::PredictArgs),
    /// Writes a fine-tuned model as a standard ONNX file (BatchNorm folded, dynamic batch,
    /// class names and preprocessing in its metadata) and checks it by reading it back.
    Export(export::ExportArgs),
    /// The devices `--device` can name in this build: the CPU, CUDA, and each GPU adapter wgpu
    /// finds (`wgpu:N`).
    Devices(devices::DevicesArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse(); // a bad command line exits here with clap's message and status 2
    // One command per process: keeping the memory it frees for reuse costs nothing after it
    // exits and spares each step or batch faulting in fresh pages (BENCHMARKS.md).
    transfer_vision::backend::reuse_freed_memory();
    let result = match &cli.command {
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Export(args) => export::run(args),
        Command::Devices(args) => devices::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
