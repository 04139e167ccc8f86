//! Top-1 / top-5 accuracy of an ImageNet model read from ONNX on a labelled image set.
//!
//! ```text
//! cargo run --release --example imagenet_eval -- \
//!     --weights ../shared/weights/mobilenet_v2_tf_imagenet.onnx \
//!     --data ../shared/datasets/imagenet_samples [--size 224|160] [--batch 32] [--check]
//! ```
//!
//! `--data` holds `labels.tsv` (a header line, then `filename<TAB>class_index[<TAB>…]` with
//! file names relative to that folder, class indices in torchvision's order). Preprocessing
//! follows `../shared/weights/README.md`: shorter side `round(size * 256 / 224)` (256 for 224,
//! 183 for 160) with Pillow's antialiased bilinear filter, kept 8-bit, centre crop `size`, then
//! the file's scaling (`[-1, 1]` for the TF MobileNetV2; `--preprocess` overrides it).
//!
//! Prints top-1, top-5 and images per second (decoding, preprocessing and the forward pass, on
//! the chosen device). With `--check`, exits with 1 when top-1 or top-5 is more than one point
//! away from the onnxruntime figures of the weights README (known for
//! `mobilenet_v2_tf_imagenet.onnx` at 224 and 160).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use transfer_vision::kernels::ConvBackend;

use clap::{Parser, ValueEnum};
use rayon::prelude::*;
use transfer_vision::backend::DeviceSpec;
use transfer_vision::data::ChwImage;
use transfer_vision::predict::{PredictError, PredictOptions, Predictor, Preprocess};

/// onnxruntime's figures on `imagenet_samples` (`../shared/weights/README.md`):
/// (weights file name, size, top-1, top-5).
const REFERENCE: [(&str, u32, f64, f64); 2] = [
    ("mobilenet_v2_tf_imagenet.onnx", 224, 0.875, 0.978),
    ("mobilenet_v2_tf_imagenet.onnx", 160, 0.769, 0.944),
];

/// How far from the reference `--check` accepts (one point).
const TOLERANCE: f64 = 0.01;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PreprocessArg {
    Auto,
    Imagenet,
    Tf,
}

/// ImageNet top-1 / top-5 of an ONNX model (any architecture of the crate) on a labelled image
/// folder.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The ONNX model file.
    #[arg(long)]
    weights: PathBuf,
    /// Folder with `labels.tsv` and the images it lists.
    #[arg(long)]
    data: PathBuf,
    /// Crop size; images are first resized to a shorter side of round(size * 256 / 224).
    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(32..))]
    size: u32,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Pixel scaling (`auto`: what the file asks for).
    #[arg(long, value_enum, default_value = "auto")]
    preprocess: PreprocessArg,
    /// Evaluate only the first N images of labels.tsv.
    #[arg(long)]
    limit: Option<usize>,
    /// `cpu`, `cuda`, `cuda:N`, `wgpu` or `wgpu:N` (the CUDA / wgpu builds: `--features cuda` / `wgpu`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Exit with 1 unless top-1 and top-5 are within one point of the README's figures.
    #[arg(long)]
    check: bool,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

/// One labelled image.
struct Item {
    path: PathBuf,
    label: usize,
}

fn read_labels(data: &Path, limit: Option<usize>) -> Result<Vec<Item>, String> {
    let tsv = data.join("labels.tsv");
    let text = std::fs::read_to_string(&tsv).map_err(|e| format!("{}: {e}", tsv.display()))?;
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let mut cols = line.split('\t');
        let (Some(file), Some(label)) = (cols.next(), cols.next()) else {
            return Err(format!(
                "{}:{}: expected 'filename<TAB>class_index'",
                tsv.display(),
                n + 1
            ));
        };
        let label = label.trim().parse::<usize>().map_err(|_| {
            format!(
                "{}:{}: class index '{label}' is not a number",
                tsv.display(),
                n + 1
            )
        })?;
        items.push(Item {
            path: data.join(file),
            label,
        });
    }
    if let Some(limit) = limit {
        items.truncate(limit);
    }
    if items.is_empty() {
        return Err(format!("{}: no images listed", tsv.display()));
    }
    Ok(items)
}

/// Counts of one evaluation.
#[derive(Default)]
struct Tally {
    seen: usize,
    top1: usize,
    top5: usize,
    failed: usize,
    forward: Duration,
}

impl Tally {
    fn rates(&self) -> (f64, f64) {
        let n = self.seen.max(1) as f64;
        (self.top1 as f64 / n, self.top5 as f64 / n)
    }
}

fn run<B: ConvBackend>(args: &Args, device: &B::Device) -> Result<bool, String> {
    let items = read_labels(&args.data, args.limit)?;
    let mut options = PredictOptions::eval(args.size);
    options.batch_size = args.batch as usize;
    options.preprocess = match args.preprocess {
        PreprocessArg::Auto => Preprocess::Auto,
        PreprocessArg::Imagenet => Preprocess::ImageNet,
        PreprocessArg::Tf => Preprocess::Tf,
    };
    let predictor =
        Predictor::<B>::from_onnx(&args.weights, &options, device).map_err(|e| e.to_string())?;
    let classes = predictor.class_names().len();
    if let Some(bad) = items.iter().find(|it| it.label >= classes) {
        return Err(format!(
            "{}: label {} but the model has {classes} classes",
            bad.path.display(),
            bad.label
        ));
    }
    println!(
        "{}: {} ({classes} classes), {} images from {}, resize {} / crop {}, {:?} scaling, batch {}",
        args.weights.display(),
        predictor.spec().name(),
        items.len(),
        args.data.display(),
        options.resize.unwrap_or(0),
        args.size,
        predictor.normalization(),
        args.batch,
    );

    let start = Instant::now();
    let mut tally = Tally::default();
    let batch = args.batch as usize;
    std::thread::scope(|scope| {
        // Decode and preprocess the next batch (in parallel) while the model runs this one.
        let (tx, rx) = mpsc::sync_channel::<Vec<Result<ChwImage, PredictError>>>(1);
        let predictor_ref = &predictor;
        let items_ref = &items;
        scope.spawn(move || {
            for chunk in items_ref.chunks(batch) {
                let images: Vec<_> = chunk
                    .par_iter()
                    .map(|it| predictor_ref.preprocess(&it.path))
                    .collect();
                if tx.send(images).is_err() {
                    break;
                }
            }
        });
        let mut last_report = Instant::now();
        for (chunk, images) in items.chunks(batch).zip(rx) {
            let mut ok_images = Vec::with_capacity(images.len());
            let mut ok_items = Vec::with_capacity(images.len());
            for (item, result) in chunk.iter().zip(images) {
                match result {
                    Ok(img) => {
                        ok_images.push(img);
                        ok_items.push(item);
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        tally.failed += 1;
                    }
                }
            }
            tally.seen += chunk.len();
            let paths: Vec<PathBuf> = ok_items.iter().map(|it| it.path.clone()).collect();
            let t = Instant::now();
            let predictions = match predictor.predict_images(&ok_images, &paths) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    tally.failed += ok_items.len();
                    continue;
                }
            };
            tally.forward += t.elapsed();
            for (item, p) in ok_items.iter().zip(&predictions) {
                let top5 = p.top_k(5);
                tally.top1 += usize::from(top5.first().is_some_and(|&(c, _)| c == item.label));
                tally.top5 += usize::from(top5.iter().any(|&(c, _)| c == item.label));
            }
            if !args.quiet && (last_report.elapsed().as_secs() >= 10 || tally.seen == items.len()) {
                last_report = Instant::now();
                let (t1, t5) = tally.rates();
                eprintln!(
                    "  {:>5}/{}  top-1 {t1:.4}  top-5 {t5:.4}  {:.1} images/s",
                    tally.seen,
                    items.len(),
                    tally.seen as f64 / start.elapsed().as_secs_f64()
                );
            }
        }
    });
    let wall = start.elapsed().as_secs_f64();
    let (top1, top5) = tally.rates();
    println!(
        "top-1 {top1:.4}  top-5 {top5:.4}  ({} of {} correct top-1, {} top-5{})",
        tally.top1,
        tally.seen,
        tally.top5,
        if tally.failed > 0 {
            format!(", {} images failed and count as wrong", tally.failed)
        } else {
            String::new()
        }
    );
    println!(
        "{:.1} images/s ({:.1} s in all; forward passes {:.1} s = {:.1} images/s) on {}",
        tally.seen as f64 / wall,
        wall,
        tally.forward.as_secs_f64(),
        (tally.seen - tally.failed) as f64 / tally.forward.as_secs_f64().max(1e-9),
        args.device,
    );
    let file_name = args
        .weights
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let reference = REFERENCE
        .iter()
        .find(|(f, s, ..)| *f == file_name && *s == args.size);
    let full_set = args.limit.is_none_or(|l| l >= 1000) && tally.seen == 1000;
    match reference {
        Some(&(_, _, r1, r5)) => {
            let within =
                (top1 - r1).abs() <= TOLERANCE + 1e-9 && (top5 - r5).abs() <= TOLERANCE + 1e-9;
            println!(
                "reference (onnxruntime, weights README): top-1 {r1:.3}  top-5 {r5:.3}; difference {:+.4} / {:+.4}: {}",
                top1 - r1,
                top5 - r5,
                if !full_set {
                    "(subset, not comparable)"
                } else if within {
                    "within one point"
                } else {
                    "MORE THAN ONE POINT AWAY"
                }
            );
            if args.check {
                if !full_set {
                    return Err("--check needs the full set of 1000 images".into());
                }
                return Ok(within && tally.failed == 0);
            }
        }
        None if args.check => {
            return Err(format!(
                "--check: no reference figures for {file_name} at size {}",
                args.size
            ));
        }
        None => {}
    }
    Ok(tally.failed == 0)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let spec = match DeviceSpec::parse_compiled(&args.device) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --device: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match &spec {
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(_) => match spec.cuda_device() {
            Some(device) => run::<transfer_vision::backend::Cuda>(&args, &device),
            None => Err(format!("--device {spec}: not a CUDA device")),
        },
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu(_) => match spec.wgpu_device() {
            Ok(device) => run::<transfer_vision::backend::Wgpu>(&args, &device),
            Err(e) => Err(format!("--device: {e}")),
        },
        #[cfg(any(feature = "flex", feature = "ndarray"))]
        DeviceSpec::Cpu => run::<transfer_vision::backend::Cpu>(&args, &Default::default()),
        #[allow(unreachable_patterns)]
        _ => Err(format!("--device {spec}: backend not compiled in")),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
